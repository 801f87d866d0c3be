"""The face stage: probe, decode once, track faces and write the clips of one source.

Every outcome is a :class:`SourceRecord`: accepted segments with their files, or a
rejection with a machine-readable reason and the numbers that decided it. The work
folder is built under a temporary name and renamed into place as a whole.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import traceback
from pathlib import Path

from pipelines.config import PipelineConfig
from pipelines.faces.clips import extract_face_clips
from pipelines.faces.detectors import FaceDetector, build_detector
from pipelines.ingest import probe_limits
from pipelines.media.decode import MediaRejection, ProbeInfo, probe
from pipelines.models import ModelStore
from pipelines.schema.records import ACCEPTED, SourceRecord, SourceRef
from pipelines.stage_spec import ProgressFn, StageContext, StageSpec
from pipelines.workdir import RECORD_FILE, source_dir, source_lock

def _remove_leftovers(final: Path) -> None:
    """Half-built or half-replaced folders of a writer that died (only called under the lock)."""
    for pattern in (f".{final.name}.tmp-*", f".{final.name}.old-*"):
        for leftover in final.parent.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)


def probe_source(source: SourceRef, config: PipelineConfig) -> tuple[dict | None, SourceRecord | None]:
    """(probe dict, None) for a usable source, or (None, rejection record)."""
    try:
        info = probe(source.path)
    except MediaRejection as rejection:
        return None, SourceRecord.rejected(source, rejection.reason, rejection.detail, rejection.numbers)
    limit = probe_limits(info, config.ingest)
    if limit is not None:
        return None, SourceRecord.rejected(source, limit.reason, limit.detail, limit.numbers, info.as_dict())
    return info.as_dict(), None


def process_source(source: SourceRef, config: PipelineConfig, detector: FaceDetector,
                   progress: ProgressFn | None = None, fingerprint: str = "") -> SourceRecord:
    """Probe, decode once, track faces and write clips for ``source``; publish atomically.

    ``fingerprint`` (from the runner) is stored in the record. The work folder ``<work>/sources/<id>`` is replaced as a whole: it is built under a
    temporary name and renamed into place, so a crash never leaves a half-written clip
    visible and a re-run starts clean. The source's lock is held throughout.
    """
    final = source_dir(config, source.source_id)
    final.parent.mkdir(parents=True, exist_ok=True)
    with source_lock(config, source.source_id):
        _remove_leftovers(final)
        return _build_and_publish(source, config, detector, progress, fingerprint, final)


def _build_and_publish(source: SourceRef, config: PipelineConfig, detector: FaceDetector,
                       progress: ProgressFn | None, fingerprint: str, final: Path) -> SourceRecord:
    stage = Path(tempfile.mkdtemp(prefix=f".{source.source_id}.tmp-", dir=final.parent))
    os.chmod(stage, 0o755)  # mkdtemp makes 0700; the published folder is meant to be shared
    try:
        probe_dict, record = probe_source(source, config)
        if record is None:
            try:
                record = extract_face_clips(source, ProbeInfo(**probe_dict), detector, config, stage, progress)
            except MediaRejection as rejection:
                record = SourceRecord.rejected(source, rejection.reason, rejection.detail, rejection.numbers, probe_dict)
            except Exception as error:  # one bad input must not stop the run: record it and go on
                record = SourceRecord.rejected(
                    source, "processing_error", f"{type(error).__name__}: {error}",
                    {"traceback_tail": traceback.format_exc().splitlines()[-3:]}, probe_dict)
        if record.status != ACCEPTED:
            for child in stage.iterdir():
                child.unlink()
        record.fingerprint = fingerprint
        (stage / RECORD_FILE).write_bytes(record.dumps())
        _swap_into_place(stage, final)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return record


def _swap_into_place(stage: Path, final: Path) -> None:
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        old.rmdir()
        final.rename(old)
    stage.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_backend(config: PipelineConfig) -> FaceDetector:
    """The configured face detector (SCRFD or MediaPipe) from the model directory."""
    return build_detector(config.faces, ModelStore(config.paths.model_dir))


def run(ctx: StageContext) -> SourceRecord:
    return process_source(ctx.source, ctx.config, ctx.backend, ctx.progress, ctx.fingerprint)


SPEC = StageSpec(
    name="faces", needs=(), config_sections=("faces", "ingest", "tracking", "shots", "detection_schedule", "crops", "audio", "encode"), version="5",
    build_backend=build_backend, run=run,
    description="Face tracks of one source, cut where the face is missing over the max gap, as square crops.",
)
