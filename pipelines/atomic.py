"""Crash-safe output files and inter-process locks.

Convention: a temporary or private name starts with a dot. Every output is produced under
such a name in its final folder and renamed into place (``os.replace`` is atomic within a
file system), so any visible name is a complete file, whatever happens to the writer.
Locks are ``fcntl.flock`` on a hidden lock file: the kernel drops them when the holder dies,
so a ``kill -9`` never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_SUFFIX = ".tmp"

_held = threading.local()


def is_temporary(path: Path) -> bool:
    """True for names that readers must ignore: hidden temporaries, lock files, half-built folders."""
    return Path(path).name.startswith(".")


@contextmanager
def atomic_path(path: Path, suffix: str | None = None) -> Iterator[Path]:
    """A temporary path next to ``path``; renamed to ``path`` when the block succeeds, removed otherwise.

    ``suffix`` keeps the extension tools such as ffmpeg read the output format from
    (default: the final name's own suffix).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f"{TMP_SUFFIX}{suffix or path.suffix}",
                               dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 text under a temporary name, then rename: readers never see half a file."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _held_locks() -> dict[str, int]:
    if not hasattr(_held, "locks"):
        _held.locks = {}
    return _held.locks


@contextmanager
def file_lock(path: Path, shared: bool = False) -> Iterator[None]:
    """Hold an flock on ``path`` (created if missing) for the block; blocks until it is free.

    Re-entrant within one thread (a stage called from a locked caller does not deadlock);
    separate threads and processes exclude each other. ``shared``: a reader's lock, which
    many may hold at once while no writer holds the exclusive one.
    """
    key = os.path.abspath(path)
    held = _held_locks()
    if key in held:
        held[key] += 1
        try:
            yield
        finally:
            held[key] -= 1
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        held[key] = 1
        try:
            yield
        finally:
            del held[key]
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
