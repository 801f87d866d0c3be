"""Finding source videos and giving each a stable id.

The id is ``<slug of the file stem>-<first 10 hex of the content sha256>``: readable in
the Dagster UI, stable across renames of the folder, and distinct for distinct content.
Hashes are cached by (path, size, mtime) so a sensor tick does not re-read every file.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import unicodedata
from pathlib import Path

from pipelines.models import sha256_file
from pipelines.records import SourceRef

_SLUG = re.compile(r"[^a-z0-9]+")


def slugify(stem: str, max_len: int = 40) -> str:
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    slug = _SLUG.sub("-", ascii_stem.lower()).strip("-")
    return (slug[:max_len].rstrip("-")) or "video"


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def list_candidates(input_dir: Path, extensions: tuple[str, ...]) -> list[Path]:
    """Files under ``input_dir`` with a video extension, sorted; hidden files skipped."""
    exts = {e.lower() for e in extensions}
    found = []
    for root, dirs, files in os.walk(input_dir, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root) / name
            if not name.startswith(".") and path.suffix.lower() in exts:
                found.append(path)
    return found


class SourceRegistry:
    """JSON file mapping source id -> source; the sensor writes it, assets read it."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        return json.loads(self.path.read_text()).get("sources", {})

    def lookup(self, source_id: str, input_dir: Path) -> SourceRef:
        entry = self.load().get(source_id)
        if entry is None:
            raise KeyError(f"source {source_id!r} is not registered in {self.path}; run the sensor or `talkinghead scan`")
        return SourceRef(source_id, Path(input_dir) / entry["relpath"], entry["relpath"], entry["sha256"],
                         entry["size_bytes"])

    def scan(self, input_dir: Path, extensions: tuple[str, ...]) -> list[SourceRef]:
        """Register every video under ``input_dir``; return all sources found, sorted by id.

        Identical content under two names registers once (the first path in sorted order).
        """
        input_dir = Path(input_dir)
        if not input_dir.is_dir():
            raise FileNotFoundError(f"input folder {input_dir} does not exist")
        known = self.load()
        by_path = {entry["relpath"]: (sid, entry) for sid, entry in known.items()}
        refs: dict[str, SourceRef] = {}
        changed = False
        for path in list_candidates(input_dir, extensions):
            relpath = path.relative_to(input_dir).as_posix()
            try:
                stat = path.stat()
            except OSError:
                continue  # dangling symlink: nothing to read
            cached = by_path.get(relpath)
            if cached and cached[1]["size_bytes"] == stat.st_size and cached[1]["mtime_ns"] == stat.st_mtime_ns:
                sid, entry = cached
            else:
                digest = sha256_file(path)
                sid = f"{slugify(path.stem)}-{digest[:10]}"
                entry = {"relpath": relpath, "sha256": digest, "size_bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
            if sid in refs:
                continue
            if known.get(sid) != entry:
                known[sid] = entry
                changed = True
            refs[sid] = SourceRef(sid, path, relpath, entry["sha256"], entry["size_bytes"])
        if changed:
            atomic_write_text(self.path, json.dumps({"sources": dict(sorted(known.items()))}, indent=1))
        return [refs[k] for k in sorted(refs)]
