"""Data types and protocols shared by every speech backend.

Audio is always float32 mono at 16 kHz (the face stage keeps the source's audio at that
rate as ``source_audio.wav``, so no backend decodes the source again). Times are seconds
on the source clock.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np

from pipelines.config import AUDIO_SAMPLE_RATE_HZ

SAMPLE_RATE = AUDIO_SAMPLE_RATE_HZ  # every backend's input rate (Whisper, VAD, diarization)
UNKNOWN_LANGUAGE = "unknown"

# How a transcript's word times were obtained (``Transcript.word_timing``), the one list of names:
WORD_TIMING_WAV2VEC2 = "wav2vec2_alignment"  # forced alignment of Whisper's text by a wav2vec2 CTC model (whisperx.align)
WORD_TIMING_WHISPER = "whisper_word_timestamps"  # Whisper's cross-attention alignment heads (faster-whisper)
WORD_TIMING_POCKETSPHINX = "pocketsphinx"  # the decoder's own word segmentation
WORD_TIMING_SUBTITLES = "subtitle_cues"  # subtitles beside the video: each word carries its cue's span, untimed
WORD_TIMING_NONE = "none"  # no transcript, or no words in it
WORD_TIMINGS = (WORD_TIMING_WAV2VEC2, WORD_TIMING_WHISPER, WORD_TIMING_POCKETSPHINX, WORD_TIMING_SUBTITLES,
                WORD_TIMING_NONE)


@dataclass(frozen=True)
class Word:
    """One word. ``timed`` False: no time is known for this word itself; ``start``/``end``
    are then the span of what holds it (its ASR segment, its subtitle cue), never a guess."""

    text: str
    start: float
    end: float
    score: float | None = None  # backend confidence in [0, 1] when it gives one
    speaker: str | None = None
    timed: bool = True


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
    word_timing: str = WORD_TIMING_NONE  # one of WORD_TIMINGS

    def __post_init__(self):
        if self.word_timing not in WORD_TIMINGS:
            raise ValueError(f"word_timing must be one of {WORD_TIMINGS}, got {self.word_timing!r}")

    def words_in(self, start: float, end: float) -> list[Word]:
        """Words whose midpoint lies in [start, end)."""
        return [w for w in self.words if start <= (w.start + w.end) / 2 < end]

    def as_dict(self) -> dict:
        return asdict(self)


def run_lengths(values: np.ndarray) -> list[list[int]]:
    """``values`` as [value, repeats] pairs in order."""
    values = np.asarray(values)
    if not len(values):
        return []
    starts = np.concatenate([[0], np.flatnonzero(np.diff(values)) + 1])
    ends = np.concatenate([starts[1:], [len(values)]])
    return [[int(values[a]), int(b - a)] for a, b in zip(starts, ends)]


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
                "backend": self.backend, "turns": [asdict(t) for t in self.turns],
                # [count, frames] runs: the conversation pairing reads the speaker count from here.
                "counts": run_lengths(self.counts)}


class ActivityBackend(Protocol):
    """Voice activity and overlap: pyannote segmentation or a diarization pipeline."""

    name: str

    def activity(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> SpeakerActivity: ...


class TranscriptionBackend(Protocol):
    """Speech to text with word times: whisperx, pocketsphinx, sidecar subtitles."""

    name: str

    def transcribe(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Transcript: ...


class ClipTranscriptionBackend(TranscriptionBackend, Protocol):
    """A transcriber that also hears the spoken language in a clip's own audio (Whisper): the
    speech stage transcribes clip by clip with it, and each clip keeps its own language call."""

    def transcribe_clip(self, audio: np.ndarray,
                        sample_rate: int = SAMPLE_RATE) -> tuple[Transcript, tuple[str, float] | None]: ...


class LanguageIdentifier(Protocol):
    """Language of a piece of text, as an ISO 639-1 code with a confidence, or None."""

    name: str

    def identify(self, text: str) -> tuple[str | None, float]: ...
