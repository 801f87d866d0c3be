"""Where the seconds of source video went: the funnel from decoded sources to kept clips.

Computed from the decided records alone (after :func:`pipelines.decisions.apply_results`),
so a new stage or rejection reason shows up without a change here. Every second of a
decoded source lands in exactly one bucket: kept, pending, or lost at a gate named
``<stage>.<reason>``. Accounting is on the source clock: where several face tracks cover
the same moment (two people in frame), the moment counts once, for the face that got
furthest (kept > pending > rejected by a later stage > rejected earlier). That is what
makes ``seconds_in == seconds_kept + seconds_pending + sum(lost_s)`` hold exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from pipelines.schema.manifest import FunnelStats
from pipelines.schema.records import ACCEPTED, PENDING, REJECTED, SPLIT, Segment, SourceRecord

KEPT = "kept"
PENDING_LABEL = "pending"
NO_FACE = "faces.no_face"
# Ranks of the labels competing for one moment: higher wins. Lost labels rank by depth
# (how many stages decided the segment), in [0, _PENDING_RANK).
_KEPT_RANK = 10_000
_PENDING_RANK = 9_999
_NO_FACE_RANK = -1


@dataclass(frozen=True)
class _Span:
    """A stretch of the source clock and where its seconds go (bucket -> share, shares sum to 1)."""

    start_s: float
    end_s: float
    shares: tuple[tuple[str, float], ...]
    rank: int


def source_seconds(record: SourceRecord) -> float | None:
    """Seconds of the source that were decoded; None for a source turned away before decoding."""
    decoded = record.numbers.get("decoded_duration_s")
    return float(decoded) if decoded is not None else None


def _deciding_stage(segment: Segment) -> str:
    """The stage whose decision rejected (or split) the segment: the last one that decided it."""
    return next(reversed(segment.stages), "faces") if segment.stages else "faces"


def _trimmed_shares(stage: str, numbers: Mapping) -> tuple[tuple[str, float], ...]:
    """How a split parent's cut-out time divides between reasons.

    A stage that reports ``failed_s`` (reason -> seconds; the reasons can overlap in time, a
    frame both small and blurry) shares its cut-out time in those proportions, so the
    total stays the measured cut-out time.
    """
    failed = {k: float(v) for k, v in (numbers.get("failed_s") or {}).items() if float(v) > 0}
    total = sum(failed.values())
    if not total:
        return ((f"{stage}.trimmed", 1.0),)
    return tuple((f"{stage}.{reason}", seconds / total) for reason, seconds in sorted(failed.items()))


def _subtract(start: float, end: float, holes: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """[start, end] minus the holes, as sorted disjoint pieces."""
    pieces, cursor = [], start
    for lo, hi in sorted(holes):
        if hi <= cursor:
            continue
        if lo > cursor:
            pieces.append((cursor, min(lo, end)))
        cursor = max(cursor, hi)
        if cursor >= end:
            break
    if cursor < end:
        pieces.append((cursor, end))
    return [(lo, hi) for lo, hi in pieces if hi > lo]


def _segment_spans(segment: Segment, children: list[Segment]) -> list[_Span]:
    if segment.status == SPLIT:
        stage = _deciding_stage(segment)
        shares = _trimmed_shares(stage, segment.stages[stage].numbers if stage in segment.stages else {})
        holes = [(c.start_s, c.end_s) for c in children]
        return [_Span(lo, hi, shares, len(segment.stages)) for lo, hi in _subtract(segment.start_s, segment.end_s, holes)]
    if segment.status == ACCEPTED:
        return [_Span(segment.start_s, segment.end_s, ((KEPT, 1.0),), _KEPT_RANK)]
    if segment.status == PENDING:
        return [_Span(segment.start_s, segment.end_s, ((PENDING_LABEL, 1.0),), _PENDING_RANK)]
    label = f"{_deciding_stage(segment)}.{segment.reason or 'unknown'}"
    return [_Span(segment.start_s, segment.end_s, ((label, 1.0),), len(segment.stages))]


def _resolve(spans: list[_Span], duration: float) -> dict[str, float]:
    """Seconds per bucket over [0, duration]: each moment goes to the best-ranked span covering it."""
    spans = [_Span(max(0.0, s.start_s), min(duration, s.end_s), s.shares, s.rank) for s in spans]
    spans = [s for s in spans if s.end_s > s.start_s]
    spans.append(_Span(0.0, duration, ((NO_FACE, 1.0),), _NO_FACE_RANK))
    edges = sorted({0.0, duration, *(s.start_s for s in spans), *(s.end_s for s in spans)})
    out: dict[str, float] = {}
    for lo, hi in zip(edges, edges[1:]):
        middle = (lo + hi) / 2
        # Ties (same rank) go to the alphabetically first bucket so the result does not depend on order.
        best = min((s for s in spans if s.start_s <= middle < s.end_s), key=lambda s: (-s.rank, s.shares[0][0]))
        for bucket, share in best.shares:
            out[bucket] = out.get(bucket, 0.0) + (hi - lo) * share
    return out


def source_buckets(record: SourceRecord) -> dict[str, float]:
    """Seconds of one decoded source per bucket (kept, pending, ``<stage>.<reason>``)."""
    duration = source_seconds(record) or 0.0
    if record.status == REJECTED and not record.segments:
        return {f"source.{record.reason or 'unknown'}": duration} if duration else {}
    children: dict[str, list[Segment]] = {}
    for segment in record.segments:
        if segment.parent is not None:
            children.setdefault(segment.parent, []).append(segment)
    spans = [span for segment in record.segments for span in _segment_spans(segment, children.get(segment.key, []))]
    return _resolve(spans, duration)


class FunnelPart(Protocol):
    """What one decided source adds to the funnel (a memoised form: pipelines/shards.SourceStatsPart)."""

    reason: str | None
    decoded_s: float | None  # None: turned away before decoding
    kept_clip_s: float
    buckets: Mapping[str, float]


@dataclass(frozen=True)
class SourceFunnel:
    reason: str | None
    decoded_s: float | None
    kept_clip_s: float
    buckets: Mapping[str, float]

    @classmethod
    def of(cls, record: SourceRecord) -> SourceFunnel:
        decoded = source_seconds(record)
        return cls(record.reason, decoded, sum(s.duration_s for s in record.segments if s.status == ACCEPTED),
                   source_buckets(record) if decoded is not None else {})


def funnel_from_parts(parts: Iterable[FunnelPart], digits: int = 3) -> FunnelStats:
    """The funnel summed over sources' parts, in the given (source id) order."""
    totals: dict[str, float] = {}
    seconds_in, kept_clip_s, not_decoded = 0.0, 0.0, {}
    for part in parts:
        if part.decoded_s is None:
            key = f"source.{part.reason or 'unknown'}"
            not_decoded[key] = not_decoded.get(key, 0) + 1
            continue
        seconds_in += part.decoded_s
        kept_clip_s += part.kept_clip_s
        for bucket, seconds in part.buckets.items():
            totals[bucket] = totals.get(bucket, 0.0) + seconds
    lost = {k: round(v, digits) for k, v in sorted(totals.items()) if k not in (KEPT, PENDING_LABEL) and v > 0}
    return FunnelStats(seconds_in=round(seconds_in, digits), seconds_kept=round(totals.get(KEPT, 0.0), digits),
                       seconds_pending=round(totals.get(PENDING_LABEL, 0.0), digits), lost_s=lost,
                       kept_clip_s=round(kept_clip_s, digits), not_decoded=dict(sorted(not_decoded.items())))


def compute_funnel(records: Iterable[SourceRecord], digits: int = 3) -> FunnelStats:
    """The funnel over decided records (:func:`pipelines.runner.decided_record`)."""
    return funnel_from_parts((SourceFunnel.of(record) for record in records), digits)
