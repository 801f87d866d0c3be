"""FLAME parameters and expression captions for every clip that passed the filters."""

import dagster as dg

from assets.partitions import source_partitions
from assets.resources import PipelineSettings, partition_source
from assets.speech import speech_analysis
from pipelines.records import SourceRecord


def _source(context: dg.AssetExecutionContext, settings: PipelineSettings):
    config = settings.load()
    return config, partition_source(config, context.partition_key)


@dg.asset(partitions_def=source_partitions, group_name="annotate", kinds={"pytorch"}, deps=[speech_analysis])
def flame_parameters(context: dg.AssetExecutionContext, settings: PipelineSettings, face_clips: dict) -> dict:
    """Per-frame FLAME parameters from SHeaP (six motion groups, raw and Savitzky-Golay smoothed)."""
    from pipelines.flame.stage import build_backend, run_flame_stage

    config, source = _source(context, settings)
    if not config.flame.enabled:
        return {"stage": "flame", "skipped": "disabled in config", "segments": {}}
    backend = build_backend(config)
    result = run_flame_stage(source, SourceRecord(**face_clips), config, backend)
    context.add_output_metadata({"installed": backend is not None, "clips": len(result["segments"]),
                                 "model": config.flame.model})
    if backend is None:
        context.log.warning("SHeaP weights not installed: clips are kept and flagged (see `talkinghead models status`)")
    return result


@dg.asset(partitions_def=source_partitions, group_name="annotate", kinds={"pytorch"}, deps=[flame_parameters])
def expression_captions(context: dg.AssetExecutionContext, settings: PipelineSettings, face_clips: dict) -> dict:
    """One expression caption per 200-frame window of each clip, cached across runs."""
    from pipelines.captions.stage import build_captioner, run_caption_stage

    config, source = _source(context, settings)
    if not config.captions.enabled:
        return {"stage": "captions", "skipped": "disabled in config", "segments": {}}
    captioner = build_captioner(config)
    result = run_caption_stage(source, SourceRecord(**face_clips), config, captioner)
    windows = [w for d in result["segments"].values() for w in d["payload"].get("windows", [])]
    context.add_output_metadata({
        "installed": captioner is not None, "clips": len(result["segments"]), "windows": len(windows),
        "flagged": sum(bool(w["flagged"]) for w in windows), "from_cache": sum(bool(w["cached"]) for w in windows),
        "examples": dg.MetadataValue.md("\n".join(f"- {w['caption']}" for w in windows[:5]) or "none"),
    })
    if captioner is None:
        context.log.warning("Qwen-VL weights not installed: clips are kept and flagged (see `talkinghead models status`)")
    return result
