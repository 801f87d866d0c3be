"""Data types and protocols shared by every speech backend.

Audio is always float32 mono at 16 kHz (the face stage keeps the source's audio at that
rate as ``source_audio.wav``, so no backend decodes the source again). Times are seconds
on the source clock.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np

SAMPLE_RATE = 16000
UNKNOWN_LANGUAGE = "unknown"


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    end: float
    score: float | None = None  # backend confidence in [0, 1] when it gives one
    speaker: str | None = None


@dataclass(frozen=True)
class Turn:
    """One speaker talking over [start, end)."""

    speaker: str
    start: float
    end: float


@dataclass
class Transcript:
    text: str
    words: list[Word]
    backend: str
    # Language detected from the audio by the ASR itself (Whisper), else None.
    language: str | None = None
    language_probability: float | None = None
    # True when the text can be trusted to be in the spoken language (multilingual ASR,
    # subtitles); False for an English-only recogniser, whose text is English whatever was said.
    language_capable: bool = True

    def words_in(self, start: float, end: float) -> list[Word]:
        """Words whose midpoint lies in [start, end)."""
        return [w for w in self.words if start <= (w.start + w.end) / 2 < end]

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class SpeakerActivity:
    """How many speakers are active in each frame, on a regular grid of ``step_s``.

    ``counts[i]`` covers [start_s + i * step_s, start_s + (i + 1) * step_s).
    """

    start_s: float
    step_s: float
    counts: np.ndarray  # int, >= 0
    backend: str
    turns: list[Turn] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"start_s": self.start_s, "step_s": self.step_s, "frames": int(len(self.counts)),
                "backend": self.backend, "turns": [asdict(t) for t in self.turns]}


class ActivityBackend(Protocol):
    """Voice activity and overlap: pyannote segmentation or a diarization pipeline."""

    name: str

    def activity(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> SpeakerActivity: ...


class TranscriptionBackend(Protocol):
    """Speech to text with word times: whisperx, pocketsphinx, sidecar subtitles."""

    name: str

    def transcribe(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Transcript: ...


class LanguageIdentifier(Protocol):
    """Language of a piece of text, as an ISO 639-1 code with a confidence, or None."""

    name: str

    def identify(self, text: str) -> tuple[str | None, float]: ...
