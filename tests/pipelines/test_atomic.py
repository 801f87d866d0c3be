"""Atomic writes: a visible name is always a complete, shareable file; a failed write leaves nothing."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from pipelines.atomic import atomic_path, atomic_write_text, is_temporary


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_write_text_writes_utf8_readable_by_all(tmp_path: Path):
    path = tmp_path / "deep" / "notes.json"
    atomic_write_text(path, '{"name": "Zoë"}\n')
    assert path.read_bytes() == '{"name": "Zoë"}\n'.encode("utf-8")
    assert _mode(path) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["notes.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path):
    path = tmp_path / "clip.tar"
    atomic_write_text(path, "old")
    with pytest.raises(RuntimeError, match="writer died"):
        with atomic_path(path) as tmp:
            assert is_temporary(tmp) and tmp.parent == tmp_path and tmp.suffix == ".tar"
            tmp.write_text("half")
            raise RuntimeError("writer died")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["clip.tar"]
