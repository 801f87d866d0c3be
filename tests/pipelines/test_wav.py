"""The one WAV module: byte-identical output to the stdlib ``wave`` writer, strict readers."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile

from pipelines.media.wav import WavSink, read_wav, read_wav_float, read_wav_slice, write_wav


def _stdlib_wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """What the pipeline wrote before soundfile: the reference for byte identity."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(samples.astype("<i2").tobytes())
    return buffer.getvalue()


@pytest.mark.parametrize("count", [0, 1, 16001])
def test_write_wav_is_byte_identical_to_the_wave_module(tmp_path: Path, count: int):
    samples = (np.random.default_rng(count).standard_normal(count) * 8000).astype(np.int16)
    path = tmp_path / "out.wav"
    write_wav(path, samples, 16000)
    assert path.read_bytes() == _stdlib_wav_bytes(samples, 16000)


def test_write_wav_casts_floats_without_rescaling(tmp_path: Path):
    # soundfile alone would map 0.9 to about 29490; the old writer stored int(0.9) = 0.
    path = tmp_path / "floats.wav"
    values = np.array([0.9, -1.0, 3.7, 200.0])
    write_wav(path, values, 16000)
    assert path.read_bytes() == _stdlib_wav_bytes(values, 16000)
    np.testing.assert_array_equal(read_wav(path)[0], [0, -1, 3, 200])


def test_wav_sink_streams_the_same_bytes(tmp_path: Path):
    chunks = [np.arange(n, dtype=np.int16) * (i + 1) for i, n in enumerate([1024, 7, 3000])]
    sink = WavSink(tmp_path / "sink.wav", 16000)
    sink.write(0.25, chunks[0])
    sink.write(None, chunks[1])
    sink.write(0.5, chunks[2])
    sink.close()
    assert sink.start_time_s == 0.25 and sink.samples == 4031
    assert (tmp_path / "sink.wav").read_bytes() == _stdlib_wav_bytes(np.concatenate(chunks), 16000)


def test_read_wav_from_path_and_bytes(tmp_path: Path):
    samples = np.array([0, 1, -1, 32767, -32768], dtype=np.int16)
    path = tmp_path / "a.wav"
    write_wav(path, samples, 8000)
    for source in (path, path.read_bytes()):
        stored, rate = read_wav(source)
        assert rate == 8000 and stored.dtype == np.int16 and stored.ndim == 1
        np.testing.assert_array_equal(stored, samples)


def test_read_wav_float_scales_to_unit_range_and_checks_the_rate(tmp_path: Path):
    path = tmp_path / "a.wav"
    write_wav(path, np.array([0, 16384, -32768], dtype=np.int16), 16000)
    audio = read_wav_float(path, 16000)
    assert audio.dtype == np.float32
    np.testing.assert_array_equal(audio, [0.0, 0.5, -1.0])
    with pytest.raises(ValueError, match=r"a\.wav: expected 22050 Hz audio, got 16000 Hz"):
        read_wav_float(path, 22050)
    with pytest.raises(ValueError, match=r"clip_007: expected 8000 Hz"):
        read_wav_float(path.read_bytes(), 8000, name="clip_007")


@pytest.mark.parametrize(("channels", "subtype", "got"), [(2, "PCM_16", "2 channel"), (1, "FLOAT", "FLOAT"),
                                                           (1, "PCM_24", "PCM_24")])
def test_read_wav_refuses_other_layouts_naming_the_file(tmp_path: Path, channels: int, subtype: str, got: str):
    path = tmp_path / f"odd_{channels}_{subtype}.wav"
    soundfile.write(str(path), np.zeros((10, channels), dtype=np.float32), 16000, subtype=subtype)
    with pytest.raises(ValueError, match=rf"{path.name}: expected 16-bit PCM mono WAV.*{got}"):
        read_wav(path)


def test_read_wav_refuses_non_wav_data(tmp_path: Path):
    with pytest.raises(ValueError, match="notes.wav: not a readable WAV file"):
        read_wav(b"plain text, not audio", name="notes.wav")
    with pytest.raises(FileNotFoundError):
        read_wav(tmp_path / "missing.wav")


def test_read_wav_slice_pads_outside_the_recording(tmp_path: Path):
    path = tmp_path / "ramp.wav"
    write_wav(path, np.arange(16000, dtype=np.int16), 16000)  # 1 s, sample value = index
    samples, padded = read_wav_slice(path, 16000, 0.25, 0.5, origin_s=0.0)
    assert padded == 0
    np.testing.assert_array_equal(samples, np.arange(4000, 8000))
    samples, padded = read_wav_slice(path, 16000, 0.9, 1.2, origin_s=0.0)
    assert len(samples) == 4800 and padded == 3200
    np.testing.assert_array_equal(samples[:1600], np.arange(14400, 16000))
    assert not samples[1600:].any()
    samples, padded = read_wav_slice(path, 16000, 0.0, 0.1, origin_s=0.05)  # audio starts late
    assert padded == 800 and not samples[:800].any() and samples[800] == 0 and samples[801] == 1
    samples, padded = read_wav_slice(path, 16000, 2.0, 2.5, origin_s=0.0)  # wholly after the recording
    assert padded == 8000 and not samples.any()
    with pytest.raises(ValueError, match="ramp.wav: expected 8000 Hz audio, got 16000 Hz"):
        read_wav_slice(path, 8000, 0.0, 0.1, origin_s=0.0)
