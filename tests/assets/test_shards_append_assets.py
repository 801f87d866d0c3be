"""dataset_shards as an append (assets/shards.py): each materialisation names the shards it added,
``shards_open`` streams only those, the ``verify_dataset`` job streams every shard and the
``compact_dataset`` job re-packs; on real GRID clips through the real face and quality stages."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import dagster as dg

from assets.definitions import defs
from assets.demo import QUIET, _materialize_in_process
from assets.partitions import SOURCE_PARTITIONS_NAME
from assets.resources import PipelineSettings
from assets.sources import register_sources
from pipelines.schema.index import ShardIndex
from tests.graph_runs import private_models


def _meta(metadata: dict) -> dict:
    return {k: getattr(v, "value", v) for k, v in metadata.items()}


def _dataset_run(config_path: str, instance: dg.DagsterInstance) -> tuple[dict, dict]:
    """Materialise dataset_shards: (its metadata, check name -> (passed, metadata))."""
    result = _materialize_in_process(config_path, instance, None)
    assert result.success
    (materialization,) = result.asset_materializations_for_node("dataset_shards")
    checks = {e.asset_check_key.name: (e.passed, _meta(e.metadata)) for e in result.get_asset_check_evaluations()}
    return _meta(materialization.metadata), checks


def _job(name: str, config_path: str, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(name).execute_in_process(
        instance=instance, raise_on_error=False,
        run_config={**QUIET, "resources": {"settings": {"config": {"config_path": config_path}}}})


def test_appends_check_their_own_shards_and_the_jobs_verify_and_compact(tmp_path, grid_clips, model_dir):
    models = private_models(tmp_path / "models", model_dir, ("scrfd/scrfd_500m_kps.onnx",))
    inputs = tmp_path / "in"
    inputs.mkdir()
    config_path = tmp_path / "config.yaml"
    config_path.write_text(json.dumps({
        "paths": {"input_dir": str(inputs), "data_dir": str(tmp_path / "data"), "model_dir": str(models)},
        "asd": {"enabled": False}, "speech": {"enabled": False}, "flame": {"enabled": False},
        "captions": {"enabled": False}, "shards": {"compact_below_bytes": 10**12}}))
    config = PipelineSettings(config_path=str(config_path)).load()
    shards_dir = config.paths.shards_dir
    with dg.instance_for_test() as instance:
        def arrive(clip: Path) -> str:
            shutil.copy(clip, inputs / clip.name)
            _, (new,) = register_sources(config, instance)
            instance.add_dynamic_partitions(SOURCE_PARTITIONS_NAME, [new])
            assert _materialize_in_process(str(config_path), instance, new).success
            return new

        arrive(grid_clips[0])
        metadata, checks = _dataset_run(str(config_path), instance)
        assert metadata["shards_added"] == ["shard-000000.tar"] and metadata["sources_retired"] == {}
        assert checks["shards_open"] == (True, {"samples": 1, "shards_verified": ["shard-000000.tar"],
                                                "problems": []})
        first = hashlib.sha256((shards_dir / "shard-000000.tar").read_bytes()).hexdigest()

        second = arrive(grid_clips[1])
        metadata, checks = _dataset_run(str(config_path), instance)
        assert metadata["shards_added"] == ["shard-000001.tar"]
        assert checks["shards_open"][0] and checks["shards_open"][1]["shards_verified"] == ["shard-000001.tar"]
        assert hashlib.sha256((shards_dir / "shard-000000.tar").read_bytes()).hexdigest() == first
        assert ShardIndex.load(shards_dir).entry("shard-000001.tar").sources == (second,)

        # Damage the first shard (same size): a materialisation that adds nothing does not read it,
        # the full verification does.
        path = shards_dir / "shard-000000.tar"
        original = path.read_bytes()
        damaged = bytearray(original)
        damaged[len(damaged) // 2] ^= 0xFF
        path.write_bytes(bytes(damaged))
        drawn = (shards_dir / "qc" / "overview.png").stat().st_mtime_ns
        metadata, checks = _dataset_run(str(config_path), instance)
        assert metadata["shards_added"] == [] and checks["shards_open"][0]
        assert (shards_dir / "qc" / "overview.png").stat().st_mtime_ns == drawn  # nothing changed: not redrawn
        verify = _job("verify_dataset", str(config_path), instance)
        assert not verify.success
        failure = next(e for e in verify.all_events if e.is_step_failure)
        assert "shard-000000.tar: sha256 differs from the index" in str(failure.event_specific_data.error)

        path.write_bytes(original)
        assert _job("verify_dataset", str(config_path), instance).success
        compact = _job("compact_dataset", str(config_path), instance)
        assert compact.success
        assert compact.output_for_node("compact_dataset_shards") == {
            "replaced": ["shard-000000.tar", "shard-000001.tar"], "added": ["shard-000002.tar"],
            "samples_kept": 2, "samples_dropped": 0}
        assert sorted(p.name for p in shards_dir.glob("*.tar")) == ["shard-000002.tar"]
        assert _job("verify_dataset", str(config_path), instance).success
