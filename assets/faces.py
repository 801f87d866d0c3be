"""Faces: one decode pass per source -> tracked, cropped 384 px / 24 fps clips with 16 kHz audio."""

import base64
from collections import Counter
from pathlib import Path

import dagster as dg

from assets.partitions import source_partitions
from assets.resources import PipelineSettings, face_detector, partition_source
from pipelines.records import SourceRecord
from pipelines.reports import preview_png
from pipelines.sources import process_source, source_dir


def _png_markdown(png: bytes, alt: str) -> dg.MetadataValue:
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


@dg.asset(partitions_def=source_partitions, group_name="faces", kinds={"onnx", "ffmpeg"})
def face_clips(context: dg.AssetExecutionContext, settings: PipelineSettings, source_probe: dict) -> dict:
    """Face tracks of one source, cut where the face is missing over the max gap, as square crops.

    Returns the source record: every candidate segment accepted or rejected with its numbers.
    """
    config = settings.load()
    source = partition_source(config, context.partition_key)
    rejection = SourceRecord(**source_probe["rejection"]) if source_probe["rejection"] else None

    def progress(done_s: float, total_s: float) -> None:
        context.log.info(f"{source.relpath}: decoded {done_s:.1f} / {total_s:.1f} s")

    detector = face_detector(config) if rejection is None else None
    record = process_source(source, config, detector, progress, probed=(source_probe["probe"], rejection))
    accepted = record.accepted_segments()
    meta: dict = {
        "status": record.status,
        "reason": record.reason or "",
        "segments": len(record.segments),
        "accepted_segments": len(accepted),
        "accepted_seconds": round(sum(s["numbers"]["duration_s"] for s in accepted), 3),
        "segment_rejections": dict(Counter(s["reason"] for s in record.segments if s["status"] != "accepted")),
        "work_dir": dg.MetadataValue.path(str(source_dir(config, source.source_id))),
    }
    if record.status != "accepted":
        meta["detail"] = record.detail or ""
        context.log.warning(f"{source.relpath}: rejected ({record.reason}: {record.detail})")
    if accepted:
        meta["detector"] = detector.name
        mp4 = Path(source_dir(config, source.source_id)) / accepted[0]["files"]["mp4"]
        meta["preview"] = _png_markdown(preview_png(mp4), accepted[0]["key"])
    context.add_output_metadata(meta)
    return record.as_dict()
