"""Ingest: the input-folder sensor and the per-source probe asset."""

import dagster as dg

from assets.partitions import PER_SOURCE_GROUPS, SOURCE_PARTITIONS_NAME, source_partitions
from assets.resources import PipelineSettings, partition_source
from pipelines.config import PipelineConfig
from pipelines.ingest import SourceRegistry
from pipelines.faces.stage import probe_source


def register_sources(config: PipelineConfig, instance: dg.DagsterInstance) -> tuple[list[str], list[str]]:
    """Scan the input folder; return (all source ids, ids not yet known to the instance).

    The scan locks the registry file (see SourceRegistry.scan).
    """
    refs = SourceRegistry(config.paths.registry_path).scan(config.paths.input_dir, config.ingest.extensions)
    known = set(instance.get_dynamic_partitions(SOURCE_PARTITIONS_NAME))
    ids = [r.source_id for r in refs]
    return ids, [sid for sid in ids if sid not in known]


@dg.sensor(
    name="watch_input_folder",
    target=dg.AssetSelection.groups(*PER_SOURCE_GROUPS),
    minimum_interval_seconds=30,
    description="Registers one dynamic partition per new video in the input folder and requests its processing.",
)
def watch_input_folder(context: dg.SensorEvaluationContext, settings: PipelineSettings) -> dg.SensorResult:
    config = settings.load()
    try:
        _, new = register_sources(config, context.instance)
    except FileNotFoundError as error:
        return dg.SensorResult(skip_reason=str(error))
    if not new:
        return dg.SensorResult(skip_reason="no new source videos")
    context.log.info(f"registering {len(new)} new source(s): {', '.join(new[:10])}")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=sid, run_key=sid) for sid in new],
        dynamic_partitions_requests=[source_partitions.build_add_request(new)],
    )


@dg.asset(partitions_def=source_partitions, group_name="ingest", kinds={"ffmpeg"})
def source_probe(context: dg.AssetExecutionContext, settings: PipelineSettings) -> dict:
    """Container facts from ffprobe, or a rejection (unreadable, no audio, no video, too short)."""
    config = settings.load()
    source = partition_source(config, context.partition_key)
    probe, rejection = probe_source(source, config)
    meta = {"relpath": source.relpath, "sha256": source.sha256, "size_bytes": source.size_bytes}
    if rejection is not None:
        meta.update(status="rejected", reason=rejection.reason, detail=rejection.detail or "")
        context.log.warning(f"{source.relpath}: rejected at probe ({rejection.reason}: {rejection.detail})")
    else:
        meta.update(status="ok", duration_s=probe["duration_s"], resolution=f"{probe['width']}x{probe['height']}",
                    frame_rate=probe["frame_rate"], rotation_deg=probe["rotation_deg"],
                    audio=f"{probe['audio_codec']} {probe['audio_sample_rate']} Hz x{probe['audio_channels']}")
    context.add_output_metadata(meta)
    return {"source": source.info().model_dump(), "probe": probe,
            "rejection": rejection.model_dump(mode="json") if rejection is not None else None}
