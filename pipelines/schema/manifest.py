"""What lies next to the shards besides the index: the manifest and the dataset statistics.

``manifest.jsonl`` accounts for everything the pipeline saw, one JSON object per line:
a :class:`SourceRow` per registered source, a :class:`SegmentRow` per candidate segment
(accepted, rejected, split or pending, with its reason and numbers) and a :class:`FileRow`
per input file that is not a source (with why). ``stats.json`` is :class:`DatasetStats`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from pipelines.atomic import atomic_write_text
from pipelines.schema.base import StrictModel
from pipelines.schema.records import Status

MANIFEST_FILE = "manifest.jsonl"
STATS_FILE = "stats.json"


class SourceRow(StrictModel):
    kind: Literal["source"] = "source"
    source_id: str
    relpath: str
    status: Status
    reason: str | None
    detail: str | None
    numbers: dict[str, Any]

    @property
    def shot_cuts_s(self) -> list[float]:
        """Shot cut times on the source clock, as the face stage found them (none when it did not look)."""
        return [float(t) for t in self.numbers.get("shot_cuts_s", [])]


class SegmentRow(StrictModel):
    kind: Literal["segment"] = "segment"
    source_id: str
    key: str
    status: Status
    reason: str | None
    start_s: float
    end_s: float
    parent: str | None  # the segment a stage split this one from
    numbers: dict[str, Any]

    @property
    def shot(self) -> int | None:
        """Index of the shot the segment lies in (children inherit their parent's), None before shot cuts."""
        return int(self.numbers["shot"]) if self.numbers.get("shot") is not None else None


class FileRow(StrictModel):
    """An input file that is not a source: unsupported extension, sidecar, duplicate, ..."""

    kind: Literal["file"] = "file"
    relpath: str
    status: Literal["skipped"] = "skipped"
    reason: str
    detail: str


ManifestRow = Annotated[SourceRow | SegmentRow | FileRow, Field(discriminator="kind")]
_ROW = TypeAdapter(ManifestRow)


def manifest_text(rows: Iterable[SourceRow | SegmentRow | FileRow]) -> str:
    """Rows as ``manifest.jsonl`` lines: one sorted-key JSON object per line."""
    return "".join(json.dumps(row.model_dump(mode="json"), sort_keys=True) + "\n" for row in rows)


def save_manifest(shards_dir: Path, rows: Iterable[SourceRow | SegmentRow | FileRow]) -> Path:
    path = Path(shards_dir) / MANIFEST_FILE
    atomic_write_text(path, manifest_text(rows))
    return path


def load_manifest(shards_dir: Path) -> list[SourceRow | SegmentRow | FileRow]:
    """Every row of the folder's manifest (empty when there is none yet)."""
    path = Path(shards_dir) / MANIFEST_FILE
    if not path.exists():
        return []
    return [_ROW.validate_json(line) for line in path.read_text().splitlines() if line.strip()]


class SourceCounts(StrictModel):
    total: int
    accepted: int
    rejected_by_reason: dict[str, int]


class SegmentCounts(StrictModel):
    total: int
    accepted: int
    split: int
    rejected_by_reason: dict[str, int]  # rejected or pending segments, by reason


class DurationSummary(StrictModel):
    total: float
    mean: float
    min: float
    max: float


class ShardTotals(StrictModel):
    count: int
    bytes: int


class FunnelStats(StrictModel):
    """Where the decoded source seconds went (pipelines/funnel.py computes it).

    ``seconds_in == seconds_kept + seconds_pending + sum(lost_s.values())`` up to rounding;
    each moment of a source counts once, on the source clock.
    """

    seconds_in: float  # decoded seconds of every source, accepted or rejected
    seconds_kept: float  # source seconds covered by accepted clips
    seconds_pending: float  # in segments waiting for a stage that has not run
    lost_s: dict[str, float]  # `<stage>.<reason>` -> seconds: source.*, faces.no_face, <stage>.trimmed, ...
    kept_clip_s: float  # sum of accepted clip durations; above seconds_kept where clips overlap in time
    not_decoded: dict[str, int]  # `source.<reason>` -> sources turned away before decoding (not in seconds_in)

    @property
    def seconds_lost(self) -> float:
        return sum(self.lost_s.values())


class DatasetStats(StrictModel):
    sources: SourceCounts
    segments: SegmentCounts
    accepted_duration_s: DurationSummary
    accepted_flags: dict[str, int]  # kept but worth knowing: language_unknown, flame_model_not_installed
    shards: ShardTotals
    skipped_files: dict[str, int]  # input files that are not sources, by reason
    funnel: FunnelStats

    @classmethod
    def load(cls, shards_dir: Path) -> DatasetStats:
        return cls.model_validate_json((Path(shards_dir) / STATS_FILE).read_bytes())

    def save(self, shards_dir: Path) -> None:
        atomic_write_text(Path(shards_dir) / STATS_FILE, json.dumps(self.model_dump(mode="json"), indent=1,
                                                                     sort_keys=True))
