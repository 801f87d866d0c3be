"""The input-folder scan accounts for every file, and the probe limits turn away what a stage cannot hold."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipelines.config import IngestConfig
from pipelines.ingest import SourceRegistry, classify_files, probe_limits, skipped_file_rows
from pipelines.media.decode import ProbeInfo

EXTS = IngestConfig().extensions


def _folder(tmp_path: Path) -> tuple[Path, Path]:
    inputs, outside = tmp_path / "in", tmp_path / "outside"
    (inputs / "sub").mkdir(parents=True)
    outside.mkdir()
    (inputs / "talk.mp4").write_bytes(b"talk video bytes")
    (inputs / "talk.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    (inputs / "sub" / "other.MOV").write_bytes(b"other video bytes")
    (inputs / "notes.txt").write_text("not a transcript of anything")
    (inputs / "duo.session.json").write_text('{"participants": []}')  # listed as what it is, even when invalid
    (inputs / ".partial.mp4").write_bytes(b"a download in progress")
    (inputs / "copy of talk.mp4").write_bytes(b"talk video bytes")
    (inputs / "link inside.mp4").symlink_to(inputs / "sub" / "other.MOV")
    (outside / "private.mp4").write_bytes(b"private bytes")
    (inputs / "link outside.mp4").symlink_to(outside / "private.mp4")
    (inputs / "dangling.mp4").symlink_to(inputs / "gone.mp4")
    (inputs / "library").symlink_to(outside)
    (inputs / "same folder").symlink_to(inputs / "sub")
    os.mkfifo(inputs / "pipe.mp4")
    return inputs, outside


def test_classify_files_gives_each_non_source_a_reason(tmp_path):
    inputs, _ = _folder(tmp_path)
    candidates, skipped = classify_files(inputs, EXTS)
    # Real files first, then links: a file is registered under its own name rather than a link's.
    assert [p.relative_to(inputs).as_posix() for p in candidates] == [
        "copy of talk.mp4", "sub/other.MOV", "talk.mp4", "link inside.mp4"]
    assert {k: v["reason"] for k, v in skipped.items()} == {
        "talk.srt": "sidecar_transcript", "notes.txt": "unsupported_extension", "duo.session.json": "session_sidecar",
        "link outside.mp4": "symlink_outside_input", "dangling.mp4": "broken_symlink",
        "library": "symlink_outside_input", "pipe.mp4": "not_a_regular_file"}


def test_scan_registers_content_once_and_records_the_rest(tmp_path):
    inputs, _ = _folder(tmp_path)
    registry = SourceRegistry(tmp_path / "data" / "sources.json")
    refs = registry.scan(inputs, EXTS)
    # Identical bytes under two names, and a link to a file inside the folder, register once.
    assert sorted(r.relpath for r in refs) == ["copy of talk.mp4", "sub/other.MOV"]
    reasons = {row.relpath: row.reason for row in skipped_file_rows(registry.path)}
    assert reasons == {"talk.mp4": "duplicate_content", "link inside.mp4": "duplicate_content",
                       "talk.srt": "sidecar_transcript", "notes.txt": "unsupported_extension",
                       "duo.session.json": "session_sidecar", "link outside.mp4": "symlink_outside_input", "dangling.mp4": "broken_symlink",
                       "library": "symlink_outside_input", "pipe.mp4": "not_a_regular_file"}
    # The file outside was never registered or hashed into the registry.
    assert "private" not in registry.path.read_text()
    (inputs / "notes.txt").unlink()
    registry.scan(inputs, EXTS)
    assert "notes.txt" not in registry.skipped(), "skipped files describe the folder as it is now"
    assert json.loads(registry.path.read_text())["sources"].keys() == {r.source_id for r in refs}


def _probe(**changes) -> ProbeInfo:
    base = dict(format_name="mov", duration_s=3.0, start_time_s=0.0, width=360, height=288, rotation_deg=0,
                video_codec="h264", frame_rate=25.0, audio_codec="aac", audio_sample_rate=44100, audio_channels=2,
                size_bytes=1000, video_duration_s=3.0)
    return ProbeInfo(**{**base, **changes})


@pytest.mark.parametrize("changes, reason", [
    ({}, None),
    ({"width": 7680, "height": 4320}, "resolution_too_large"),
    ({"width": 3840, "height": 2160}, None),
    ({"duration_s": 7200.0, "video_duration_s": 7200.0}, "source_too_long"),
    ({"duration_s": 0.2, "video_duration_s": 0.2}, "source_too_short"),
    ({"video_duration_s": 0.04}, "source_too_short"),  # one frame under 3 s of audio
])
def test_probe_limits(changes, reason):
    rejection = probe_limits(_probe(**changes), IngestConfig())
    assert (rejection.reason if rejection else None) == reason
    if rejection:
        assert rejection.detail and rejection.numbers
