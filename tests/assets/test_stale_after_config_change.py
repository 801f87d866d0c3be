"""Issue 13: change one stage's config section and the Dagster UI marks exactly that stage and
its dependants stale (checked through the GraphQL API the UI uses); re-materialising the
partition re-runs only those stages (the runner reports the others ``unchanged``) and the
staleness is gone.

The graph is materialised in this process with the stage assets built from the config in
force (``build_stage_assets``: their ``code_version`` is the stage's config fingerprint chained
with those of the stages it needs);
the GraphQL API is served from the code location (workspace.yaml) loaded in a code-server
subprocess, which reads $TALKINGHEAD_CONFIG when it loads, as a deployment would.
"""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest

from assets.definitions import build_resources
from assets.partitions import PER_SOURCE_GROUPS, SOURCE_PARTITIONS_NAME
from assets.shards import dataset_shards
from assets.sources import register_sources, source_probe
from assets.stages import ASSET_NAMES, build_stage_assets
from pipelines.config import CONFIG_ENV, load_config
from pipelines.registry import dependants
from tests.graph_runs import private_models

REPO = Path(__file__).resolve().parents[2]
# Faces and Light-ASD only: speech runs without its models (language unknown), FLAME and captions
# report "model not installed"; every stage still runs and writes its fingerprinted result.
WEIGHTS = ("scrfd/scrfd_500m_kps.onnx", "light-asd/pretrain_AVA_CVPR.model")
PER_SOURCE = ["source_probe", *ASSET_NAMES.values()]
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}

STALENESS = """
query Staleness($keys: [AssetKeyInput!], $partition: String) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    staleStatus(partition: $partition)
    staleCauses(partition: $partition) { key { path } category reason }
  }
}
"""


def _config(path: Path, paths: dict, **sections) -> Path:
    path.write_text(json.dumps({"paths": paths, **sections}))
    return path


def _materialise(config_path: Path, instance: dg.DagsterInstance, partition: str | None) -> dg.ExecuteInProcessResult:
    """The per-source groups of one partition (or the dataset) with the code versions of ``config_path``."""
    assets = [source_probe, *build_stage_assets(load_config(config_path)), dataset_shards]
    groups = PER_SOURCE_GROUPS if partition else ("dataset",)
    result = dg.materialize(assets, selection=dg.AssetSelection.groups(*groups), partition_key=partition,
                            instance=instance, resources=build_resources(str(config_path)), run_config=QUIET)
    assert result.success
    return result


@contextmanager
def _code_location(instance: dg.DagsterInstance):
    """The code location of workspace.yaml in a code server (it reads $TALKINGHEAD_CONFIG at load)."""
    from dagster_graphql.test.utils import define_out_of_process_workspace

    with define_out_of_process_workspace(str(REPO / "workspace.yaml"), None, instance) as process:
        yield process


def _staleness(process, partition: str) -> dict[str, tuple[str, set]]:
    """Each per-source asset's stale status and causes for ``partition``, and the dataset's, as a
    fresh UI request sees them (the request context caches what it has loaded)."""
    from dagster_graphql.test.utils import execute_dagster_graphql

    nodes = []
    for keys, key in ((PER_SOURCE, partition), (["dataset_shards"], None)):  # the dataset is not partitioned
        variables = {"keys": [{"path": [k]} for k in keys], "partition": key}
        context = process.create_request_context()
        nodes += execute_dagster_graphql(context, STALENESS, variables).data["assetNodes"]
    return {"/".join(n["assetKey"]["path"]): (n["staleStatus"],
                                              {(c["category"], "/".join(c["key"]["path"])) for c in n["staleCauses"]})
            for n in nodes}


def _runs(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    """What the runner did in each stage step (the ``run`` metadata of its materialisation)."""
    return {name: result.asset_materializations_for_node(name)[0].metadata["run"].value
            for name in ASSET_NAMES.values()}


@pytest.mark.slow
def test_changed_asd_threshold_marks_asd_and_its_dependants_stale(tmp_path, grid_clip, model_dir, monkeypatch):
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(grid_clip, inputs / grid_clip.name)
    paths = {"input_dir": str(inputs), "data_dir": str(tmp_path / "data"),
             "model_dir": str(private_models(tmp_path / "models", model_dir, WEIGHTS))}
    before = _config(tmp_path / "before.yaml", paths)
    after = _config(tmp_path / "after.yaml", paths, asd={"threshold": 0.45})
    changed = {ASSET_NAMES[name] for name in ("asd", *dependants("asd"))}
    assert changed == {"active_speakers", "speech_analysis", "flame_parameters", "expression_captions"}
    unchanged = set(PER_SOURCE) - changed
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # for the code server

    with dg.instance_for_test() as instance:
        config = load_config(before)
        (partition,), new = register_sources(config, instance)
        instance.add_dynamic_partitions(SOURCE_PARTITIONS_NAME, new)
        first = _materialise(before, instance, partition)
        assert set(_runs(first).values()) == {"ran"}
        _materialise(before, instance, None)

        # Deployed with the config it ran on: nothing is stale.
        monkeypatch.setenv(CONFIG_ENV, str(before))
        with _code_location(instance) as process:
            fresh = _staleness(process, partition)
        assert {k: fresh[k][0] for k in [*PER_SOURCE, "dataset_shards"]} == \
            dict.fromkeys([*PER_SOURCE, "dataset_shards"], "FRESH"), fresh

        # Redeployed with a new ASD threshold: ASD's code version changed, its dependants follow.
        monkeypatch.setenv(CONFIG_ENV, str(after))
        with _code_location(instance) as process:
            stale = _staleness(process, partition)
            assert {k: stale[k][0] for k in PER_SOURCE} == \
                {k: "STALE" if k in changed else "FRESH" for k in PER_SOURCE}, stale
            for name in changed:  # each has a new code version: its own config or one it depends on changed
                assert stale[name][1] == {("CODE", name)}, (name, stale[name])
            assert not stale["source_probe"][1] and not stale["face_clips"][1]
            # The dataset has no code version and its inputs' data versions have not changed yet:
            # Dagster marks it stale once the changed stages have re-run (below), not before.
            assert stale["dataset_shards"] == ("FRESH", set())

            # Re-materialise: the face stage is current (skipped), ASD and what follows re-run.
            second = _materialise(after, instance, partition)
            assert _runs(second) == {name: "unchanged" if name in unchanged else "ran"
                                     for name in ASSET_NAMES.values()}
            assert second.asset_materializations_for_node("face_clips")[0].metadata["fingerprint"] == \
                first.asset_materializations_for_node("face_clips")[0].metadata["fingerprint"]
            assert second.asset_materializations_for_node("active_speakers")[0].metadata["fingerprint"] != \
                first.asset_materializations_for_node("active_speakers")[0].metadata["fingerprint"]
            rerun = _staleness(process, partition)
            assert {k: rerun[k][0] for k in PER_SOURCE} == dict.fromkeys(PER_SOURCE, "FRESH"), rerun
            # The changed stages have new data versions: the shards are now out of date, because of
            # exactly those stages (face_clips kept its data version).
            assert rerun["dataset_shards"] == ("STALE", {("DATA", name) for name in changed}), rerun["dataset_shards"]
            _materialise(after, instance, None)
            assert _staleness(process, partition)["dataset_shards"] == ("FRESH", set())
