"""Resources chosen per deployment: the pipeline config and the stages' model backends."""

import dagster as dg
from pydantic import Field

from pipelines.config import PipelineConfig, load_config
from pipelines.devices import set_thread_limit, thread_limit
from pipelines.ingest import SourceRegistry
from pipelines.runner import ModelBackends
from pipelines.schema.records import SourceRef


class PipelineSettings(dg.ConfigurableResource):
    """Where the validated pipeline config comes from (a YAML path; env vars override paths)."""

    config_path: str | None = Field(
        default=None, description="YAML config file; unset: $TALKINGHEAD_CONFIG, else built-in defaults."
    )

    def load(self) -> PipelineConfig:
        return load_config(self.config_path)


class StageModels(dg.ConfigurableResource):
    """The stages' model backends (face detector, Light-ASD, speech models, SHeaP, captioner),
    each built once per step process on first use and reused across partitions
    (pipelines.runner.ModelBackends).

    Under the multiprocess executor every step is its own process, so up to the executor's
    ``max_concurrent`` steps each hold the models of the stage they run: memory grows with
    max_concurrent x (largest stage's models), and each step's torch / onnxruntime /
    CTranslate2 would use every core unless ``threads_per_step`` limits it (cores //
    max_concurrent keeps N steps from oversubscribing the machine)."""

    threads_per_step: int | None = Field(
        default=None, ge=1, description="CPU threads per step process for the model libraries; unset: their defaults.")

    def backends(self, config: PipelineConfig) -> ModelBackends:
        if self.threads_per_step is not None and thread_limit() != self.threads_per_step:
            set_thread_limit(self.threads_per_step)
        return ModelBackends(config)


def partition_source(config: PipelineConfig, partition_key: str) -> SourceRef:
    """The registered source video behind one ``source_videos`` partition."""
    return SourceRegistry(config.paths.registry_path).lookup(partition_key, config.paths.input_dir)
