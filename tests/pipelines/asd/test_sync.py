"""Audio-video offset from Light-ASD with shifted audio: the curve's reading, the batched
scoring, and the ASD stage on GRID clips with their audio delayed, advanced or replaced."""

from __future__ import annotations

import shutil
import subprocess
import types
from pathlib import Path

import numpy as np
import pytest

import pipelines.fixtures.media as mf
from pipelines.asd.stage import face_track_25
from pipelines.asd.sync import SYNC_FPS, best_shift, measure_offset, parabolic_refinement
from pipelines.config import load_config
from pipelines.runner import run_source
from pipelines.schema.records import Segment
from stage_fixtures import SharedDetectorBackends, scan

OUTPUT_FRAME_S = 1 / 24  # the required accuracy: one output frame
SHIFT_MS = 200
# Stranger voices are rejected below this (bench/bench_sync.py: matched GRID clips >= ~?, strangers <= ~?).
MIN_CONFIDENCE = None  # filled from the bench below


def _logits_with_peak(curve: np.ndarray, frames: int = 20, speaking: bool = True) -> np.ndarray:
    """(S, T, 2) logits whose speaking margin is ``curve[k]`` on every frame (silent logit 0)."""
    margin = np.repeat(np.asarray(curve, dtype=np.float64)[:, None], frames, axis=1)
    if not speaking:
        margin = margin - margin.max() - 1.0
    return np.stack([np.zeros_like(margin), margin], axis=-1)


def test_the_curve_peaks_where_the_audio_fits_and_the_sign_says_late_audio_is_positive():
    shifts = np.arange(-8, 9)
    curve = -np.abs(shifts - 5).astype(float) + 2.0  # the audio of frame t + 5 fits frame t best
    measure = measure_offset(_logits_with_peak(curve), threshold=0.5)
    assert measure.best_frames == 5 and measure.offset_s == pytest.approx(5 / SYNC_FPS)
    assert measure.confidence == pytest.approx(curve.max() - np.median(curve))
    assert measure.summary()["shifts"] == list(range(-8, 9))


def test_frames_never_speaking_do_not_count_and_none_when_the_face_never_speaks():
    curve = np.linspace(-1.0, 1.0, 17)
    assert measure_offset(_logits_with_peak(curve, speaking=False), threshold=0.5) is None
    speaking = _logits_with_peak(-np.abs(np.arange(-8, 9) + 3.0) + 3.0, frames=10)
    silent = _logits_with_peak(np.linspace(-9, -5, 17), frames=30)  # rising towards +8, never speaking
    measure = measure_offset(np.concatenate([speaking, silent], axis=1), threshold=0.5)
    assert measure.speaking_frames == 10 and measure.best_frames == -3


def test_parabolic_refinement_finds_the_vertex_between_shifts():
    shifts = np.arange(-8, 9)
    curve = -(shifts - 2.3) ** 2
    index = best_shift(curve)
    assert index - 8 == 2
    assert index - 8 + parabolic_refinement(curve, index) == pytest.approx(2.3)
    assert parabolic_refinement(curve, 0) == 0.0  # no neighbour on one side: no refinement


def test_equal_maxima_go_to_the_shift_nearest_zero():
    curve = np.zeros(17)
    curve[[2, 10, 14]] = 1.0
    assert best_shift(curve) == 10


@pytest.fixture(scope="module")
def scorer(model_dir):
    from pipelines.asd.score import ActiveSpeakerScorer

    path = model_dir / "light-asd" / "pretrain_AVA_CVPR.model"
    if not path.is_file():
        pytest.skip("Light-ASD weights not in the model dir")
    return ActiveSpeakerScorer(path, window_frames=40, overlap_frames=10)


def test_shifted_scoring_without_shifts_is_the_plain_pass(scorer):
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 255, size=(70, 112, 112), dtype=np.uint8)  # two overlapping windows
    audio = rng.integers(-3000, 3000, size=70 * 640, dtype=np.int16)
    shifted = scorer.shifted_logits(faces, audio, 0)
    assert shifted.shape == (1, 70, 2)
    np.testing.assert_allclose(shifted[0], scorer.logits(faces, audio), atol=1e-4)


def test_each_shift_row_hears_the_audio_moved_by_its_frames(scorer):
    """Row k of a widened call = a plain call on audio starting k frames later, away from the ends."""
    rng = np.random.default_rng(1)
    faces = rng.integers(0, 255, size=(30, 112, 112), dtype=np.uint8)
    n = 3
    audio = rng.integers(-3000, 3000, size=(30 + 2 * n) * 640, dtype=np.int16)
    shifted = scorer.shifted_logits(faces, audio, n)
    for k in (-n, 0, 2):
        start = (n + k) * 640
        plain = scorer.shifted_logits(faces, audio[start:start + 30 * 640], 0)[0]
        # The plain call sees zero padding where the widened one sees real audio, a few frames
        # at each end; through the bidirectional GRU that moves the rest only slightly.
        np.testing.assert_allclose(shifted[k + n, 8:-8], plain[8:-8], atol=0.3)
