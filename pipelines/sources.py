"""Processing one source end to end into its work folder, atomically.

Every outcome is a :class:`SourceRecord`: accepted segments with their files, or a
rejection with a machine-readable reason and the numbers that decided it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipelines.atomic import file_lock
from pipelines.clips import ProgressFn, extract_face_clips
from pipelines.config import PipelineConfig
from pipelines.faces.detectors import FaceDetector
from pipelines.ingest import probe_limits
from pipelines.media.decode import MediaRejection, ProbeInfo, probe
from pipelines.records import SourceRecord, SourceRef

RECORD_FILE = "record.json"


def source_dir(config: PipelineConfig, source_id: str) -> Path:
    return config.paths.work_dir / "sources" / source_id


@contextmanager
def source_lock(config: PipelineConfig, source_id: str) -> Iterator[None]:
    """Exclusive use of one source's work folder (``<work>/sources/.<id>.lock``).

    Every stage that writes into the folder holds it, so two materialisations of the same
    partition run one after the other instead of interleaving their writes.
    """
    folder = source_dir(config, source_id)
    with file_lock(folder.parent / f".{source_id}.lock"):
        yield


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
                   progress: ProgressFn | None = None,
                   probed: tuple[dict | None, SourceRecord | None] | None = None) -> SourceRecord:
    """Probe, decode once, track faces and write clips for ``source``; publish atomically.

    ``probed`` is the result of :func:`probe_source` when the caller already has it.

    The work folder ``<work>/sources/<id>`` is replaced as a whole: it is built under a
    temporary name and renamed into place, so a crash never leaves a half-written clip
    visible and a re-run starts clean. The source's lock is held throughout.
    """
    final = source_dir(config, source.source_id)
    final.parent.mkdir(parents=True, exist_ok=True)
    with source_lock(config, source.source_id):
        _remove_leftovers(final)
        return _build_and_publish(source, config, detector, progress, probed, final)


def _build_and_publish(source: SourceRef, config: PipelineConfig, detector: FaceDetector,
                       progress: ProgressFn | None, probed: tuple[dict | None, SourceRecord | None] | None,
                       final: Path) -> SourceRecord:
    stage = Path(tempfile.mkdtemp(prefix=f".{source.source_id}.tmp-", dir=final.parent))
    os.chmod(stage, 0o755)  # mkdtemp makes 0700; the published folder is meant to be shared
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
