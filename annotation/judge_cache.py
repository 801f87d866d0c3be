"""Judge results kept between runs, so new annotations trigger only the comparisons they change.

A result is keyed by what decides it: the clips' sha256 (never their names), the judge kind,
the prompt version, the model and backend, and the settings that change what the model is shown
(media, frames per video, ties allowed; for a pairwise judge the presentation order, and for the
in-context judge the solved examples shown). One JSON line per result, appended as it arrives;
failed calls are never stored, so the next run asks again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from pathlib import Path

log = logging.getLogger(__name__)


def key_id(key: dict) -> str:
    """A stable name for ``key`` (its canonical JSON, hashed)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class JudgeCache:
    """Results by key in a JSON-lines file (``path`` None: kept in memory only).

    ``hits`` and ``misses`` count look-ups. A torn last line (a run killed while writing) is
    skipped with a warning and its result recomputed.
    """

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else None
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._results: dict[str, dict] = {}
        if self.path is not None and self.path.exists():
            with open(self.path, encoding="utf-8") as f:
                for number, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        entry = json.loads(line)
                        self._results[entry["id"]] = entry["result"]
                    except (ValueError, KeyError, TypeError):
                        log.warning("%s:%d: unreadable judge cache line skipped", self.path, number)

    def __len__(self) -> int:
        return len(self._results)

    def get(self, key: dict) -> dict | None:
        with self._lock:
            result = self._results.get(key_id(key))
            if result is None:
                self.misses += 1
            else:
                self.hits += 1
            return result

    def put(self, key: dict, result: dict) -> None:
        entry = {"id": key_id(key), "key": key, "result": result}
        with self._lock:
            self._results[entry["id"]] = result
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(entry, sort_keys=True) + "\n")
