"""Applying the later stages' decisions to a source's face segments.

A segment reaches the shards only when the face stage and every enabled later stage
accepted it; a stage that split it (``children``) hands its children to the stages after
it. A needed stage that has not run leaves the segment ``pending``: visible in the
manifest, not in the shards. The sample's JSON then gains each stage's payload
(:func:`sample_record`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pipelines.schema.records import (
    ACCEPTED,
    PENDING,
    REJECTED,
    SPLIT,
    ChildSegment,
    Segment,
    SourceRecord,
    StageDecision,
    StageResult,
)
from pipelines.schema.sample import FilterEntry, SampleRecord


def _child_segment(parent: Segment, child: ChildSegment, stage: str, decision: StageDecision) -> Segment:
    return Segment(
        key=child.key, track_id=parent.track_id, start_s=child.start_s, end_s=child.end_s, status=ACCEPTED,
        parent=parent.key, files=child.files,
        numbers={**parent.numbers, **{f"{stage}.{k}": v for k, v in child.numbers.items()},
                 "duration_s": round(child.end_s - child.start_s, 4)},
        stages={**parent.stages, stage: decision.model_copy(update={
            "numbers": child.numbers, "payload": child.payload, "children": [], "files": {}})},
    )


def _apply(segment: Segment, stages: Sequence[str], results: Mapping[str, StageResult | None],
           out: list[Segment]) -> None:
    for position, stage in enumerate(stages):
        if segment.status != ACCEPTED:
            break
        result = results[stage]
        decision = result.segments.get(segment.key) if result is not None else None
        if decision is None:
            segment.status, segment.reason = PENDING, f"{stage}_not_run"
            break
        segment.stages = {**segment.stages, stage: decision.model_copy(update={"children": [], "files": {}})}
        if decision.files:  # e.g. FLAME arrays: extra members of the sample
            segment.files = {**segment.files, **decision.files}
        segment.numbers = {**segment.numbers, **{f"{stage}.{k}": v for k, v in decision.numbers.items()}}
        if decision.decision != ACCEPTED:
            segment.status, segment.reason = REJECTED, decision.reason
            break
        if decision.children:
            segment.status, segment.reason = SPLIT, None
            out.append(segment)
            for child in decision.children:
                _apply(_child_segment(segment, child, stage, decision), stages[position + 1:], results, out)
            return
    out.append(segment)


def apply_results(record: SourceRecord, stages: Sequence[str],
                  results: Mapping[str, StageResult | None]) -> SourceRecord:
    """A copy of ``record`` with every face-accepted segment re-decided by ``stages`` in order.

    ``results``: each stage's result for this source (None where it has not run).
    """
    if record.status != ACCEPTED or not stages:
        return record
    view = record.model_copy(deep=True)
    out: list[Segment] = []
    for segment in view.segments:
        _apply(segment, stages, results, out)
    view.segments = out
    accepted = [s for s in out if s.status == ACCEPTED]
    view.numbers = {**view.numbers, "accepted_segments": len(accepted)}
    if not accepted:
        pending = any(s.status == PENDING for s in out)
        view.status = PENDING if pending else REJECTED
        view.reason = "stages_pending" if pending else "no_accepted_segment"
        reasons = sorted({s.reason for s in out if s.status == REJECTED})
        view.detail = "a required stage has not run" if pending else \
            f"every segment was rejected by a later stage ({', '.join(reasons)})"
    return view


def sample_record(face_json: bytes, segment: Segment, fingerprints: Mapping[str, str]) -> SampleRecord:
    """The sample's JSON as packed: the face stage's record plus each later stage's payload and
    decision, validated against the schema."""
    sample = SampleRecord.load(face_json)
    update: dict = {"stage_fingerprints": dict(fingerprints), "filters": list(sample.filters)}
    for stage, decision in segment.stages.items():  # in the order the stages ran
        update[stage] = {**decision.payload, "flags": decision.flags}
        update["filters"].append(FilterEntry(stage=stage, decision=decision.decision, numbers=decision.numbers))
    return SampleRecord.model_validate({**sample.model_dump(by_alias=True), **update})
