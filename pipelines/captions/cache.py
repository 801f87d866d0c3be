"""Caption cache: one JSON file per (clip content, window, model, instruction version).

The key is the sha256 of a canonical JSON list of those five fields, so it is the same on
every machine and run. Files live at ``folder/<key[:2]>/<key>.json`` and are written
atomically (:func:`pipelines.atomic.atomic_write_text`), so a crashed or
concurrent writer never leaves a half-written entry. Each file stores its key fields beside
the value; a file whose fields do not match (a hash collision or a hand edit) is a miss.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pipelines.atomic import atomic_write_text


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
        entry = {"key": self._fields(clip_sha, start, end, model, instruction_version), "value": value}
        atomic_write_text(path, json.dumps(entry, sort_keys=True, ensure_ascii=False))
        return path
