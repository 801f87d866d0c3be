"""Processing one source end to end into its work folder, atomically.

Every outcome is a :class:`SourceRecord`: accepted segments with their files, or a
rejection with a machine-readable reason and the numbers that decided it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import traceback
from pathlib import Path

from pipelines.clips import ProgressFn, extract_face_clips
from pipelines.config import PipelineConfig
from pipelines.faces.detectors import FaceDetector
from pipelines.media import MediaRejection, ProbeInfo, probe
from pipelines.records import SourceRecord, SourceRef

RECORD_FILE = "record.json"


def source_dir(config: PipelineConfig, source_id: str) -> Path:
    return config.paths.work_dir / "sources" / source_id


def probe_source(source: SourceRef, config: PipelineConfig) -> tuple[dict | None, SourceRecord | None]:
    """(probe dict, None) for a usable source, or (None, rejection record)."""
    try:
        info = probe(source.path)
    except MediaRejection as rejection:
        return None, SourceRecord.rejected(source, rejection.reason, rejection.detail, rejection.numbers)
    if info.duration_s < config.ingest.min_duration_s:
        return None, SourceRecord.rejected(source, "source_too_short", f"{info.duration_s:.3f} s",
                                           {"duration_s": info.duration_s,
                                            "min_duration_s": config.ingest.min_duration_s}, info.as_dict())
    return info.as_dict(), None


def process_source(source: SourceRef, config: PipelineConfig, detector: FaceDetector,
                   progress: ProgressFn | None = None,
                   probed: tuple[dict | None, SourceRecord | None] | None = None) -> SourceRecord:
    """Probe, decode once, track faces and write clips for ``source``; publish atomically.

    ``probed`` is the result of :func:`probe_source` when the caller already has it.

    The work folder ``<work>/sources/<id>`` is replaced as a whole: it is built under a
    temporary name and renamed into place, so a crash never leaves a half-written clip
    visible and a re-run starts clean.
    """
    final = source_dir(config, source.source_id)
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{source.source_id}.tmp-", dir=final.parent))
    try:
        probe_dict, record = probed if probed is not None else probe_source(source, config)
        if record is None:
            try:
                record = extract_face_clips(source, ProbeInfo(**probe_dict), detector, config, stage, progress)
            except MediaRejection as rejection:
                record = SourceRecord.rejected(source, rejection.reason, rejection.detail, rejection.numbers, probe_dict)
            except Exception as error:  # one bad input must not stop the run: record it and go on
                record = SourceRecord.rejected(
                    source, "processing_error", f"{type(error).__name__}: {error}",
                    {"traceback_tail": traceback.format_exc().splitlines()[-3:]}, probe_dict)
        if record.status != "accepted":
            for child in stage.iterdir():
                child.unlink()
        (stage / RECORD_FILE).write_text(json.dumps(record.as_dict(), indent=1, sort_keys=True))
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


def load_record(config: PipelineConfig, source_id: str) -> SourceRecord | None:
    path = source_dir(config, source_id) / RECORD_FILE
    if not path.exists():
        return None
    return SourceRecord(**json.loads(path.read_text()))
