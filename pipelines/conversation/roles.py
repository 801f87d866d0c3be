"""Who speaks in each output frame: pure functions on arrays (the pairing feeds them, pipelines/conversation/pairing.py).

Times are seconds on the session clock; output frame k of a clip starting at ``start_s`` is
shown at ``start_s + (k + 0.5) / fps`` (the face stage's rule). A role is a bit set
(:class:`pipelines.schema.conversation.Role`): bit 0 the actor speaks, bit 1 someone else does.

- Per-participant input (:func:`per_participant_roles`): the actor speaks where their own
  microphone is voiced, someone else where another participant's microphone is. A microphone is
  voiced (:func:`voice_activity`) where its 10 ms level is over its noise floor by a margin,
  pauses between words bridged, clicks dropped (``config.conversation``).
- Shared video, by voice (:func:`voice_turn_roles`, ``conversation.shared_video_voices``): the
  speech stage's speaker count says where anyone speaks, the voice turns (voices.py) whose voice
  it is; the actor speaks where their voice holds, someone else where another face's or an
  off-screen voice does.
- Shared video, by face (:func:`shared_video_roles`; also where fewer than two voices could be
  enrolled): the actor speaks where someone does (count >= 1) and the actor's face has a speaking
  probability at or over the ASD threshold; someone else speaks where someone does and the actor
  does not, or where voices overlap (count >= 2), or where another face's probability reaches the
  threshold.

Why two voice rules: on the composed GRID session (tests/pipelines/conversation/test_pairing.py)
the speaker count called each microphone's 1 s silent pause speech (25 frames) and ended turns 9-11
frames early at quiet word endings, where the level rule matched every frame; on the mixed track
of the two-shot, which never falls silent, the level rule's noise floor is speech and it missed 27
of 94 frames where the count missed 10. The count is also the one that ignores non-speech sound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pipelines.config import ConversationConfig
from pipelines.schema.conversation import Role, RoleSeconds, role_codes

LEVEL_HOP_S = 0.01  # the level is measured over 10 ms: finer than a 24 fps frame (41.7 ms)
SILENCE_DBFS = -200.0  # the level of digital silence (a zero RMS has no logarithm)


@dataclass(frozen=True)
class Timeline:
    """Values on a regular time grid: ``values[i]`` holds over [start_s + i * step_s, start_s + (i + 1) * step_s)."""

    start_s: float
    step_s: float
    values: np.ndarray

    def at(self, times: np.ndarray, outside: float | int | bool = 0) -> np.ndarray:
        """The value holding at each of ``times``; ``outside`` before the first and after the last cell."""
        times = np.asarray(times, dtype=np.float64)
        values = np.asarray(self.values)
        if not len(values):
            return np.full(times.shape, outside, dtype=values.dtype)
        cell = np.floor((times - self.start_s) / self.step_s + 1e-9).astype(np.int64)
        inside = (cell >= 0) & (cell < len(values))
        return np.where(inside, values[np.clip(cell, 0, len(values) - 1)], outside).astype(values.dtype)

    def shifted(self, offset_s: float) -> Timeline:
        """The same values ``offset_s`` later (a source's clock moved onto the session's)."""
        return Timeline(self.start_s + offset_s, self.step_s, self.values)


def frame_times(start_s: float, frames: int, fps: float) -> np.ndarray:
    """The time each output frame shows: ``start_s + (k + 0.5) / fps``."""
    return start_s + (np.arange(frames) + 0.5) / fps


def levels_dbfs(samples: np.ndarray, sample_rate: int, hop_s: float = LEVEL_HOP_S) -> np.ndarray:
    """RMS level of each whole ``hop_s`` of float samples in [-1, 1), in dB relative to full scale."""
    hop = max(1, int(round(hop_s * sample_rate)))
    count = len(samples) // hop
    frames = np.asarray(samples[: count * hop]).reshape(count, hop)
    rms = np.sqrt(np.einsum("ij,ij->i", frames, frames, dtype=np.float64) / hop)  # no squared copy of an hour
    with np.errstate(divide="ignore"):
        return np.maximum(20 * np.log10(rms), SILENCE_DBFS)


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index runs of True."""
    edges = np.diff(np.concatenate([[0], np.asarray(mask, dtype=np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def bridge_gaps(mask: np.ndarray, max_gap: int) -> np.ndarray:
    """``mask`` with runs of False shorter than ``max_gap`` between two True runs set True."""
    out = np.asarray(mask, dtype=bool).copy()
    found = runs(out)
    for (_, end), (start, _) in zip(found, found[1:]):
        if start - end < max_gap:
            out[end:start] = True
    return out


def drop_short(mask: np.ndarray, min_run: int) -> np.ndarray:
    """``mask`` without its True runs shorter than ``min_run``."""
    out = np.asarray(mask, dtype=bool).copy()
    for start, end in runs(out):
        if end - start < min_run:
            out[start:end] = False
    return out


def voice_activity(samples: np.ndarray, sample_rate: int, start_s: float, config: ConversationConfig) -> Timeline:
    """Where one audio track is voiced, as a bool :class:`Timeline` starting at ``start_s``.

    A 10 ms stretch is voiced when its level exceeds the track's noise floor (its
    ``noise_floor_percentile`` level, not below ``min_noise_floor_dbfs``) by ``voice_margin_db``;
    unvoiced gaps shorter than ``max_pause_s`` between voiced stretches are bridged first, then
    voiced stretches shorter than ``min_voice_s`` are dropped.
    """
    levels = levels_dbfs(samples, sample_rate)
    if not len(levels):
        return Timeline(start_s, LEVEL_HOP_S, np.zeros(0, dtype=bool))
    floor = max(float(np.percentile(levels, config.noise_floor_percentile)), config.min_noise_floor_dbfs)
    voiced = levels > floor + config.voice_margin_db
    voiced = bridge_gaps(voiced, int(math.ceil(config.max_pause_s / LEVEL_HOP_S)))
    voiced = drop_short(voiced, int(math.ceil(config.min_voice_s / LEVEL_HOP_S)))
    return Timeline(start_s, LEVEL_HOP_S, voiced)


def per_participant_roles(actor_voiced: np.ndarray, others_voiced: Sequence[np.ndarray]) -> np.ndarray:
    """Role codes from the actor's own microphone and the other participants' (bool per frame each)."""
    actor = np.asarray(actor_voiced, dtype=bool)
    other = np.zeros_like(actor)
    for voiced in others_voiced:
        other |= np.asarray(voiced, dtype=bool)
    return role_codes(actor, other)


def shared_video_roles(speakers: np.ndarray, actor_probability: np.ndarray,
                       others_probability: Sequence[np.ndarray], threshold: float) -> np.ndarray:
    """Role codes from one mixed track's speaker count per frame and the speaking probability of the
    actor's face and of every other face on screen (0 where a face is not)."""
    voiced = np.asarray(speakers) >= 1
    overlap = np.asarray(speakers) >= 2
    actor = voiced & (np.asarray(actor_probability) >= threshold)
    other_face = np.zeros_like(voiced)
    for probability in others_probability:
        other_face |= np.asarray(probability) >= threshold
    return role_codes(actor, voiced & (~actor | overlap | other_face))


def voice_turn_roles(labels: np.ndarray, actor: int, overlap: np.ndarray, actor_sure: np.ndarray,
                     others_sure: np.ndarray, no_voice: int) -> np.ndarray:
    """Role codes from the voice turns (pipelines/conversation/voices.py): per frame the class of the
    voice that holds (a face's row, the off-screen voice, or ``no_voice``), the actor's row, the
    speaker count's overlap, and whether the actor's face / another face surely speaks (Light-ASD's
    enrollment rule). The actor speaks where their voice holds, someone else where another voice
    does; under overlap the second voice is counted only where its face surely speaks."""
    labels = np.asarray(labels)
    voiced = labels != no_voice
    overlap = np.asarray(overlap, dtype=bool)
    actor_speaks = voiced & ((labels == actor) | (overlap & np.asarray(actor_sure, dtype=bool)))
    other_speaks = voiced & ((labels != actor) | (overlap & np.asarray(others_sure, dtype=bool)))
    return role_codes(actor_speaks, other_speaks)


def role_seconds(codes: np.ndarray, fps: float) -> RoleSeconds:
    """Seconds of each role in ``codes``."""
    codes = np.asarray(codes)
    return RoleSeconds(**{role.name.lower(): round(float((codes == role).sum()) / fps, 4) for role in Role})


def sample_mask(frame_mask: np.ndarray, samples: int, sample_rate: int, fps: float) -> np.ndarray:
    """A per-frame mask stretched to ``samples`` audio samples (sample s lies in frame floor(s * fps / rate))."""
    frame_mask = np.asarray(frame_mask, dtype=bool)
    if not len(frame_mask):
        return np.zeros(samples, dtype=bool)
    frame = np.minimum((np.arange(samples) * fps / sample_rate + 1e-9).astype(np.int64), len(frame_mask) - 1)
    return frame_mask[frame]


def frames_on_grid(times: np.ndarray, start_s: float, frames: int, fps: float) -> np.ndarray:
    """For each of ``times``, the frame of a clip (``frames`` frames from ``start_s``) whose display
    interval [start_s + j / fps, start_s + (j + 1) / fps) holds it; -1 outside the clip."""
    index = np.floor((np.asarray(times, dtype=np.float64) - start_s) * fps + 1e-9).astype(np.int64)
    return np.where((index >= 0) & (index < frames), index, -1)


def most_overlapping(span: tuple[float, float], intervals: Mapping[str, Sequence[tuple[float, float]]]) -> str | None:
    """The id whose intervals overlap ``span`` longest (ties: the first id in sorted order); None when none does."""
    best, best_overlap = None, 0.0
    for name in sorted(intervals):
        overlap = sum(max(0.0, min(span[1], end) - max(span[0], start)) for start, end in intervals[name])
        if overlap > best_overlap + 1e-9:
            best, best_overlap = name, overlap
    return best


def busiest(voiced: Mapping[str, np.ndarray]) -> str | None:
    """The id with the most voiced frames (ties: the first id in sorted order); None for no ids."""
    best, most = None, -1
    for name in sorted(voiced):
        count = int(np.count_nonzero(voiced[name]))
        if count > most:
            best, most = name, count
    return best
