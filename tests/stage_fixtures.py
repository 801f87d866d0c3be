"""Test helpers for running stages through the one runner (pipelines/runner.py).

``SharedDetectorBackends`` hands the session's SCRFD detector to the face stage instead of
building another one; every other stage's backend is built as in production.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.config import PipelineConfig, load_config
from pipelines.ingest import SourceRegistry
from pipelines.runner import ModelBackends
from pipelines.schema.records import SourceRef


class SharedDetectorBackends(ModelBackends):
    def __init__(self, config: PipelineConfig, detector):
        super().__init__(config)
        self.detector = detector

    def get(self, name: str, config: PipelineConfig | None = None):
        return self.detector if name == "faces" else super().get(name, config)


def stage_config(root: Path, model_dir: Path, inputs: Path | None = None, **overrides) -> PipelineConfig:
    return load_config(paths={"input_dir": inputs or root / "input", "data_dir": root / "data",
                              "model_dir": model_dir}, **overrides)


def scan(config: PipelineConfig) -> dict[str, SourceRef]:
    """The input folder's sources by relative path."""
    refs = SourceRegistry(config.paths.registry_path).scan(config.paths.input_dir, config.ingest.extensions)
    return {ref.relpath: ref for ref in refs}


class GridRun:
    """A GRID clip after the real face stage (SCRFD), the quality stage and ASD (Light-ASD), run by the runner;
    speech, FLAME and captions are off. ``shards`` holds the packed result. Built once per session
    by the ``grid_asd_run`` fixture (tests/conftest.py)."""

    def __init__(self, root: Path, clip: Path, model_dir: Path, detector):
        import shutil

        from pipelines.runner import run_source
        from pipelines.shards import write_shards

        (root / "input").mkdir(parents=True)
        shutil.copyfile(clip, root / "input" / clip.name)
        self.config = stage_config(root, model_dir, speech={"enabled": False}, flame={"enabled": False},
                                   captions={"enabled": False})
        (self.ref,) = scan(self.config).values()
        faces, quality, asd = run_source(self.ref, self.config, SharedDetectorBackends(self.config, detector),
                                         stages=["asd"])
        self.record, self.quality, self.asd = faces.result, quality.result, asd.result
        self.shards = write_shards([self.record], self.config)
