"""Speech: overlap and language rules per candidate segment (FlowPortrait appendix B)."""

import time
from collections import Counter
from functools import lru_cache

import dagster as dg

from assets.asd import active_speakers
from assets.partitions import source_partitions
from assets.resources import PipelineSettings, partition_source
from pipelines.config import PipelineConfig, SpeechConfig
from pipelines.records import SourceRecord
from pipelines.speech.stage import SpeechBackends, build_backends, run_speech_stage


@lru_cache(maxsize=2)
def _cached_backends(speech: SpeechConfig, model_dir: str) -> SpeechBackends:
    return build_backends(PipelineConfig(speech=speech, paths={"model_dir": model_dir}))


@dg.asset(partitions_def=source_partitions, group_name="speech", kinds={"pytorch"}, deps=[active_speakers])
def speech_analysis(context: dg.AssetExecutionContext, settings: PipelineSettings, face_clips: dict) -> dict:
    """Speaker activity, transcript and language of one source; a speech decision per face segment."""
    config = settings.load()
    if not config.speech.enabled:
        context.add_output_metadata({"status": "disabled"})
        return {"stage": "speech", "skipped": "disabled in config", "segments": {}}
    source = partition_source(config, context.partition_key)
    record = SourceRecord(**face_clips)
    started = time.monotonic()
    result = run_speech_stage(source, record, config, _cached_backends(config.speech, str(config.paths.model_dir)))
    spent = time.monotonic() - started
    decisions = list(result["segments"].values())
    meta = {
        "backends": dg.MetadataValue.json(result["backends"]),
        "segments_decided": len(decisions),
        "accepted": sum(d["decision"] == "accepted" for d in decisions),
        "rejections": dict(Counter(d["reason"] for d in decisions if d["decision"] != "accepted")),
        "languages": dict(Counter(d["numbers"]["language"] for d in decisions)),
        "seconds_spent": round(spent, 3),
    }
    if "audio_seconds" in result:
        meta.update(speech_seconds=result["source"]["speech_s"], overlap_ratio=result["source"]["overlap_ratio"],
                    realtime_factor=round(spent / max(result["audio_seconds"], 1e-6), 4))
    if "skipped" in result:
        meta["skipped"] = result["skipped"]
    context.add_output_metadata(meta)
    return result
