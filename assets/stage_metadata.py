"""What each stage asset shows in the Dagster UI, built from the stage's stored output."""

from __future__ import annotations

import base64
import logging
import statistics
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import dagster as dg

from pipelines.config import PipelineConfig
from pipelines.reports import asd_plot_png, preview_png
from pipelines.runner import StageOutcome
from pipelines.schema.records import ACCEPTED, SourceRecord, StageDecision, StageResult
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
        "shot_cuts": len(record.numbers.get("shot_cuts_s", [])),
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
    meta.update(_sync_summary(list(result.segments.values())))
    if result.details.get("plots"):
        meta["probability_plot"] = png_markdown(asd_plot_png(result.details["plots"], config.asd.threshold),
                                                "speaking probability")
    return meta


def _median(decisions: list[StageDecision], key: str) -> float | None:
    values = [float(d.numbers[key]) for d in decisions if isinstance(d.numbers.get(key), int | float)]
    return round(statistics.median(values), 3) if values else None


def _sync_summary(decisions: list[StageDecision]) -> dict:
    """Audio-video offset and confidence over the segments the sync check measured (none when it is off)."""
    measured = [d for d in decisions if "av_offset_frames" in d.numbers]
    if not measured:
        return {}
    offsets = Counter(int(d.numbers["av_offset_frames"]) for d in measured)
    return {"av_measured": len(measured),
            "av_offset_frames": dg.MetadataValue.json({str(k): v for k, v in sorted(offsets.items())}),
            "av_offset_frames_median": _median(measured, "av_offset_frames"),
            "av_confidence_median": _median(measured, "av_confidence"),
            "av_corrected": sum(bool(d.numbers.get("av_corrected")) for d in measured)}


def _decisions_summary(result: StageResult) -> dict:
    decisions = list(result.segments.values())
    return {"segments_decided": len(decisions), "accepted": sum(d.decision == ACCEPTED for d in decisions),
            "rejections": dg.MetadataValue.json(dict(Counter(d.reason for d in decisions if d.decision != ACCEPTED)))}


def _quality(result: StageResult, config: PipelineConfig, log: logging.Logger) -> dict:
    """Seconds failed per gate, median face size / upscale / sharpness, orientation labels."""
    decisions = list(result.segments.values())
    failed: Counter = Counter()
    for d in decisions:
        failed.update({k: float(v) for k, v in (d.numbers.get("failed_s") or {}).items()})
    meta = _decisions_summary(result)
    meta.update({
        "failed_seconds": dg.MetadataValue.json({k: round(v, 3) for k, v in sorted(failed.items())}),
        "kept_seconds": round(sum(float(d.numbers.get("kept_s", 0.0)) for d in decisions), 3),
        "dropped_seconds": round(sum(float(d.numbers.get("dropped_s", 0.0)) for d in decisions), 3),
        "orientations": dg.MetadataValue.json(dict(Counter(str(d.numbers["orientation"]) for d in decisions
                                                           if "orientation" in d.numbers))),
    })
    for key in ("face_px_median", "upscale_median", "sharpness_median"):
        value = _median(decisions, key)
        if value is not None:  # an absent median would show as a misleading 0 in the UI
            meta[key] = value
    return meta


def _generic(result: StageResult, config: PipelineConfig, log: logging.Logger) -> dict:
    """A stage without its own view: what it decided."""
    return _decisions_summary(result)


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


_BUILDERS: dict[str, Callable] = {"quality": _quality, "asd": _asd, "speech": _speech, "flame": _flame,
                                  "captions": _captions}


def stage_metadata(outcome: StageOutcome, config: PipelineConfig, log: logging.Logger) -> dict:
    """The asset's output metadata for one stage run (or skip) on one source."""
    if outcome.result is None:
        return {"status": "disabled"}
    if isinstance(outcome.result, SourceRecord):
        return _faces(outcome.result, config, log)
    if outcome.result.skipped:
        return {"skipped": outcome.result.skipped}
    # A stage registered after this table was written still gets a summary of its decisions.
    return _BUILDERS.get(outcome.stage, _generic)(outcome.result, config, log)
