"""The training job runs a dry run on the pipeline's current shards (from the settings resource)."""

from __future__ import annotations

import json

import dagster as dg
import yaml
from training_fixtures import flame_shards_fixture, tiny_config  # noqa: F401


def test_training_job_trains_on_the_current_shards(tmp_path, flame_shards):
    from assets.resources import PipelineSettings
    from assets.training import train_job

    pipeline_config = tmp_path / "pipeline.yaml"
    pipeline_config.write_text(json.dumps({"paths": {"data_dir": str(flame_shards.parent)}}))
    run_config = tmp_path / "vae.yaml"
    spec = tiny_config("vae", tmp_path / "run", tmp_path / "not-these-shards", steps=3, save_every=3)
    run_config.write_text(yaml.safe_dump(spec))
    defs = dg.Definitions(jobs=[train_job], resources={"settings": PipelineSettings(config_path=str(pipeline_config))})
    result = defs.get_job_def("train_job").execute_in_process(
        run_config={"ops": {"launch_training": {"config": {"config_path": str(run_config)}}}})
    assert result.success
    summary = result.output_for_node("launch_training")
    assert summary["shards"] == str(flame_shards) and summary["steps_run"] == 3
    assert (tmp_path / "run" / "checkpoints" / "step-000003").is_dir()
