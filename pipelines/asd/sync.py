"""Audio-video offset of one face track from Light-ASD scores with the audio shifted.

There are no SyncNet weights here, but Light-ASD's speaking score is audio-visual: the same
face scored against its audio moved by k video frames (25 fps, 40 ms) says how well each
alignment fits. :meth:`pipelines.asd.score.ActiveSpeakerScorer.shifted_logits` gives the
logits for every k in -N..N; this module turns them into an offset curve, a best offset and
a confidence.

Sign: row k pairs video frame t with the audio of frame t + k. Sound that comes late (audio
delayed against video) is heard k frames after the mouth moves, so it fits best at k > 0:
a positive offset means the audio is late, and moving the audio k frames earlier fixes it.

Definitions (see bench/bench_sync.py for the measurements behind them):

- v(t): Light-ASD's visual-only speaking margin (its ``lossV`` head on the visual
  embedding), the face's own speaking activity, which does not depend on the audio.
- p_k(t): the audio-visual speaking probability with the audio shifted by k.
- speaking frames: t with max_k p_k(t) >= threshold; without any, there is no curve.
- curve c(k) = Pearson correlation over all frames of v(t) and p_k(t). Measured on GRID,
  the simpler choice, the mean audio-visual margin over the speaking frames, does not track
  the true offset at all (0 ms read as +4, -2 or -5 frames): the margin saturates wherever
  the audio holds speech at every shift, and its visual part does not move with k. The
  correlation asks when the face's activity and the audio-driven activity rise and fall
  together, i.e. it aligns the speech onsets and ends with the mouth's.
- best offset k* = argmax_k c(k) (ties: the smallest |k|), refined to a fraction of a frame
  by the vertex of the parabola through c(k*-1), c(k*), c(k*+1), clipped to +-0.5 frame.
- confidence = c(k*) - median_k c(k): the peak's height over the typical alignment, as
  SyncNet's confidence is median(distance) - min(distance); in correlation units (0..2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SYNC_FPS = 25.0  # the rate Light-ASD scores at, so one shift step is 40 ms


@dataclass(frozen=True)
class SyncMeasure:
    """The offset curve of one face track and what is read from it."""

    shifts: np.ndarray  # (2N + 1,) int: k = -N..N in 25 fps frames
    scores: np.ndarray  # (2N + 1,) c(k), correlation of the visual margin with the AV probability at k
    speaking_frames: int  # |S|
    best_frames: int  # k*, the argmax of the curve
    refined_frames: float  # k* plus the parabola's sub-frame correction
    confidence: float  # c(k*) - median c(k)

    @property
    def offset_s(self) -> float:
        """The refined offset in seconds (positive: the audio is late)."""
        return self.refined_frames / SYNC_FPS

    def summary(self) -> dict:
        """The curve and its reading, rounded for JSON (the ``av_curve`` payload)."""
        return {"shifts": [int(k) for k in self.shifts], "scores": [round(float(c), 4) for c in self.scores],
                "unit": "correlation of visual-only margin and AV probability", "fps": SYNC_FPS,
                "speaking_frames": self.speaking_frames, "best_frames": self.best_frames,
                "refined_frames": round(self.refined_frames, 3), "peak": round(float(self.scores.max()), 4),
                "median": round(float(np.median(self.scores)), 4), "confidence": round(self.confidence, 4)}


def margins(logits: np.ndarray) -> np.ndarray:
    """(S, T) speaking-minus-silent logit margin of (S, T, 2) shifted logits."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 3 or logits.shape[-1] != 2 or logits.shape[0] % 2 != 1:
        raise ValueError(f"expected (2N + 1, T, 2) logits, got shape {logits.shape}")
    return logits[..., 1] - logits[..., 0]


def correlation_curve(visual: np.ndarray, probability: np.ndarray) -> np.ndarray:
    """(S,) Pearson correlation over frames of ``visual`` (T,) with each row of ``probability`` (S, T);
    0 for a row (or a visual curve) that does not vary."""
    v = np.asarray(visual, dtype=np.float64) - np.mean(visual)
    p = probability - probability.mean(axis=1, keepdims=True)
    norm = np.sqrt((v ** 2).sum() * (p ** 2).sum(axis=1))
    return np.where(norm > 0, (p @ v) / np.where(norm > 0, norm, 1.0), 0.0)


def speaking_mask(margin: np.ndarray, threshold: float) -> np.ndarray:
    """Frames judged speaking at some shift: max_k sigmoid(m_k) >= threshold, as a margin test."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    # sigmoid(m) >= p  <=>  m >= log(p / (1 - p)): no exp, no overflow.
    return margin.max(axis=0) >= np.log(threshold / (1.0 - threshold))


def best_shift(scores: np.ndarray) -> int:
    """Index of the curve's maximum; among equal maxima the one nearest the centre (k = 0)."""
    centre = len(scores) // 2
    order = np.argsort(np.abs(np.arange(len(scores)) - centre), kind="stable")
    return int(order[np.argmax(scores[order])])


def parabolic_refinement(scores: np.ndarray, index: int) -> float:
    """Sub-frame correction in [-0.5, 0.5] from the parabola through the peak and its neighbours.

    The shifts are 40 ms apart and a 24 fps output frame is 41.7 ms, so an integer peak is
    already within one output frame; the vertex only places offsets that fall between two
    shifts. 0 at the ends of the curve and where the three points are not concave.
    """
    if index == 0 or index == len(scores) - 1:
        return 0.0
    left, mid, right = (float(v) for v in scores[index - 1:index + 2])
    curvature = left - 2.0 * mid + right
    if curvature >= 0:
        return 0.0
    return float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))


def measure_offset(logits: np.ndarray, visual: np.ndarray, threshold: float) -> SyncMeasure | None:
    """The offset curve of (2N + 1, T, 2) shifted logits against the (T,) visual-only margin;
    None when no frame is speaking at any shift."""
    margin = margins(logits)
    if np.shape(visual) != margin.shape[1:]:
        raise ValueError(f"expected a visual margin of shape {margin.shape[1:]}, got {np.shape(visual)}")
    mask = speaking_mask(margin, threshold)
    if not mask.any():
        return None
    max_shift = len(margin) // 2
    probability = 0.5 * (1.0 + np.tanh(0.5 * margin))  # sigmoid without overflow
    scores = correlation_curve(visual, probability)
    index = best_shift(scores)
    return SyncMeasure(shifts=np.arange(-max_shift, max_shift + 1), scores=scores, speaking_frames=int(mask.sum()),
                       best_frames=index - max_shift, refined_frames=index - max_shift + parabolic_refinement(scores, index),
                       confidence=float(scores[index] - np.median(scores)))
