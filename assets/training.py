"""Dagster job that launches a training run (SFT or RL, from its config's ``kind``) on the current shards.

Register in assets/definitions.py: ``jobs=[..., train_job]`` (it uses the ``settings``
resource already there). In the Launchpad give ``ops.launch_training.config.config_path``
(a YAML like training/configs/flow.yaml); the shards default to the pipeline's shard folder.
"""

# No `from __future__ import annotations`: Dagster resolves the op config type from live annotations.
import dagster as dg
from pydantic import Field

from assets.resources import PipelineSettings


class TrainingRunConfig(dg.Config):
    config_path: str = Field(description="Run config YAML (kind: vae, flow or rl).")
    shards: str | None = Field(None, description="Shard folder; unset: the pipeline's current shards_dir.")
    run_dir: str | None = Field(None, description="Override run_dir of the YAML.")
    steps: int | None = Field(None, description="Override steps of the YAML.")
    dry_run: bool = Field(False, description="Build everything, run one step, write no checkpoint.")


@dg.op(description="Train on the current shards; metadata: run folder, steps, first and last loss or reward.")
def launch_training(context: dg.OpExecutionContext, config: TrainingRunConfig, settings: PipelineSettings) -> dict:
    from training.config import load_run_config

    overrides: dict = {"data": {"shards": config.shards or str(settings.load().paths.shards_dir)}}
    if config.run_dir:
        overrides["run_dir"] = config.run_dir
    if config.steps:
        overrides["steps"] = config.steps
    run_config = load_run_config(config.config_path, **overrides)
    if run_config.kind == "rl":
        from training.rl import run_rl

        rows, measure = run_rl(run_config, dry_run=config.dry_run), "reward"
    else:
        from training.sft import run_sft

        rows, measure = run_sft(run_config, dry_run=config.dry_run), "loss"
    summary = {"kind": run_config.kind, "run_dir": run_config.run_dir, "shards": run_config.data.shards,
               "steps_run": len(rows), f"first_{measure}": rows[0][measure], f"last_{measure}": rows[-1][measure]}
    context.add_output_metadata({k: dg.MetadataValue.text(str(v)) if isinstance(v, str) else v
                                 for k, v in summary.items()})
    return summary


@dg.job(description="One training run (SFT or RL) on the current shards.")
def train_job():
    launch_training()
