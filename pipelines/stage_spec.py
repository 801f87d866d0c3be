"""The stage protocol: what every per-source stage declares, and what it is given to run.

A stage is a :class:`StageSpec`: a name, the stages whose output it needs, the config
sections it reads, a version (bumped when the code changes its output), how its model
backend is built, and its per-source function. :mod:`pipelines.registry` lists the stages;
:mod:`pipelines.runner` is the one place that runs them (for ``talkinghead run``, the
benches and the Dagster assets alike).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.config import PipelineConfig
from pipelines.schema.records import Segment, SourceRecord, SourceRef, StageResult

# (seconds decoded, seconds in the source): how far a long stage has got.
ProgressFn = Callable[[float, float], None]


@dataclass(frozen=True)
class StageContext:
    """What a stage's per-source function receives from the runner.

    ``record`` is the face stage's record (None for the face stage itself); ``candidates`` are
    the accepted segments after the stages this one needs, which it must decide on.
    The runner holds the source's lock for the whole call.
    """

    source: SourceRef
    config: PipelineConfig
    backend: Any
    folder: Path
    fingerprint: str
    record: SourceRecord | None = None
    candidates: tuple[Segment, ...] = ()
    progress: ProgressFn | None = None


@dataclass(frozen=True)
class StageSpec:
    """One per-source stage. ``run`` returns the face stage's :class:`SourceRecord` (the root
    stage, which writes the work folder itself) or a :class:`StageResult` (every later stage;
    the runner writes it)."""

    name: str
    needs: tuple[str, ...]
    # The first is the stage's own (its ``enabled`` switch, if it has one). A dotted name
    # ("conversation.mode") takes one field of a section: a stage that reads only that field does
    # not re-run when the section's other settings change.
    config_sections: tuple[str, ...]
    version: str
    build_backend: Callable[[PipelineConfig], Any]
    run: Callable[[StageContext], SourceRecord | StageResult]
    description: str
    # Files beside the source that the stage reads (a dataset's sidecar annotations): what
    # they hold joins the fingerprint, so editing one re-runs the stage. JSON-able.
    source_inputs: Callable[[SourceRef, PipelineConfig], Any] | None = None

    @property
    def is_root(self) -> bool:
        return not self.needs

    def enabled(self, config: PipelineConfig) -> bool:
        section = getattr(config, self.config_sections[0])
        return bool(getattr(section, "enabled", True))

    def config_fingerprint(self, config: PipelineConfig) -> str:
        """Stage version + the config sections it reads (assets/stages.py chains it with the
        needed stages' into the Dagster ``code_version``)."""
        return digest({"stage": self.name, "version": self.version,
                       "config": {name: _config_value(config, name) for name in self.config_sections}})


def _config_value(config: PipelineConfig, name: str) -> Any:
    """The JSON-able value of a config section, or of one field given as ``section.field``."""
    value: Any = config
    for part in name.split("."):
        value = getattr(value, part)
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def digest(value: Any) -> str:
    """A short stable hash of a JSON-able value."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]
