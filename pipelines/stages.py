"""Per-segment decisions of the stages that run after the face stage, in order.

Each such stage writes ``<work>/sources/<id>/<stage>.json`` holding a decision per
candidate segment::

    {"segments": {key: {"decision", "reason", "numbers", "flags", "payload", "children"?, "files"?}}}

A decision may split its segment: ``children`` (each with key, start_s, end_s, files,
numbers, payload) replace it, and the stages after it decide on the children; ``files``
adds entries to the sample (extension -> file in the source's work folder). A segment
reaches the shards only when the face stage and every required stage accepted it; its
sample JSON gains each stage's payload. A required stage that has not run leaves the
segment ``pending``: visible in the manifest, not in the shards.
"""

from __future__ import annotations

import copy
import json

from pipelines.atomic import atomic_write_text
from pipelines.config import PipelineConfig
from pipelines.records import ACCEPTED, REJECTED, SourceRecord
from pipelines.sources import source_dir

PENDING = "pending"
SPLIT = "split"  # a parent whose children carry on; neither accepted nor rejected itself


def required_stages(config: PipelineConfig) -> list[str]:
    """The later stages in the order they run: active speaker detection splits, speech decides,
    FLAME and captions annotate what is left."""
    order = (("asd", config.asd.enabled), ("speech", config.speech.enabled), ("flame", config.flame.enabled),
             ("captions", config.captions.enabled))
    return [name for name, on in order if on]


def stage_path(config: PipelineConfig, source_id: str, stage: str):
    return source_dir(config, source_id) / f"{stage}.json"


def write_stage_result(config: PipelineConfig, source_id: str, stage: str, result: dict) -> None:
    atomic_write_text(stage_path(config, source_id, stage), json.dumps(result, indent=1, sort_keys=True))


def load_stage_result(config: PipelineConfig, source_id: str, stage: str) -> dict | None:
    path = stage_path(config, source_id, stage)
    return json.loads(path.read_text()) if path.exists() else None


def _child_segment(parent: dict, child: dict, stage: str) -> dict:
    return {
        "key": child["key"], "track_id": parent["track_id"], "start_s": child["start_s"], "end_s": child["end_s"],
        "status": ACCEPTED, "reason": None, "parent": parent["key"], "files": child["files"],
        "numbers": {**parent["numbers"], **{f"{stage}.{k}": v for k, v in child["numbers"].items()},
                    "duration_s": round(child["end_s"] - child["start_s"], 4)},
        "stages": {**parent.get("stages", {}),
                   stage: {"decision": ACCEPTED, "reason": None, "numbers": child["numbers"],
                           "flags": [], "payload": child.get("payload", {})}},
    }


def _apply(segment: dict, stages: list[str], results: dict, out: list[dict]) -> None:
    for position, stage in enumerate(stages):
        if segment["status"] != ACCEPTED:
            break
        decision = (results[stage] or {}).get("segments", {}).get(segment["key"])
        if decision is None:
            segment.update(status=PENDING, reason=f"{stage}_not_run")
            break
        segment.setdefault("stages", {})[stage] = {k: v for k, v in decision.items() if k not in ("children", "files")}
        if decision.get("files"):  # e.g. FLAME arrays: extra entries of the sample
            segment["files"] = {**segment["files"], **decision["files"]}
        segment["numbers"] = {**segment["numbers"], **{f"{stage}.{k}": v for k, v in decision["numbers"].items()}}
        if decision["decision"] != ACCEPTED:
            segment.update(status=REJECTED, reason=decision["reason"])
            break
        if decision.get("children"):
            segment.update(status=SPLIT, reason=None)
            out.append(segment)
            for child in decision["children"]:
                _apply(_child_segment(segment, child, stage), stages[position + 1:], results, out)
            return
    out.append(segment)


def apply_stages(record: SourceRecord, config: PipelineConfig, upto: str | None = None) -> SourceRecord:
    """The record with every face-accepted segment re-decided by the required stages.

    ``upto``: apply only the stages before this one (what that stage sees as candidates).
    Segments gain ``stages`` (stage -> decision) so the shard writer can add payloads.
    """
    stages = required_stages(config)
    if upto is not None:
        stages = stages[: stages.index(upto)] if upto in stages else stages
    if record.status != ACCEPTED or not stages:
        return record
    view = copy.deepcopy(record)
    results = {stage: load_stage_result(config, record.source_id, stage) for stage in stages}
    out: list[dict] = []
    for segment in view.segments:
        _apply(segment, stages, results, out)
    view.segments = out
    accepted = [s for s in out if s["status"] == ACCEPTED]
    view.numbers = {**view.numbers, "accepted_segments": len(accepted)}
    if not accepted:
        pending = any(s["status"] == PENDING for s in out)
        view.status = PENDING if pending else REJECTED
        view.reason = "stages_pending" if pending else "no_accepted_segment"
        reasons = sorted({s["reason"] for s in out if s["status"] == REJECTED})
        view.detail = "a required stage has not run" if pending else \
            f"every segment was rejected by a later stage ({', '.join(reasons)})"
    return view


def candidate_segments(record: SourceRecord, config: PipelineConfig, stage: str) -> list[dict]:
    """The accepted segments ``stage`` must decide on: face segments after the stages before it."""
    return [s for s in apply_stages(record, config, upto=stage).segments if s["status"] == ACCEPTED]


def sample_json(face_json: bytes, segment: dict) -> bytes:
    """The sample's JSON: its record plus each later stage's payload and decision."""
    record = json.loads(face_json)
    for stage, decision in segment.get("stages", {}).items():  # in the order the stages ran
        record[stage] = {**decision["payload"], "flags": decision.get("flags", [])}
        record["filters"].append({"stage": stage, "decision": decision["decision"], "numbers": decision["numbers"]})
    return json.dumps(record, indent=1, sort_keys=True).encode()
