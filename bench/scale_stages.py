"""One stage of the scale bench over every source of a data folder, with its model calls timed.

This is the child side: ``bench_scale.py --worker STAGE`` runs :func:`run_stage` in a fresh
process so that its peak memory is the stage's own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bench.bench_pipeline import TimedDetector
from pipelines.config import PipelineConfig
from pipelines.media import decode as media

STAGES = ("face_clips", "asd", "speech", "flame", "captions", "shards")


class TimedCalls:
    """Proxy that adds the time spent in the named methods of ``inner``; all else passes through."""

    def __init__(self, inner: Any, methods: Iterable[str]):
        self._inner = inner
        self._methods = frozenset(methods)
        self.seconds = 0.0
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if name not in self._methods:
            return value

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return value(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1

        return timed


@dataclass
class StageContext:
    config: PipelineConfig
    refs: list  # SourceRef
    records: list  # SourceRecord


def _context(config: PipelineConfig, scan: bool) -> StageContext:
    from pipelines.ingest import SourceRegistry
    from pipelines.sources import load_record

    registry = SourceRegistry(config.paths.registry_path)
    refs = registry.scan(config.paths.input_dir, config.ingest.extensions)
    records = [] if scan else [load_record(config, ref.source_id) for ref in refs]
    return StageContext(config, refs, records)


def _load_models(stage: str, config: PipelineConfig):
    """The stage's model(s), loaded now (lazy loaders forced), wrapped to time their calls."""
    from pipelines.models import ModelStore

    store = ModelStore(config.paths.model_dir)
    if stage == "face_clips":
        import numpy as np

        from pipelines.faces.detectors import build_detector

        detector = TimedDetector(build_detector(config.faces, store))
        detector.detect(np.zeros((288, 360, 3), np.uint8))  # session initialisation, not charged to the video
        return detector
    if stage == "asd":
        from pipelines.asd.score import ActiveSpeakerScorer

        return TimedCalls(ActiveSpeakerScorer(store.path(config.asd.model), device=config.asd.device,
                                              window_frames=config.asd.window_frames,
                                              overlap_frames=config.asd.overlap_frames), ["probabilities"])
    if stage == "speech":
        from pipelines.speech.stage import build_backends

        backends = build_backends(config)
        if backends.identifier is not None:
            backends.identifier.identify("warm up the language models with a sentence")  # lingua loads lazily
        timers = {"activity": TimedCalls(backends.activity, ["activity"])}
        backends.activity = timers["activity"]
        if backends.transcriber is not None:
            timers["transcriber"] = backends.transcriber = TimedCalls(backends.transcriber,
                                                                      ["transcribe", "detect_language"])
        if backends.identifier is not None:
            timers["identifier"] = backends.identifier = TimedCalls(backends.identifier, ["identify"])
        return backends, timers
    if stage == "flame":
        from pipelines.flame.stage import build_backend

        backend = build_backend(config)
        if backend is None:
            return None
        backend.module  # noqa: B018 -- the TorchScript file loads on first use
        return TimedCalls(backend, ["predict"])
    if stage == "captions":
        from pipelines.captions.stage import build_captioner

        captioner = build_captioner(config)
        if captioner is None:
            return None
        getattr(captioner, "_load", lambda: None)()
        return TimedCalls(captioner, ["caption"])
    return None


def _model_time(models: Any) -> tuple[float, int]:
    if models is None:
        return 0.0, 0
    if isinstance(models, tuple):  # speech: (backends, timers)
        timers = models[1].values()
        return sum(t.seconds for t in timers), sum(t.calls for t in timers)
    return models.seconds, models.calls


def _run_face_clips(ctx: StageContext, detector: TimedDetector) -> dict:
    import numpy as np

    from pipelines.sources import process_source, source_dir

    ctx.records = [process_source(ref, ctx.config, detector) for ref in ctx.refs]
    frames, sides, seconds = 0, [], 0.0
    for record in ctx.records:
        for seg in record.accepted_segments():
            sample = json.loads((source_dir(ctx.config, record.source_id) / seg["files"]["json"]).read_text())
            frames += int(sample["video"]["frames"])
            sides.append(float(seg["numbers"]["crop_side_px"]["mean"]))
            seconds += float(seg["numbers"]["duration_s"])
    segments = [seg for record in ctx.records for seg in record.segments]
    return {"sources": len(ctx.records), "segments": len(segments),
            "accepted_segments": sum(s["status"] == "accepted" for s in segments),
            "longest_segment_s": max((float(s["numbers"]["duration_s"]) for s in segments), default=0.0),
            "clip_seconds": round(seconds, 3), "output_frames": frames,
            "crop_side_px": float(np.mean(sides)) if sides else None,
            "statuses": [r.status for r in ctx.records]}


def _run_later_stage(stage: str, ctx: StageContext, models: Any) -> dict:
    config = ctx.config
    for ref, record in zip(ctx.refs, ctx.records):
        if stage == "asd":
            from pipelines.asd.stage import run_asd_stage

            run_asd_stage(ref, record, config, models)
        elif stage == "speech":
            from pipelines.speech.stage import run_speech_stage

            run_speech_stage(ref, record, config, models[0])
        elif stage == "flame":
            from pipelines.flame.stage import run_flame_stage

            run_flame_stage(ref, record, config, models)
        elif stage == "captions":
            from pipelines.captions.stage import run_caption_stage

            run_caption_stage(ref, record, config, models)
    return {}


def _run_shards(ctx: StageContext) -> dict:
    from pipelines.shards import write_shards

    summary = write_shards(ctx.records, ctx.config)
    return {"shards": len(summary.shards), "samples": sum(s["samples"] for s in summary.shards),
            "bytes": sum(s["bytes"] for s in summary.shards),
            "sha256": [s["sha256"] for s in summary.shards]}


def run_stage(stage: str, config: PipelineConfig) -> dict:
    """Run one stage over every source of ``config``'s input folder; its timings and facts.

    The face stage registers the sources; later stages read the records and stage files
    the earlier ones left in the data folder.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; one of {STAGES}")
    media.DECODE_COUNTS.clear()
    start = time.perf_counter()
    ctx = _context(config, scan=stage == "face_clips")
    models = _load_models(stage, config)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    try:
        if stage == "face_clips":
            facts = _run_face_clips(ctx, models)
        elif stage == "shards":
            facts = _run_shards(ctx)
        else:
            facts = _run_later_stage(stage, ctx, models)
    finally:
        if stage == "face_clips":
            models.close()
    wall = time.perf_counter() - start
    model_s, calls = _model_time(models)
    return {"stage": stage, "wall_s": wall, "load_s": load_s, "model_s": model_s, "model_calls": calls,
            "non_model_s": wall - model_s, "decodes": sum(media.DECODE_COUNTS.values()),
            "model_installed": stage in ("face_clips", "shards") or models is not None, **facts}
