"""Probing and the one-pass decode on real GRID media and media composed from it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

import pipelines.fixtures.media as mf
from pipelines.media.decode import DECODE_COUNTS, MediaRejection, decode_source, frames_needed, probe
from pipelines.media.wav import WavSink, read_wav


def test_probe_grid_clip(grid_clip: Path):
    info = probe(grid_clip)
    assert info.duration_s == pytest.approx(3.0, abs=0.05)
    assert (info.width, info.height) == (360, 288)
    assert info.rotation_deg == 0
    assert info.frame_rate == pytest.approx(25.0)
    assert info.video_codec == "mpeg1video"
    assert info.audio_codec == "mp2"
    assert info.audio_sample_rate == 44100
    assert info.audio_channels >= 1
    assert info.size_bytes == grid_clip.stat().st_size


def _rejection(path: Path) -> MediaRejection:
    with pytest.raises(MediaRejection) as raised:
        probe(path)
    return raised.value


def test_probe_rejections_have_distinct_reasons(composed, grid_clip: Path, tmp_path: Path):
    cases = {
        "missing_file": tmp_path / "nowhere.mp4",
        "empty_file": composed.get("empty.mp4", mf.empty_file),
        "not_a_media_file": composed.get("text.mp4", mf.text_as_mp4),
        "no_video_stream": composed.get("audio_only.mp4", mf.audio_only, grid_clip),
        "no_audio_stream": composed.get("video_only.mp4", mf.video_only, grid_clip),
        "truncated_container": composed.get("truncated_moov_at_end.mp4", mf.truncated_copy, grid_clip,
                                         keep_fraction=0.5, faststart=False),
    }
    reasons = {}
    for expected, path in cases.items():
        rejection = _rejection(path)
        assert rejection.reason == expected, f"{path.name}: {rejection}"
        assert rejection.detail
        reasons[path.name] = rejection.reason
    assert len(set(reasons.values())) == len(cases)
    assert _rejection(cases["empty_file"]).numbers == {"size_bytes": 0}


def test_truncated_faststart_file_still_probes(composed, grid_clip: Path):
    # The index is at the front, so only decoding can tell that the data stops half way.
    path = composed.get("truncated.mp4", mf.truncated_copy, grid_clip, keep_fraction=0.5)
    info = probe(path)
    assert info.duration_s == pytest.approx(3.0, abs=0.05)
    assert info.size_bytes == path.stat().st_size


def test_decode_grid_clip_once(grid_clip: Path, tmp_path: Path):
    before = DECODE_COUNTS[str(grid_clip)]
    sink = WavSink(tmp_path / "audio.wav", 16000)
    frames = list(decode_source(grid_clip, sink))
    sink.close()
    assert DECODE_COUNTS[str(grid_clip)] == before + 1

    assert len(frames) == 75
    assert [f.index for f in frames] == list(range(75))
    times = np.array([f.time_s for f in frames])
    assert np.all(np.diff(times) > 0)
    np.testing.assert_allclose(times, np.arange(75) / 25.0, atol=1e-3)
    np.testing.assert_allclose([f.duration_s for f in frames], 0.04, atol=1e-3)
    assert all(f.rgb.shape == (288, 360, 3) and f.rgb.dtype == np.uint8 for f in frames)
    assert frames[-1].time_s + frames[-1].duration_s == pytest.approx(3.0, abs=1e-3)

    assert sink.start_time_s == pytest.approx(0.0, abs=0.05)
    assert sink.samples / 16000 == pytest.approx(3.0, abs=0.1)
    stored, rate = read_wav(tmp_path / "audio.wav")
    assert rate == 16000 and len(stored) == sink.samples
    samples = stored.astype(np.float64)
    assert np.sqrt(np.mean(samples ** 2)) > 100, "GRID clips contain speech: the audio must not be silent"


def test_decode_honours_display_rotation(composed, grid_clip: Path, tmp_path: Path):
    path = composed.get("rotated90.mp4", mf.rotated_copy, grid_clip, degrees=90)
    info = probe(path)
    assert info.rotation_deg in (90, 270)
    assert (info.width, info.height) == (288, 360)

    sink = WavSink(tmp_path / "audio.wav", 16000)
    frames = list(decode_source(path, sink, info.rotation_deg))
    sink.close()
    assert len(frames) == 75
    assert all(f.rgb.shape == (360, 288, 3) for f in frames)
    # Same orientation as ffmpeg's own display (the CLI applies the display matrix itself).
    shown = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), "-frames:v", "1",
                            "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    reference = np.frombuffer(shown, dtype=np.uint8).reshape(360, 288, 3).astype(np.int16)
    first = frames[0].rgb.astype(np.int16)
    assert np.abs(first - reference).mean() < 2.0
    assert np.abs(np.rot90(first, 2) - reference).mean() > 10.0  # upside down would be far off


@pytest.mark.parametrize(("start", "end", "fps", "expected"),
                         [(0.0, 3.0, 24, 72), (0.0, 6.4, 24, 154), (5.0, 8.0, 24, 72), (0.0, 0.0, 24, 0),
                          (0.0, 1 / 48, 24, 0), (0.0, 1 / 48 + 1e-6, 24, 1)])
def test_frames_needed(start, end, fps, expected):
    assert frames_needed(start, end, fps) == expected
