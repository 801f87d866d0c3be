"""The clips to rate: every version of every sample, from a folder of versions or from the shards.

* :func:`versions_from_folder` - ``<versions_dir>/<sample>/<version>.mp4`` (e.g. the original
  and three generators per sample);
* :func:`versions_from_shards` - the accepted clips in the shards, one version
  (``original``) per sample, extracted to ``<annotation_dir>/clips`` (outside Label Studio's
  document root: annotators reach clips only through their blinded links);
* :func:`collect_versions` - whichever of the two the config asks for.
"""

from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from pipelines.atomic import atomic_write_bytes
from pipelines.config import PipelineConfig
from pipelines.schema.index import INDEX_FILE, MissingShardIndexError, ShardIndex, ShardIndexError, shards_lock
from pipelines.schema.sample import SampleRecord

from .locations import extracted_clips_folder

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".m4v")
SHARDS_VERSION = "original"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class AnnotationInputError(ValueError):
    """The versions to rate cannot be used as given (missing folder, bad names, no clips)."""


@dataclass(frozen=True)
class VersionClip:
    sample: str
    version: str
    path: Path
    transcript: str | None = None


def versions_from_folder(folder: Path) -> list[VersionClip]:
    """``<folder>/<sample>/<version>.<ext>``, sorted; names must be plain (they become task keys)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AnnotationInputError(f"versions folder {folder} does not exist")
    clips = []
    for sample_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for path in sorted(sample_dir.iterdir()):
            if path.suffix.lower() not in VIDEO_EXTENSIONS:
                continue
            if not _SAFE_NAME.match(sample_dir.name) or not _SAFE_NAME.match(path.stem):
                raise AnnotationInputError(
                    f"{path}: sample and version names may use letters, digits, '.', '_' and '-' only"
                )
            if path.stat().st_size == 0:
                raise AnnotationInputError(f"{path} is empty")
            clips.append(VersionClip(sample_dir.name, path.stem, path))
    if not clips:
        raise AnnotationInputError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) under {folder}/<sample>/")
    return clips


def _transcript(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], key: str) -> str | None:
    """The speech stage's transcript in the sample's JSON, when the stage ran."""
    if f"{key}.json" not in members:
        return None
    try:
        record = SampleRecord.load(tar.extractfile(members[f"{key}.json"]).read())
    except ValueError as error:
        raise AnnotationInputError(f"sample {key}: its JSON does not match the sample schema: {error}") from None
    return (record.speech or {}).get("transcript") or None


def versions_from_shards(shards_dir: Path, out_folder: Path) -> list[VersionClip]:
    """Extract each accepted clip's mp4 to ``<out_folder>/<key>/original.mp4`` (unchanged files
    are left alone) and return one version per sample, with its transcript when present.

    The samples are the ones ``index.json`` lists, read under the shard folder's shared lock
    so a packer never swaps a shard out from under the extraction."""
    shards_dir = Path(shards_dir)
    if not (shards_dir / INDEX_FILE).exists():
        raise AnnotationInputError(f"no shards yet: {shards_dir / INDEX_FILE} is missing (materialise dataset_shards)")
    clips = []
    with shards_lock(shards_dir, shared=True):
        try:
            index = ShardIndex.load(shards_dir)
        except (MissingShardIndexError, ShardIndexError) as error:
            raise AnnotationInputError(f"cannot read the shards to rate: {error}") from None
        for name, path in zip(index.names, index.paths()):
            with tarfile.open(path) as tar:
                members = {m.name: m for m in tar.getmembers()}
                for key in index.keys_in(name):
                    if f"{key}.mp4" not in members:
                        raise AnnotationInputError(f"{path}: sample {key} listed in {INDEX_FILE} has no mp4")
                    data = tar.extractfile(members[f"{key}.mp4"]).read()
                    target = Path(out_folder) / key / f"{SHARDS_VERSION}.mp4"
                    if not (target.exists() and target.read_bytes() == data):
                        atomic_write_bytes(target, data)
                    clips.append(VersionClip(key, SHARDS_VERSION, target, _transcript(tar, members, key)))
    if not clips:
        raise AnnotationInputError(f"{shards_dir / INDEX_FILE} lists no samples: no clip was accepted")
    return clips


def collect_versions(config: PipelineConfig) -> list[VersionClip]:
    if config.annotation.versions_dir is not None:
        return versions_from_folder(config.annotation.versions_dir)
    return versions_from_shards(config.paths.shards_dir, extracted_clips_folder(config))
