"""Caption cache: one JSON file per (clip content, window, model, instruction version).

The key is the sha256 of a canonical JSON list of those five fields, so it is the same on
every machine and run. Files live at ``folder/<key[:2]>/<key>.json`` and are written
atomically (temporary file in the same folder, then ``os.replace``), so a crashed or
concurrent writer never leaves a half-written entry. Each file stores its key fields beside
the value; a file whose fields do not match (a hash collision or a hand edit) is a miss.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def cache_key(clip_sha: str, start: int, end: int, model: str, instruction_version: str) -> str:
    fields = [str(clip_sha), int(start), int(end), str(model), str(instruction_version)]
    canonical = json.dumps(fields, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class CaptionCache:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    @staticmethod
    def _fields(clip_sha: str, start: int, end: int, model: str, instruction_version: str) -> dict[str, Any]:
        return {"clip_sha": str(clip_sha), "start": int(start), "end": int(end), "model": str(model),
                "instruction_version": str(instruction_version)}

    def get(self, clip_sha: str, start: int, end: int, model: str, instruction_version: str) -> dict | None:
        path = self.path(cache_key(clip_sha, start, end, model, instruction_version))
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        if entry.get("key") != self._fields(clip_sha, start, end, model, instruction_version):
            return None
        return entry.get("value")

    def put(self, clip_sha: str, start: int, end: int, model: str, instruction_version: str, value: dict) -> Path:
        path = self.path(cache_key(clip_sha, start, end, model, instruction_version))
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"key": self._fields(clip_sha, start, end, model, instruction_version), "value": value}
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(entry, handle, sort_keys=True, ensure_ascii=False)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path
