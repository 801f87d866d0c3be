"""`talkinghead run` and the Dagster graph run the same stages through the same runner: on the
same input, into two different data folders, they write byte-identical shards."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from pathlib import Path

import dagster as dg
import pytest

from pipelines.config import DATA_DIR_ENV, INPUT_DIR_ENV, MODEL_DIR_ENV
from pipelines.schema.index import INDEX_FILE, ShardIndex

# Faces and Light-ASD only (see test_definitions.DEMO_WEIGHTS): what the graph does never depends
# on what else ../shared/models holds.
WEIGHTS = ("scrfd/scrfd_500m_kps.onnx", "light-asd/pretrain_AVA_CVPR.model")
CLIPS = ("bbaf2n.mpg", "brbk7n.mpg")


def _members(shards: Path) -> dict[str, dict[str, str]]:
    """Every shard's members in order: shard file name -> {member name: sha256 of its bytes}."""
    out = {}
    for tar in sorted(shards.glob("*.tar")):
        with tarfile.open(tar) as archive:
            out[tar.name] = {m.name: hashlib.sha256(archive.extractfile(m).read()).hexdigest()
                             for m in archive.getmembers()}
    return out


@pytest.mark.slow
def test_cli_run_and_dagster_graph_write_identical_shards(tmp_path, grid_dir, model_dir, monkeypatch):
    from assets.demo import run_demo
    from pipelines.cli import main

    models = tmp_path / "models"
    for relpath in WEIGHTS:
        if not (model_dir / relpath).is_file():
            pytest.skip(f"{model_dir / relpath} not found")
        (models / relpath).parent.mkdir(parents=True, exist_ok=True)
        (models / relpath).symlink_to(model_dir / relpath)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in CLIPS:
        shutil.copy2(grid_dir / name, inputs / name)
    monkeypatch.setenv(INPUT_DIR_ENV, str(inputs))
    monkeypatch.setenv(MODEL_DIR_ENV, str(models))

    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "cli"))
    assert main(["run", "--quiet"]) == 0

    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "dagster"))
    with dg.instance_for_test() as instance:
        summary = run_demo(None, instance, log=lambda *_: None)
    assert summary["dataset_run_ok"] and not summary["failed_runs"] and all(summary["checks"].values()), summary

    cli, graph = tmp_path / "cli" / "shards", tmp_path / "dagster" / "shards"
    cli_index, graph_index = ShardIndex.load(cli), ShardIndex.load(graph)
    # Both cut each GRID clip to its speaking frames: one sample per clip, same keys, same shard.
    assert len(cli_index.samples) == len(CLIPS)
    assert dict(graph_index.samples) == dict(cli_index.samples)
    cli_members = _members(cli)
    assert sum(len(m) for m in cli_members.values()) >= 3 * len(CLIPS)  # mp4, wav, json at least
    assert _members(graph) == cli_members
    # Not only the members: the tar files, the index (config hash included: paths are not in it),
    # the manifest and the stats are the same bytes.
    for name in [*cli_members, INDEX_FILE, "manifest.jsonl", "stats.json"]:
        assert (graph / name).read_bytes() == (cli / name).read_bytes(), name
    record = json.loads((cli / "manifest.jsonl").read_text().splitlines()[0])
    assert str(tmp_path) not in json.dumps(record)
