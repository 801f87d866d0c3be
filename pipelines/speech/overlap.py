"""The overlap ratio, defined once.

    overlap ratio = overlapped speech duration / total speech duration, over a time range,

where speech is any frame with at least one active speaker and overlapped speech any frame
with two or more. Diarization turns and segmentation activations are both reduced to a
speaker-count timeline first, so the rule means the same thing whichever backend ran.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.speech.base import SpeakerActivity, Turn

DEFAULT_STEP_S = 0.01


def activity_from_turns(turns: list[Turn], duration_s: float, backend: str,
                        step_s: float = DEFAULT_STEP_S) -> SpeakerActivity:
    """Speaker counts on a ``step_s`` grid from possibly overlapping turns."""
    frames = max(0, int(np.ceil(duration_s / step_s)))
    diff = np.zeros(frames + 1, dtype=np.int64)
    for turn in turns:
        lo = int(np.clip(round(turn.start / step_s), 0, frames))
        hi = int(np.clip(round(turn.end / step_s), 0, frames))
        if hi > lo:
            diff[lo] += 1
            diff[hi] -= 1
    return SpeakerActivity(0.0, step_s, np.cumsum(diff)[:frames], backend, list(turns))


@dataclass(frozen=True)
class OverlapStats:
    speech_s: float
    overlap_s: float

    @property
    def ratio(self) -> float:
        return self.overlap_s / self.speech_s if self.speech_s > 0 else 0.0

    def as_dict(self) -> dict:
        return {"speech_s": round(self.speech_s, 4), "overlap_s": round(self.overlap_s, 4),
                "overlap_ratio": round(self.ratio, 4)}


def overlap_stats(activity: SpeakerActivity, start_s: float | None = None, end_s: float | None = None) -> OverlapStats:
    """Speech and overlapped-speech seconds of ``activity`` inside [start_s, end_s)."""
    counts = np.asarray(activity.counts)
    times = activity.start_s + (np.arange(len(counts)) + 0.5) * activity.step_s
    mask = np.ones(len(counts), dtype=bool)
    if start_s is not None:
        mask &= times >= start_s
    if end_s is not None:
        mask &= times < end_s
    window = counts[mask]
    return OverlapStats(float((window >= 1).sum() * activity.step_s), float((window >= 2).sum() * activity.step_s))
