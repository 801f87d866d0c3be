"""The conversations asset (assets/conversations.py) between the stage assets and dataset_shards, and
`talkinghead run` doing the same pairing: on the composed per-participant GRID session (b 0.4 s late)
through the real face, quality, speech and FLAME stages (scripted SHeaP), ASD and captions off."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import dagster as dg
import pytest

from assets.conversations import conversations
from assets.demo import _materialize_in_process
from assets.partitions import SOURCE_PARTITIONS_NAME
from assets.resources import PipelineSettings, StageModels
from assets.sources import register_sources
from pipelines.cli import main
from pipelines.conversation.summary import load_summaries
from pipelines.fixtures.conversation import grid_conversation, write_session
from pipelines.fixtures.sheap import build_scripted_sheap
from pipelines.schema.conversation import CONVERSATION_MEMBERS, ROLE_NAMES
from pipelines.schema.index import ShardIndex
from pipelines.shards import iter_samples
from tests.graph_runs import private_models


def _meta(metadata: dict) -> dict:
    return {k: getattr(v, "value", v) for k, v in metadata.items()}


def _write_config(root: Path, inputs: Path, models: Path, data: str) -> Path:
    path = root / f"{data}.yaml"
    path.write_text(json.dumps({
        "paths": {"input_dir": str(inputs), "data_dir": str(root / data), "model_dir": str(models)},
        "asd": {"enabled": False}, "captions": {"enabled": False}, "speech": {"transcription_backend": "none"},
        "conversation": {"mode": "conversation"}}))
    return path


def _live_members(shards_dir: Path) -> dict[str, dict[str, str]]:
    index = ShardIndex.load(shards_dir)
    return {key: {m: hashlib.sha256(v).hexdigest() for m, v in members.items()}
            for path in index.paths() for key, members in iter_samples(path) if index.samples.get(key) == path.name}


@pytest.fixture(scope="module")
def session(tmp_path_factory, grid_dir: Path, model_dir: Path) -> tuple[Path, Path, Path]:
    pytest.importorskip("pyannote.audio")
    root = tmp_path_factory.mktemp("conversations-asset")
    models = private_models(root / "models", model_dir, ("scrfd/scrfd_500m_kps.onnx",))
    build_scripted_sheap(models / "sheap" / "sheap.pt")
    conversation = grid_conversation(grid_dir)
    inputs = root / "input"
    write_session(conversation, inputs, late_s={"b": 0.4})
    # A sidecar naming a video that is not there: refused and reported, the rest goes on.
    (inputs / "lost.session.json").write_text(json.dumps({
        "schema": "talkinghead.session/1", "session": "lost",
        "participants": [{"id": "x", "video": "missing_x.mp4"}, {"id": "y", "video": "missing_y.mp4"}]}))
    return root, inputs, models


def test_the_graph_pairs_sessions_before_the_shards_and_shows_seconds_per_role(session, capsys):
    root, inputs, models = session
    config_path = _write_config(root, inputs, models, "dagster")
    config = PipelineSettings(config_path=str(config_path)).load()
    with dg.instance_for_test() as instance:
        ids, new = register_sources(config, instance)
        instance.add_dynamic_partitions(SOURCE_PARTITIONS_NAME, new)
        for source_id in ids:
            assert _materialize_in_process(str(config_path), instance, source_id).success
        result = _materialize_in_process(str(config_path), instance, None)
        assert result.success
        (paired,) = result.asset_materializations_for_node("conversations")
        (packed,) = result.asset_materializations_for_node("dataset_shards")
    meta, shards_meta = _meta(paired.metadata), _meta(packed.metadata)
    (summary,) = load_summaries(config)
    assert (meta["mode"], meta["sessions"], meta["actor_samples"]) == ("conversation", 1, 2)
    assert meta["sessions_by_status"] == {"ran": 1} and meta["failed_sessions"] == {}
    assert list(meta["refused_sidecars"]) == ["lost.session.json"]
    assert "missing_x.mp4" in meta["refused_sidecars"]["lost.session.json"]
    for role in ROLE_NAMES.values():
        total = sum(a.info.role_seconds.model_dump()[role] for a in summary.actors)
        assert meta[f"seconds_{role}"] == pytest.approx(total, abs=1e-3)
    for actor in summary.actors:  # one table row per actor with its seconds
        seconds = actor.info.role_seconds
        assert f"| duo | {actor.info.actor} | {actor.info.partner} | {actor.key} | {seconds.speaking:.2f} | " \
               f"{seconds.listening:.2f} |" in meta["role_seconds"]
    assert meta["role_timelines"].count("data:image/png;base64,") == 1
    assert shards_meta["samples"] == 2 and "data:image/png;base64," in shards_meta["qc_roles"]
    assert (config.paths.shards_dir / "qc" / "roles.png").is_file()
    live = _live_members(config.paths.shards_dir)
    assert sorted(live) == sorted(a.key for a in summary.actors)
    assert all(set(CONVERSATION_MEMBERS) <= set(members) for members in live.values())

    # talkinghead run on the same inputs (another data folder): the same pairing, the same samples.
    cli_config = _write_config(root, inputs, models, "cli")
    code = main(["--config", str(cli_config), "run", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "session per_participant duo: ran" in out and "REFUSED sidecar lost.session.json" in err
    for actor in summary.actors:
        assert f"  {actor.key} {actor.info.actor} (partner {actor.info.partner}): speaking " \
               f"{actor.info.role_seconds.speaking:.2f} s" in out
    cli_live = _live_members(PipelineSettings(config_path=str(cli_config)).load().paths.shards_dir)
    assert cli_live == live


def test_speaking_only_mode_pairs_nothing(tmp_path, grid_clip, model_dir):
    config_path = tmp_path / "config.yaml"
    config_path.write_text(json.dumps({"paths": {"input_dir": str(tmp_path / "in"), "data_dir": str(tmp_path / "data"),
                                                 "model_dir": str(model_dir)}}))
    with dg.instance_for_test() as instance:
        output = conversations(dg.build_asset_context(instance=instance),
                               settings=PipelineSettings(config_path=str(config_path)), models=StageModels())
    assert output == {"mode": "speaking_only", "sessions": {}}
    assert not (tmp_path / "data" / "conversations").exists()
