"""Active speaker detection: keep only the frames where the visible face is the one speaking."""

from functools import lru_cache

import dagster as dg

from assets.faces import _png_markdown
from assets.partitions import source_partitions
from assets.resources import PipelineSettings, partition_source
from pipelines.config import AsdConfig
from pipelines.models import ModelStore
from pipelines.records import SourceRecord
from pipelines.reports import asd_plot_png


@lru_cache(maxsize=2)
def _cached_scorer(asd: AsdConfig, model_dir: str):
    from pipelines.asd.score import ActiveSpeakerScorer

    return ActiveSpeakerScorer(ModelStore(model_dir).path(asd.model), device=asd.device,
                               window_frames=asd.window_frames, overlap_frames=asd.overlap_frames)


@dg.asset(partitions_def=source_partitions, group_name="asd", kinds={"pytorch"})
def active_speakers(context: dg.AssetExecutionContext, settings: PipelineSettings, face_clips: dict) -> dict:
    """Light-ASD speaking probability per frame of every face track; segments cut to the speaking frames."""
    from pipelines.asd.stage import run_asd_stage

    config = settings.load()
    if not config.asd.enabled:
        context.add_output_metadata({"status": "disabled"})
        return {"stage": "asd", "skipped": "disabled in config", "segments": {}}
    source = partition_source(config, context.partition_key)
    record = SourceRecord(**face_clips)
    result, plots = run_asd_stage(source, record, config, _cached_scorer(config.asd, str(config.paths.model_dir)))
    per_track = {key: {k: d["numbers"][k] for k in ("mean_probability", "kept_s", "dropped_s")}
                 | {"decision": d["decision"], "reason": d["reason"], "clips": len(d.get("children", [])) or
                    int(d["decision"] == "accepted")}
                 for key, d in result["segments"].items()}
    meta = {"segments_scored": len(per_track), "per_track": dg.MetadataValue.json(per_track),
            "kept_seconds": round(sum(v["kept_s"] for v in per_track.values()), 3),
            "dropped_seconds": round(sum(v["dropped_s"] for v in per_track.values()), 3)}
    if plots:
        meta["probability_plot"] = _png_markdown(asd_plot_png(plots, config.asd.threshold), "speaking probability")
    if "skipped" in result:
        meta["skipped"] = result["skipped"]
    context.add_output_metadata(meta)
    return result
