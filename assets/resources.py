"""Resources chosen per deployment: the pipeline config and the face detector."""

from functools import lru_cache

import dagster as dg
from pydantic import Field

from pipelines.config import FaceDetectionConfig, PipelineConfig, load_config
from pipelines.faces.detectors import FaceDetector, build_detector
from pipelines.ingest import SourceRegistry
from pipelines.models import ModelStore
from pipelines.records import SourceRef


class PipelineSettings(dg.ConfigurableResource):
    """Where the validated pipeline config comes from (a YAML path; env vars override paths)."""

    config_path: str | None = Field(
        default=None, description="YAML config file; unset: $TALKINGHEAD_CONFIG, else built-in defaults."
    )

    def load(self) -> PipelineConfig:
        return load_config(self.config_path)


@lru_cache(maxsize=4)
def _cached_detector(faces: FaceDetectionConfig, model_dir: str) -> FaceDetector:
    return build_detector(faces, ModelStore(model_dir))


def face_detector(config: PipelineConfig) -> FaceDetector:
    """One loaded detector per process and setting, reused across partitions of a run."""
    return _cached_detector(config.faces, str(config.paths.model_dir))


def partition_source(config: PipelineConfig, partition_key: str) -> SourceRef:
    """The registered source video behind one ``source_videos`` partition."""
    return SourceRegistry(config.paths.registry_path).lookup(partition_key, config.paths.input_dir)
