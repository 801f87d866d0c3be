"""Resources chosen per deployment: the pipeline config and the stages' model backends."""

import dagster as dg
from pydantic import Field

from pipelines.config import PipelineConfig, load_config
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
    (pipelines.runner.ModelBackends)."""

    def backends(self, config: PipelineConfig) -> ModelBackends:
        return ModelBackends(config)


def partition_source(config: PipelineConfig, partition_key: str) -> SourceRef:
    """The registered source video behind one ``source_videos`` partition."""
    return SourceRegistry(config.paths.registry_path).lookup(partition_key, config.paths.input_dir)
