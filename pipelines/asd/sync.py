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


# ---- mouth opening against audio loudness: the fine reading ----------------------------------
#
# Classic audio-visual synchrony (Hershey & Movellan, "Audio Vision", NIPS 2000: correlation of
# pixel intensities with audio energy; Bredin & Chollet 2007 for its use as a sync/liveness
# score), reduced to one visual and one audio signal:
#
# - o(t): mouth opening, the fraction of pixels of the mouth window (rows MOUTH_ROWS, columns
#   MOUTH_COLS of the 112 px face crop) darker than the 10th percentile of that window over
#   the whole track: the open mouth's dark cavity; one value per distinct 24 fps frame.
# - e(t): log energy (80-4000 Hz) of 25 ms Hann windows every 10 ms, floored 60 dB below its
#   maximum. Windows holding only digital zeros (silence padding beyond the recording, a delay
#   filter's lead-in) are *no audio*, not a quiet room: they are left out of the high-pass and
#   of the correlation instead of being a cliff that correlates with the mouth's own edges.
# - both high-passed (minus a centred HIGH_PASS_S moving mean over the samples present, so the
#   ends are not biased by zeros outside), which removes the sentence envelope and keeps the
#   syllable timing.
# - curve r(L) = Pearson correlation over frames t of o(t) and e(t + L), L every 10 ms over
#   +-N frames, each lag over the frames whose audio at t + L is present.
#
# Syllables come every 200-300 ms, so r(L) has near-equal side peaks one syllable away from the
# true one (measured on GRID: lrwp9a's curve at 0 ms has 0.41 at -40 ms and 0.41 at -270 ms).
# Light-ASD's curve (above) is coarse (per clip bias of up to 120 ms on GRID) but has one broad
# peak: only lags within LIP_WINDOW_S of its reading count, and the lip curve's peak in that
# window, refined by a parabola, is the offset. Measured with bench/bench_sync.py (6 GRID clips
# x -200/0/+200 ms, the stage's padded audio): 18/18 within one 24 fps frame, max error 26 ms;
# the lip curve over all lags alone 14/18 (side peaks), Light-ASD alone 4/18.

MOUTH_ROWS = (58, 100)
MOUTH_COLS = (30, 82)
ENERGY_HOP_S = 0.01
HIGH_PASS_S = 0.4  # 0.3-0.6 s all read 18/18 with the window; 0.2 s (the first choice) 15/18
LIP_WINDOW_S = 0.16  # 0.10-0.16 s all read 18/18 at HIGH_PASS_S; 0.2 s lets lrwp9a's side peak in


def mouth_opening(faces: np.ndarray, percentile: float = 10.0) -> np.ndarray:
    """(T,) fraction of the mouth window darker than its ``percentile`` over the track, of (T, 112, 112) faces."""
    mouth = np.asarray(faces, dtype=np.float64)[:, MOUTH_ROWS[0]:MOUTH_ROWS[1], MOUTH_COLS[0]:MOUTH_COLS[1]]
    return (mouth < np.percentile(mouth, percentile)).mean(axis=(1, 2))


def log_energy(audio: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(log energy 80-4000 Hz of 25 ms Hann windows every 10 ms, their centre times in s, whether each
    window holds any non-zero sample) of int16 audio."""
    x = np.asarray(audio, dtype=np.float64) / 32768.0
    win, hop = int(round(0.025 * rate)), int(round(ENERGY_HOP_S * rate))
    count = max(0, (len(x) - win) // hop + 1)
    if count == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=bool)
    frames = np.lib.stride_tricks.sliding_window_view(x, win)[::hop][:count]
    present = np.abs(frames).max(axis=1) > 0
    spectrum = np.abs(np.fft.rfft(frames * np.hanning(win), axis=1)) ** 2
    band = (np.fft.rfftfreq(win, 1.0 / rate) > 80) & (np.fft.rfftfreq(win, 1.0 / rate) < 4000)
    power = spectrum[:, band].sum(axis=1)
    return (np.log(power + 1e-6 * power.max() + 1e-12), (np.arange(count) * hop + win / 2) / rate, present)


def high_pass(x: np.ndarray, width: int, present: np.ndarray | None = None) -> np.ndarray:
    """``x`` minus its centred ``width``-sample moving mean over the samples present (all by default);
    0 where absent. Near the ends the mean is over the samples that exist, not zeros beyond them."""
    x = np.asarray(x, dtype=np.float64)
    present = np.ones(len(x), dtype=bool) if present is None else np.asarray(present, dtype=bool)
    kernel = np.ones(max(1, min(width, 2 * len(x) - 1)))
    total = np.convolve(np.where(present, x, 0.0), kernel, mode="same")
    count = np.convolve(present.astype(np.float64), kernel, mode="same")
    return np.where(present, x - total / np.maximum(count, 1.0), 0.0)


def lip_energy_curve(opening: np.ndarray, times: np.ndarray, energy: np.ndarray, energy_times: np.ndarray,
                     lags_s: np.ndarray, present: np.ndarray | None = None,
                     high_pass_s: float = HIGH_PASS_S) -> np.ndarray:
    """r(L) for each lag (s): correlation of the high-passed opening at ``times`` with the high-passed
    energy at ``times + L`` (positive L: the sound comes later), over the frames whose energy at
    ``times + L`` is ``present`` (all by default); 0 where fewer than 3 frames are."""
    fps = 1.0 / float(np.median(np.diff(times)))
    present = np.ones(len(energy), dtype=bool) if present is None else np.asarray(present, dtype=bool)
    o = high_pass(opening, max(1, int(round(high_pass_s * fps))))
    e = high_pass(energy, max(1, int(round(high_pass_s / ENERGY_HOP_S))), present)
    curve = np.zeros(len(lags_s))
    for i, lag in enumerate(lags_s):
        # A frame counts where both energy windows around t + L hold audio.
        inside = np.interp(times + lag, energy_times, present.astype(np.float64), left=0.0, right=0.0) > 1 - 1e-9
        if inside.sum() >= 3:
            curve[i] = correlation_curve(o[inside], np.interp(times[inside] + lag, energy_times, e)[None])[0]
    return curve


@dataclass(frozen=True)
class LipSyncMeasure:
    """The lip-energy reading of one face track, inside the window Light-ASD's curve allows."""

    lags_s: np.ndarray  # (L,) lags in s, every ENERGY_HOP_S
    scores: np.ndarray  # (L,) r(L)
    window_s: tuple[float, float]  # the lags that count: within LIP_WINDOW_S of the coarse reading
    offset_s: float  # the refined peak in the window (positive: the audio is late)
    confidence: float  # r at the peak - median r over all lags
    coarse: SyncMeasure  # Light-ASD's curve, which placed the window

    @property
    def best_frames(self) -> int:
        """The offset in whole 25 fps frames (the shift row the speaking probability is read at)."""
        return int(np.round(self.offset_s * SYNC_FPS))

    @property
    def speaking_frames(self) -> int:
        return self.coarse.speaking_frames

    def summary(self) -> dict:
        """The lip curve and its reading, rounded for JSON (the ``av_curve`` payload); ``coarse``: Light-ASD's."""
        peak = float(np.interp(self.offset_s, self.lags_s, self.scores))
        return {"method": "lip_energy", "lags_s": [round(float(v), 3) for v in self.lags_s],
                "scores": [round(float(c), 4) for c in self.scores],
                "unit": "correlation of mouth opening and audio log energy", "window_s": list(self.window_s),
                "offset_s": round(self.offset_s, 4), "peak": round(peak, 4),
                "median": round(float(np.median(self.scores)), 4), "confidence": round(self.confidence, 4),
                "coarse": self.coarse.summary()}


def lip_offset(opening: np.ndarray, times: np.ndarray, audio: np.ndarray, rate: int, audio_start_s: float,
               coarse: SyncMeasure, max_lag_s: float, window_s: float = LIP_WINDOW_S) -> LipSyncMeasure:
    """The offset of a face track from its mouth opening (values at absolute ``times``) and ``audio``
    (int16 at ``rate`` whose first sample is at absolute ``audio_start_s``): the peak of the lip
    curve over lags -max_lag_s..max_lag_s (10 ms apart) within ``window_s`` of Light-ASD's reading."""
    steps = int(round(max_lag_s / ENERGY_HOP_S))
    lags = np.arange(-steps, steps + 1) * ENERGY_HOP_S
    energy, energy_times, present = log_energy(audio, rate)
    scores = lip_energy_curve(opening, np.asarray(times, dtype=np.float64), energy, energy_times + audio_start_s,
                              lags, present)
    lo, hi = coarse.offset_s - window_s, coarse.offset_s + window_s
    allowed = (lags >= lo - 1e-9) & (lags <= hi + 1e-9)
    if not allowed.any():  # the coarse reading at the end of the range: its nearest lag
        allowed = np.abs(lags - np.clip(coarse.offset_s, lags[0], lags[-1])) <= ENERGY_HOP_S / 2 + 1e-9
    windowed = np.where(allowed, scores, -np.inf)
    index = best_shift(windowed)
    inside = bool(allowed[max(index - 1, 0):index + 2].all())
    refine = parabolic_refinement(scores, index) if inside else 0.0
    return LipSyncMeasure(lags_s=lags, scores=scores, window_s=(round(lo, 4), round(hi, 4)),
                          offset_s=float(lags[index] + refine * ENERGY_HOP_S),
                          confidence=float(scores[index] - np.median(scores)), coarse=coarse)
