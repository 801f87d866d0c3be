"""The work folder of one source: where every stage's output lives, and its lock.

    <work>/sources/<id>/record.json        the face stage's SourceRecord
    <work>/sources/<id>/source_audio.wav   the source's 16 kHz mono audio from the one decode pass
    <work>/sources/<id>/<stage>.json       each later stage's StageResult
    <work>/sources/<id>/<key>.{mp4,wav,json,boxes.npy,...}   the clips and their members
    <work>/sources/.<id>.lock              held by whoever writes into the folder
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import ValidationError

from pipelines.atomic import file_lock
from pipelines.config import PipelineConfig
from pipelines.schema.records import SourceRecord

RECORD_FILE = "record.json"
SOURCE_AUDIO_FILE = "source_audio.wav"  # kept for the speech stage, which never decodes the source


def source_dir(config: PipelineConfig, source_id: str) -> Path:
    return config.paths.work_dir / "sources" / source_id


@contextmanager
def source_lock(config: PipelineConfig, source_id: str) -> Iterator[None]:
    """Exclusive use of one source's work folder.

    Every stage run holds it, so two materialisations of the same partition run one after
    the other instead of interleaving their writes.
    """
    folder = source_dir(config, source_id)
    with file_lock(folder.parent / f".{source_id}.lock"):
        yield


def load_record(config: PipelineConfig, source_id: str) -> SourceRecord | None:
    """The face stage's record, or None when the source has not been processed (or was
    processed under an older schema, which makes it stale)."""
    path = source_dir(config, source_id) / RECORD_FILE
    try:
        return SourceRecord.load(path) if path.exists() else None
    except ValidationError:
        return None
