"""One stage of the scale bench over every source of a data folder, with its model calls timed.

This is the child side: ``bench_scale.py --worker STAGE`` runs :func:`run_stage` in a fresh
process so that its peak memory is the stage's own.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from bench.timed_backends import TimedBackends
from pipelines import runner
from pipelines.config import PipelineConfig
from pipelines.ingest import SourceRegistry
from pipelines.media import decode as media
from pipelines.schema.records import ACCEPTED, SourceRecord, SourceRef
from pipelines.speech.base import SAMPLE_RATE as SPEECH_RATE
from pipelines.shards import write_shards
from pipelines.workdir import load_record, source_dir

STAGES = ("face_clips", "quality", "asd", "speech", "flame", "captions", "shards")
MODEL_FREE = frozenset({"quality", "shards"})  # stages that load no model: always "installed"
RUNNER_NAMES = {"face_clips": "faces"}  # bench stage -> the runner's stage name, where they differ


def _scan(config: PipelineConfig) -> list[SourceRef]:
    return SourceRegistry(config.paths.registry_path).scan(config.paths.input_dir, config.ingest.extensions)


def _load_models(name: str, backends: TimedBackends) -> Any:
    """The stage's backend, loaded now (lazy loaders forced) and its timers reset."""
    backend = backends.get(name)
    if name == "faces":
        backend.detect(np.zeros((288, 360, 3), np.uint8))  # session initialisation, not charged to the video
    elif name == "speech":
        if backend.identifier is not None:
            backend.identifier.identify("warm up the language models with a sentence")  # lingua loads lazily
        # Whisper, silero VAD and the first CTranslate2 and torch calls initialise on first use:
        # one second of silence through each, not charged to the video (as the detector above).
        silence = np.zeros(SPEECH_RATE, np.float32)
        backend.activity.activity(silence, SPEECH_RATE)
        if backend.transcriber is not None:
            getattr(backend.transcriber, "transcribe_clip", backend.transcriber.transcribe)(silence, SPEECH_RATE)
    elif name == "flame" and backend is not None:
        backend.module  # noqa: B018 -- the TorchScript file loads on first use
    elif name == "captions" and backend is not None:
        getattr(backend, "_load", lambda: None)()
    backends.reset()
    return backend


def _face_facts(config: PipelineConfig, records: list[SourceRecord]) -> dict:
    frames, sides, seconds = 0, [], 0.0
    for record in records:
        for seg in record.accepted_segments():
            sample = json.loads((source_dir(config, record.source_id) / seg.files["json"]).read_text())
            frames += int(sample["video"]["frames"])
            sides.append(float(seg.numbers["crop_side_px"]["mean"]))
            seconds += float(seg.numbers["duration_s"])
    segments = [seg for record in records for seg in record.segments]
    return {"sources": len(records), "segments": len(segments),
            "accepted_segments": sum(s.status == ACCEPTED for s in segments),
            "longest_segment_s": max((float(s.numbers["duration_s"]) for s in segments), default=0.0),
            "clip_seconds": round(seconds, 3), "output_frames": frames,
            "crop_side_px": float(np.mean(sides)) if sides else None,
            "statuses": [r.status for r in records]}


def _run_with_runner(name: str, refs: list[SourceRef], config: PipelineConfig,
                     backends: TimedBackends) -> tuple[float, dict]:
    """The stage on every source through the stage runner, re-run even when current; its
    seconds (the runner's, summed) and facts."""
    outcomes = [runner.run_stage(name, ref, config, backends, force=True) for ref in refs]
    seconds = sum(outcome.seconds for outcome in outcomes)
    if name != "faces":
        return seconds, {}
    return seconds, _face_facts(config, [outcome.result for outcome in outcomes])


def _run_shards(refs: list[SourceRef], config: PipelineConfig) -> tuple[float, dict]:
    start = time.perf_counter()
    summary = write_shards([load_record(config, ref.source_id) for ref in refs], config)
    seconds = time.perf_counter() - start
    return seconds, {"shards": len(summary.shards), "samples": sum(s["samples"] for s in summary.shards),
                     "bytes": sum(s["bytes"] for s in summary.shards),
                     "sha256": [s["sha256"] for s in summary.shards]}


def run_stage(stage: str, config: PipelineConfig) -> dict:
    """Run one stage over every source of ``config``'s input folder; its timings and facts.

    The face stage registers the sources; later stages read the records and stage files
    the earlier ones left in the data folder. Every model stage goes through the stage runner.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; one of {STAGES}")
    name = RUNNER_NAMES.get(stage, stage)
    media.DECODE_COUNTS.clear()
    start = time.perf_counter()
    refs = _scan(config)
    backends = TimedBackends(config)
    installed = stage in MODEL_FREE or _load_models(name, backends) is not None
    load_s = time.perf_counter() - start
    try:
        wall, facts = _run_shards(refs, config) if stage == "shards" else \
            _run_with_runner(name, refs, config, backends)
    finally:
        runner.close_backends()  # as when the stage's child process ends
    model_s, calls = backends.model_time(name)
    return {"stage": stage, "wall_s": wall, "load_s": load_s, "model_s": model_s, "model_calls": calls,
            "non_model_s": wall - model_s, "decodes": sum(media.DECODE_COUNTS.values()),
            "model_installed": installed, **facts}
