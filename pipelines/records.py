"""Records that account for every source and every candidate segment."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

ACCEPTED = "accepted"
REJECTED = "rejected"


@dataclass(frozen=True)
class SourceRef:
    """A registered source video: stable id, where it is, and what it contains."""

    source_id: str
    path: Path
    relpath: str
    sha256: str
    size_bytes: int

    def as_dict(self) -> dict:
        # No absolute path: records must not change when the input folder moves.
        return {"source_id": self.source_id, "relpath": self.relpath, "sha256": self.sha256,
                "size_bytes": self.size_bytes}


@dataclass
class SegmentRecord:
    key: str
    track_id: int
    start_s: float
    end_s: float
    status: str
    reason: str | None
    numbers: dict
    files: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["start_s"], out["end_s"] = round(self.start_s, 6), round(self.end_s, 6)
        return out


@dataclass
class SourceRecord:
    source: dict
    status: str
    reason: str | None
    detail: str | None
    numbers: dict
    probe: dict | None = None
    segments: list[dict] = field(default_factory=list)

    @classmethod
    def rejected(cls, source: SourceRef, reason: str, detail: str, numbers: dict, probe: dict | None = None,
                 segments: list[dict] | None = None) -> "SourceRecord":
        return cls(source.as_dict(), REJECTED, reason, detail, numbers, probe, segments or [])

    @classmethod
    def from_segments(cls, source: SourceRef, probe, segments: list[SegmentRecord], numbers: dict) -> "SourceRecord":
        accepted = [s for s in segments if s.status == ACCEPTED]
        numbers = {**numbers, "segments": len(segments), "accepted_segments": len(accepted)}
        if not segments:
            return cls(source.as_dict(), REJECTED, "no_face_found", "no face track in any frame", numbers,
                       probe.as_dict(), [])
        if not accepted:
            return cls(source.as_dict(), REJECTED, "no_accepted_segment",
                       "every face segment was rejected", numbers, probe.as_dict(), [s.as_dict() for s in segments])
        return cls(source.as_dict(), ACCEPTED, None, None, numbers, probe.as_dict(), [s.as_dict() for s in segments])

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def source_id(self) -> str:
        return self.source["source_id"]

    def accepted_segments(self) -> list[dict]:
        return [s for s in self.segments if s["status"] == ACCEPTED]
