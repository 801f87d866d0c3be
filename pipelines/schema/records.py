"""What the stages write per source: the source record and each later stage's result.

``<work>/sources/<id>/record.json`` is a :class:`SourceRecord` (the face stage's output:
every candidate segment accepted or rejected, with its numbers and files).
``<work>/sources/<id>/<stage>.json`` is a :class:`StageResult`: one :class:`StageDecision`
per candidate segment of that stage. A decision may split its segment into
:class:`ChildSegment` s (active speaker detection keeps only the speaking runs); the stages
after it decide on the children. Each file carries the fingerprint of the run that wrote
it (stage version + config section + the fingerprints of its inputs), which is how a
re-run knows what is stale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from pipelines.atomic import atomic_write_bytes
from pipelines.schema.base import StrictModel, StrictMutableModel

ACCEPTED = "accepted"
REJECTED = "rejected"
PENDING = "pending"  # a needed stage has not run: visible in the manifest, not in the shards
SPLIT = "split"  # a parent whose children carry on; neither accepted nor rejected itself
Status = Literal["accepted", "rejected", "pending", "split"]


def _dump(model: StrictModel | StrictMutableModel) -> bytes:
    return json.dumps(model.model_dump(mode="json"), indent=1, sort_keys=True).encode()


class SourceInfo(StrictModel):
    """A registered source video as records name it: no absolute path, so records do not
    change when the input folder moves."""

    source_id: str
    relpath: str
    sha256: str
    size_bytes: int


class SourceRef(SourceInfo):
    """A registered source video and where it is on this machine."""

    path: Path = Field(exclude=True)

    def info(self) -> SourceInfo:
        return SourceInfo(source_id=self.source_id, relpath=self.relpath, sha256=self.sha256,
                          size_bytes=self.size_bytes)


class ChildSegment(StrictModel):
    """A part of a segment that a stage kept as its own clip (its files are already written)."""

    key: str
    start_s: float
    end_s: float
    files: dict[str, str]
    numbers: dict[str, Any]
    payload: dict[str, Any]


class StageDecision(StrictModel):
    """One stage's verdict on one candidate segment.

    ``numbers`` are what decided it (they reach the manifest as ``<stage>.<name>``),
    ``flags`` are kept-but-noted conditions (``flame_model_not_installed``), ``payload`` is what
    the sample's JSON gains under the stage's name, ``files`` are extra sample members
    (extension -> file in the source's work folder).
    """

    decision: Literal["accepted", "rejected"]
    reason: str | None = None
    numbers: dict[str, Any] = {}
    flags: list[str] = []
    payload: dict[str, Any] = {}
    files: dict[str, str] = {}
    children: list[ChildSegment] = []


class StageResult(StrictModel):
    """A stage's output for one source (``<stage>.json``)."""

    stage: str
    fingerprint: str = ""
    segments: dict[str, StageDecision] = {}
    skipped: str | None = None  # why nothing was decided (source rejected, stage disabled)
    details: dict[str, Any] = {}  # source-wide facts of the stage (backends, transcript, activity)

    @classmethod
    def load(cls, path: Path) -> StageResult:
        return cls.model_validate_json(Path(path).read_bytes())

    def save(self, path: Path) -> None:
        atomic_write_bytes(path, _dump(self))


class Segment(StrictMutableModel):
    """A candidate clip of one face track, and what each stage decided about it."""

    key: str
    track_id: int
    start_s: float
    end_s: float
    status: Status
    reason: str | None = None
    numbers: dict[str, Any]
    files: dict[str, str] = {}
    parent: str | None = None  # the segment a stage split this one from
    stages: dict[str, StageDecision] = {}  # filled when the later stages' results are applied

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


class SourceRecord(StrictMutableModel):
    """Everything known about one source: accepted or rejected with a reason, and its segments."""

    source: SourceInfo
    status: Status
    reason: str | None = None
    detail: str | None = None
    numbers: dict[str, Any] = {}
    probe: dict[str, Any] | None = None  # ProbeInfo.as_dict() (pipelines/media), None when unreadable
    segments: list[Segment] = []
    fingerprint: str = ""

    @classmethod
    def rejected(cls, source: SourceInfo, reason: str, detail: str, numbers: dict,
                 probe: dict | None = None, segments: list[Segment] | None = None) -> SourceRecord:
        return cls(source=_info(source), status=REJECTED, reason=reason, detail=detail, numbers=numbers,
                   probe=probe, segments=segments or [])

    @classmethod
    def from_segments(cls, source: SourceInfo, probe: dict, segments: list[Segment], numbers: dict) -> SourceRecord:
        accepted = [s for s in segments if s.status == ACCEPTED]
        numbers = {**numbers, "segments": len(segments), "accepted_segments": len(accepted)}
        if not segments:
            return cls.rejected(source, "no_face_found", "no face track in any frame", numbers, probe)
        if not accepted:
            return cls.rejected(source, "no_accepted_segment", "every face segment was rejected", numbers, probe,
                                segments)
        return cls(source=_info(source), status=ACCEPTED, numbers=numbers, probe=probe, segments=segments)

    @property
    def source_id(self) -> str:
        return self.source.source_id

    def accepted_segments(self) -> list[Segment]:
        return [s for s in self.segments if s.status == ACCEPTED]

    @classmethod
    def load(cls, path: Path) -> SourceRecord:
        return cls.model_validate_json(Path(path).read_bytes())

    def save(self, path: Path) -> None:
        atomic_write_bytes(path, _dump(self))

    def dumps(self) -> bytes:
        return _dump(self)


def _info(source: SourceInfo) -> SourceInfo:
    return source.info() if isinstance(source, SourceRef) else source
