"""Per-segment decisions of the stages that run after the face stage.

Each such stage writes ``<work>/sources/<id>/<stage>.json`` holding a decision per face
segment (``{"segments": {key: {"decision", "reason", "numbers", "flags", "payload"}}}``).
A segment reaches the shards only when the face stage and every required stage accepted
it; its sample JSON gains each stage's payload. A required stage that has not run leaves
the segment ``pending``: visible in the manifest, not in the shards.
"""

from __future__ import annotations

import copy
import json

from pipelines.config import PipelineConfig
from pipelines.ingest import atomic_write_text
from pipelines.records import ACCEPTED, REJECTED, SourceRecord
from pipelines.sources import source_dir

PENDING = "pending"


def required_stages(config: PipelineConfig) -> list[str]:
    return ["speech"] if config.speech.enabled else []


def stage_path(config: PipelineConfig, source_id: str, stage: str):
    return source_dir(config, source_id) / f"{stage}.json"


def write_stage_result(config: PipelineConfig, source_id: str, stage: str, result: dict) -> None:
    atomic_write_text(stage_path(config, source_id, stage), json.dumps(result, indent=1, sort_keys=True))


def load_stage_result(config: PipelineConfig, source_id: str, stage: str) -> dict | None:
    path = stage_path(config, source_id, stage)
    return json.loads(path.read_text()) if path.exists() else None


def apply_stages(record: SourceRecord, config: PipelineConfig) -> SourceRecord:
    """The record with every face-accepted segment re-decided by the required stages.

    Segments gain ``stages`` (stage -> decision) so the shard writer can add payloads.
    """
    stages = required_stages(config)
    if record.status != ACCEPTED or not stages:
        return record
    view = copy.deepcopy(record)
    results = {stage: load_stage_result(config, record.source_id, stage) for stage in stages}
    for segment in view.segments:
        if segment["status"] != ACCEPTED:
            continue
        segment["stages"] = {}
        for stage in stages:
            result = results[stage]
            decision = (result or {}).get("segments", {}).get(segment["key"])
            if decision is None:
                segment.update(status=PENDING, reason=f"{stage}_not_run")
                break
            segment["stages"][stage] = decision
            segment["numbers"] = {**segment["numbers"], **{f"{stage}.{k}": v for k, v in decision["numbers"].items()}}
            if decision["decision"] != ACCEPTED:
                segment.update(status=REJECTED, reason=decision["reason"])
                break
    accepted = [s for s in view.segments if s["status"] == ACCEPTED]
    view.numbers = {**view.numbers, "accepted_segments": len(accepted)}
    if not accepted:
        pending = any(s["status"] == PENDING for s in view.segments)
        view.status = PENDING if pending else REJECTED
        view.reason = "stages_pending" if pending else "no_accepted_segment"
        view.detail = "a required stage has not run" if pending else "every segment was rejected by a later stage"
    return view


def sample_json(face_json: bytes, segment: dict) -> bytes:
    """The sample's JSON: the face record plus each later stage's payload and decision."""
    record = json.loads(face_json)
    for stage, decision in sorted(segment.get("stages", {}).items()):
        record[stage] = {**decision["payload"], "flags": decision.get("flags", [])}
        record["filters"].append({"stage": stage, "decision": decision["decision"], "numbers": decision["numbers"]})
    return json.dumps(record, indent=1, sort_keys=True).encode()
