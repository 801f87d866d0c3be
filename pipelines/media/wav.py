"""The one WAV module: 16-bit PCM mono files read and written with soundfile (libsndfile).

Every WAV the pipeline writes is PCM16 mono with the plain 44-byte RIFF header, byte for
byte what Python's ``wave`` module wrote before, so shard payloads and their hashes do not
change. Readers refuse anything else with an error that names the file.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile

_SUBTYPE = "PCM_16"
# int16 full scale: dividing by it maps stored samples to [-1, 1), the scale Whisper and VAD expect.
_INT16_SCALE = 32768.0


def _describe(source: Path | bytes, name: str | None) -> str:
    if name is not None:
        return name
    return str(source) if isinstance(source, (str, Path)) else f"<{len(source)} bytes of WAV>"


def _open_handle(source: Path | bytes) -> BinaryIO:
    # A path is opened here so a missing file raises FileNotFoundError, not libsndfile's "System error".
    return open(source, "rb") if isinstance(source, (str, Path)) else io.BytesIO(source)


def _open_checked(handle: BinaryIO, label: str) -> soundfile.SoundFile:
    """Open a WAV for reading; ValueError naming ``label`` unless it is PCM16 mono."""
    try:
        wav = soundfile.SoundFile(handle)
    except soundfile.LibsndfileError as error:
        raise ValueError(f"{label}: not a readable WAV file ({error})") from None
    if wav.channels != 1 or wav.subtype != _SUBTYPE:
        wav.close()
        raise ValueError(f"{label}: expected 16-bit PCM mono WAV, got {wav.channels} channel(s) of {wav.subtype}")
    return wav


def read_wav(source: Path | bytes, *, name: str | None = None) -> tuple[np.ndarray, int]:
    """(int16 samples as stored, 1-D; sample rate) of a PCM16 mono WAV file or its bytes.

    ``name`` labels errors for in-memory bytes (e.g. a shard sample's key).
    """
    label = _describe(source, name)
    with _open_handle(source) as handle, _open_checked(handle, label) as wav:
        return wav.read(dtype="int16"), wav.samplerate


def read_wav_float(source: Path | bytes, expected_rate: int, *, name: str | None = None) -> np.ndarray:
    """float32 samples in [-1, 1) of a PCM16 mono WAV; ValueError when its rate is not ``expected_rate``."""
    samples, rate = read_wav(source, name=name)
    if rate != expected_rate:
        raise ValueError(f"{_describe(source, name)}: expected {expected_rate} Hz audio, got {rate} Hz")
    return samples.astype(np.float32) / _INT16_SCALE


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    """Write ``samples`` as PCM16 mono (values cast to int16 as they are, never rescaled)."""
    # soundfile rescales float input to the int16 range; casting first keeps the stored values.
    soundfile.write(str(path), np.asarray(samples).astype("<i2"), sample_rate, subtype=_SUBTYPE, format="WAV")


def read_wav_slice(path: Path, sample_rate: int, start_s: float, end_s: float, origin_s: float) -> tuple[np.ndarray, int]:
    """Samples of [start_s, end_s) from a mono WAV that begins at ``origin_s``.

    Time outside the recorded audio is filled with silence; returns (int16 samples, padded count).
    """
    first = int(round((start_s - origin_s) * sample_rate))
    count = int(round((end_s - start_s) * sample_rate))
    out = np.zeros(count, dtype=np.int16)
    with open(path, "rb") as handle, _open_checked(handle, str(path)) as wav:
        if wav.samplerate != sample_rate:
            raise ValueError(f"{path}: expected {sample_rate} Hz audio, got {wav.samplerate} Hz")
        lo, hi = max(first, 0), min(first + count, wav.frames)
        if hi <= lo:
            return out, count
        wav.seek(lo)
        data = wav.read(hi - lo, dtype="int16")
    out[lo - first: lo - first + len(data)] = data
    return out, count - len(data)


class WavSink:
    """Collects 16-bit PCM into a WAV file as audio frames arrive (no whole-file buffer)."""

    def __init__(self, path: Path, sample_rate: int):
        self.path = Path(path)
        self.sample_rate = sample_rate
        self._wav = soundfile.SoundFile(str(self.path), "w", samplerate=sample_rate, channels=1,
                                        subtype=_SUBTYPE, format="WAV")
        self.start_time_s: float | None = None
        self.samples = 0

    def write(self, time_s: float | None, pcm: np.ndarray) -> None:
        if self.start_time_s is None:
            self.start_time_s = time_s if time_s is not None else 0.0
        self._wav.write(np.asarray(pcm).astype("<i2"))
        self.samples += len(pcm)

    def close(self) -> None:
        self._wav.close()
