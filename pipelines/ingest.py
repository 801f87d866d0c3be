"""Finding source videos, giving each a stable id, and the limits a probed source must meet.

The id is ``<slug of the file stem>-<first 10 hex of the content sha256>``: readable in
the Dagster UI, stable across renames of the folder, and distinct for distinct content.
Hashes are cached by (path, size, mtime) so a sensor tick does not re-read every file.

Every other file in the input folder is accounted for too: the scan records why it is not
a source (``unsupported_extension``, ``sidecar_transcript``, ``session_sidecar``, ``duplicate_content``,
``symlink_outside_input``, ``broken_symlink``, ``not_a_regular_file``), and the manifest lists it. Only hidden
files (a leading dot: partial downloads, editor files) are passed over silently.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from pathlib import Path

from tqdm import tqdm

from pipelines.atomic import atomic_write_text, file_lock
from pipelines.config import IngestConfig
from pipelines.conversation.session import SIDECAR_SUFFIX as SESSION_SIDECAR_SUFFIX
from pipelines.media.decode import MediaRejection, ProbeInfo
from pipelines.models import sha256_file
from pipelines.schema.manifest import FileRow
from pipelines.schema.records import SourceRef
from pipelines.speech.sidecar import SIDECAR_EXTENSIONS

_SLUG = re.compile(r"[^a-z0-9]+")


def slugify(stem: str, max_len: int = 40) -> str:
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    slug = _SLUG.sub("-", ascii_stem.lower()).strip("-")
    return (slug[:max_len].rstrip("-")) or "video"


def list_candidates(input_dir: Path, extensions: tuple[str, ...]) -> list[Path]:
    """Files under ``input_dir`` with a video extension, sorted; hidden files skipped."""
    exts = {e.lower() for e in extensions}
    return [path for path in _all_files(input_dir) if path.suffix.lower() in exts]


def _skip(reason: str, detail: str) -> dict:
    return {"reason": reason, "detail": detail}


def classify_files(input_dir: Path, extensions: tuple[str, ...]) -> tuple[list[Path], dict[str, dict]]:
    """(candidate videos, {relpath: why skipped}) for every non-hidden file under ``input_dir``.

    A symlink is taken only when it resolves inside ``input_dir``; one pointing outside is
    never followed, so a link cannot pull files from elsewhere into the dataset.
    """
    input_dir = Path(input_dir)
    root = input_dir.resolve()
    exts = {e.lower() for e in extensions}
    videos, others = [], []
    for path in _all_files(input_dir):
        (videos if path.suffix.lower() in exts else others).append(path)
    stems = {p.with_suffix("") for p in videos}
    candidates: list[Path] = []
    skipped: dict[str, dict] = {}
    for path in sorted(videos + others):
        relpath = path.relative_to(input_dir).as_posix()
        target = Path(os.path.realpath(path))
        if path.is_symlink() and not target.exists():
            skipped[relpath] = _skip("broken_symlink", "its target does not exist")
            continue
        if path.is_symlink() and not target.is_relative_to(root):
            skipped[relpath] = _skip("symlink_outside_input", "points outside the input folder; not followed")
            continue
        if target.is_dir():
            continue  # a link to a folder inside: its files are scanned under their own paths
        if not target.is_file():
            # A FIFO or device would block the hash, or never end.
            skipped[relpath] = _skip("not_a_regular_file", "not a regular file")
            continue
        if path.suffix.lower() in exts:
            candidates.append(path)
        elif path.suffix.lower() in SIDECAR_EXTENSIONS and path.with_suffix("") in stems:
            skipped[relpath] = _skip("sidecar_transcript", "transcript of the video with the same name")
        elif path.name.lower().endswith(SESSION_SIDECAR_SUFFIX):
            skipped[relpath] = _skip("session_sidecar", "links the videos of one conversation (conversation mode)")
        else:
            skipped[relpath] = _skip("unsupported_extension",
                                     f"{path.suffix or 'no extension'} is not one of ingest.extensions")
    # Real files first, then links: identical content registers under the file's own name.
    return sorted(candidates, key=lambda p: (p.is_symlink(), p)), skipped


def _all_files(input_dir: Path) -> list[Path]:
    """Non-hidden entries below ``input_dir`` that are not plain folders (links to folders included, not entered)."""
    found = []
    for root, dirs, files in os.walk(input_dir, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / name for name in dirs if (Path(root) / name).is_symlink()]
        found += [Path(root) / name for name in sorted(files) if not name.startswith(".")]
    return found


def probe_limits(info: ProbeInfo, config: IngestConfig) -> MediaRejection | None:
    """The first configured limit a probed source breaks, as a rejection; None when it meets them all."""
    pixels = info.width * info.height
    if pixels > config.max_frame_pixels:
        return MediaRejection("resolution_too_large", f"{info.width}x{info.height} has more than "
                              f"{config.max_frame_pixels} pixels per frame", width=info.width, height=info.height,
                              max_frame_pixels=config.max_frame_pixels)
    if info.duration_s > config.max_duration_s:
        return MediaRejection("source_too_long", f"{info.duration_s:.1f} s is longer than {config.max_duration_s:g} s",
                              duration_s=info.duration_s, max_duration_s=config.max_duration_s)
    shortest = min(info.duration_s, info.video_duration_s or info.duration_s)
    if shortest < config.min_duration_s:
        return MediaRejection("source_too_short", f"{info.duration_s:.3f} s, of which {info.video_duration_s:.3f} s "
                              "of video", duration_s=info.duration_s, video_duration_s=info.video_duration_s,
                              min_duration_s=config.min_duration_s)
    return None


class SourceRegistry:
    """JSON file mapping source id -> source; the sensor writes it, assets read it."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def _read(self) -> dict:
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def load(self) -> dict[str, dict]:
        return self._read().get("sources", {})

    def skipped(self) -> dict[str, dict]:
        """Files of the input folder at the last scan that are not sources: relpath -> reason, detail."""
        return self._read().get("skipped", {})

    def lookup(self, source_id: str, input_dir: Path) -> SourceRef:
        entry = self.load().get(source_id)
        if entry is None:
            raise KeyError(f"source {source_id!r} is not registered in {self.path}; run the sensor or `talkinghead scan`")
        return SourceRef(source_id=source_id, path=Path(input_dir) / entry["relpath"], relpath=entry["relpath"],
                         sha256=entry["sha256"], size_bytes=entry["size_bytes"])

    def scan(self, input_dir: Path, extensions: tuple[str, ...], progress: bool = False) -> list[SourceRef]:
        """Register every video under ``input_dir``; return all sources found, sorted by id.

        ``progress``: a bar over the files (hashing a new file reads it whole).

        Identical content under two names registers once (the first path in sorted order);
        the other names, and every file that is not a video, are recorded as skipped.
        The registry file is read, extended and rewritten under a lock, so concurrent scans
        (a sensor tick, the demo, the CLI) never drop each other's new entries.
        """
        with file_lock(self.path.parent / f".{self.path.name}.lock"):
            return self._scan(input_dir, extensions, progress)

    def _scan(self, input_dir: Path, extensions: tuple[str, ...], progress: bool) -> list[SourceRef]:
        input_dir = Path(input_dir)
        if not input_dir.is_dir():
            raise FileNotFoundError(f"input folder {input_dir} does not exist")
        document = self._read()
        known = document.get("sources", {})
        by_path = {entry["relpath"]: (sid, entry) for sid, entry in known.items()}
        candidates, skipped = classify_files(input_dir, extensions)
        refs: dict[str, SourceRef] = {}
        by_digest: dict[str, str] = {}
        changed = False
        for path in tqdm(candidates, desc="scan", unit="file", disable=not progress):
            relpath = path.relative_to(input_dir).as_posix()
            stat = path.stat()
            cached = by_path.get(relpath)
            if cached and cached[1]["size_bytes"] == stat.st_size and cached[1]["mtime_ns"] == stat.st_mtime_ns:
                sid, entry = cached
            else:
                digest = sha256_file(path)
                sid = f"{slugify(path.stem)}-{digest[:10]}"
                entry = {"relpath": relpath, "sha256": digest, "size_bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
            first = by_digest.setdefault(entry["sha256"], sid)
            if first != sid:
                skipped[relpath] = _skip("duplicate_content", f"same content as {refs[first].relpath} ({first})")
                continue
            if known.get(sid) != entry:
                known[sid] = entry
                changed = True
            refs[sid] = SourceRef(source_id=sid, path=path, relpath=relpath, sha256=entry["sha256"],
                                  size_bytes=entry["size_bytes"])
        skipped = dict(sorted(skipped.items()))
        if changed or document.get("skipped", {}) != skipped:
            atomic_write_text(self.path, json.dumps({"sources": dict(sorted(known.items())), "skipped": skipped},
                                                    indent=1))
        return [refs[k] for k in sorted(refs)]


def skipped_file_rows(registry_path: Path) -> list[FileRow]:
    """Manifest rows for the input files that are not sources, with why (see :func:`classify_files`)."""
    return [FileRow(relpath=relpath, reason=why["reason"], detail=why["detail"])
            for relpath, why in SourceRegistry(registry_path).skipped().items()]
