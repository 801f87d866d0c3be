"""What each stage asset shows in the Dagster UI, built from the stage's stored output."""

from __future__ import annotations

import base64
import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import dagster as dg

from pipelines.config import PipelineConfig
from pipelines.reports import asd_plot_png, preview_png
from pipelines.runner import StageOutcome
from pipelines.schema.records import ACCEPTED, SourceRecord, StageResult
from pipelines.schema.sample import SampleRecord
from pipelines.workdir import source_dir


def png_markdown(png: bytes, alt: str) -> dg.MetadataValue:
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def _faces(record: SourceRecord, config: PipelineConfig, log: logging.Logger) -> dict:
    accepted = record.accepted_segments()
    folder = source_dir(config, record.source_id)
    meta: dict = {
        "status": record.status,
        "reason": record.reason or "",
        "segments": len(record.segments),
        "accepted_segments": len(accepted),
        "accepted_seconds": round(sum(s.numbers["duration_s"] for s in accepted), 3),
        "segment_rejections": dict(Counter(s.reason for s in record.segments if s.status != ACCEPTED)),
        "work_dir": dg.MetadataValue.path(str(folder)),
    }
    if record.status != ACCEPTED:
        meta["detail"] = record.detail or ""
        log.warning(f"{record.source.relpath}: rejected ({record.reason}: {record.detail})")
    if accepted:
        meta["detector"] = SampleRecord.load(folder / accepted[0].files["json"]).faces.detector
        meta["preview"] = png_markdown(preview_png(Path(folder) / accepted[0].files["mp4"]), accepted[0].key)
    return meta


def _asd(result: StageResult, config: PipelineConfig, log: logging.Logger) -> dict:
    per_track = {key: {k: d.numbers[k] for k in ("mean_probability", "kept_s", "dropped_s")}
                 | {"decision": d.decision, "reason": d.reason, "clips": len(d.children) or int(d.decision == ACCEPTED)}
                 for key, d in result.segments.items()}
    meta = {"segments_scored": len(per_track), "per_track": dg.MetadataValue.json(per_track),
            "kept_seconds": round(sum(v["kept_s"] for v in per_track.values()), 3),
            "dropped_seconds": round(sum(v["dropped_s"] for v in per_track.values()), 3)}
    if result.details.get("plots"):
        meta["probability_plot"] = png_markdown(asd_plot_png(result.details["plots"], config.asd.threshold),
                                                "speaking probability")
    return meta


def _speech(result: StageResult, config: PipelineConfig, log: logging.Logger) -> dict:
    decisions = list(result.segments.values())
    meta = {
        "segments_decided": len(decisions),
        "accepted": sum(d.decision == ACCEPTED for d in decisions),
        "rejections": dict(Counter(d.reason for d in decisions if d.decision != ACCEPTED)),
        "languages": dict(Counter(d.numbers["language"] for d in decisions)),
    }
    details = result.details
    if "backends" in details:
        meta["backends"] = dg.MetadataValue.json(details["backends"])
    if "source" in details:
        meta.update(speech_seconds=details["source"]["speech_s"], overlap_ratio=details["source"]["overlap_ratio"],
                    audio_seconds=details["audio_seconds"])
    return meta


def _flame(result: StageResult, config: PipelineConfig, log: logging.Logger) -> dict:
    installed = bool(result.details.get("installed"))
    if result.segments and not installed:
        log.warning("SHeaP weights not installed: clips are kept and flagged (see `talkinghead models status`)")
    return {"installed": installed, "clips": len(result.segments), "model": config.flame.model}


def _captions(result: StageResult, config: PipelineConfig, log: logging.Logger) -> dict:
    installed = bool(result.details.get("installed"))
    if result.segments and not installed:
        log.warning("Qwen-VL weights not installed: clips are kept and flagged (see `talkinghead models status`)")
    windows = [w for d in result.segments.values() for w in d.payload.get("windows", [])]
    return {
        "installed": installed, "clips": len(result.segments), "windows": len(windows),
        "flagged": sum(bool(w["flagged"]) for w in windows), "from_cache": sum(bool(w["cached"]) for w in windows),
        "examples": dg.MetadataValue.md("\n".join(f"- {w['caption']}" for w in windows[:5]) or "none"),
    }


_BUILDERS: dict[str, Callable] = {"asd": _asd, "speech": _speech, "flame": _flame, "captions": _captions}


def stage_metadata(outcome: StageOutcome, config: PipelineConfig, log: logging.Logger) -> dict:
    """The asset's output metadata for one stage run (or skip) on one source."""
    if outcome.result is None:
        return {"status": "disabled"}
    if isinstance(outcome.result, SourceRecord):
        return _faces(outcome.result, config, log)
    if outcome.result.skipped:
        return {"skipped": outcome.result.skipped}
    return _BUILDERS[outcome.stage](outcome.result, config, log)
