"""Light-ASD windows of several face tracks batched into shared forward passes give the same
scores as scoring each track alone, one window per pass (real weights, real GRID faces).

Tracks: GRID clips cropped with SCRFD boxes and face_crop_112; some cut short (their
windows are shorter than window_frames) and one made of two clips back to back (two
overlapping full-length windows), so the batches mix tracks and window lengths.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from pipelines.asd.features import SAMPLE_RATE, face_crop_112
from pipelines.asd.score import ActiveSpeakerScorer

pytestmark = pytest.mark.real_weights

SAMPLES_PER_FRAME = SAMPLE_RATE // 25
MAX_SHIFT = 2


def _faces_and_audio(path: Path, detector) -> tuple[np.ndarray, np.ndarray]:
    faces = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")
            face = max(detector.detect(rgb), key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
            faces.append(face_crop_112(rgb, face.box))
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-vn", "-f", "s16le", "-ac", "1",
                          "-ar", str(SAMPLE_RATE), "-"], capture_output=True, check=True).stdout
    return np.stack(faces), np.frombuffer(raw, dtype="<i2").copy()


@pytest.fixture(scope="module")
def weights(light_asd_weights: Path) -> Path:
    return light_asd_weights


@pytest.fixture(scope="module")
def tracks(grid_clips: list[Path], scrfd_detector, weights) -> list[tuple[np.ndarray, np.ndarray]]:
    clips = [_faces_and_audio(path, scrfd_detector) for path in grid_clips[:3]]
    (faces_a, audio_a), (faces_b, audio_b), (faces_c, audio_c) = clips
    long_faces = np.concatenate([faces_a, faces_b])  # 150 frames: windows at 0 and 50
    long_audio = np.concatenate([audio_a[:len(faces_a) * SAMPLES_PER_FRAME], audio_b])
    return [
        (faces_a, audio_a),
        (faces_b[10:50], audio_b[10 * SAMPLES_PER_FRAME:]),  # 40 frames: one short window
        (long_faces, long_audio),
        (faces_c[5:45], audio_c[5 * SAMPLES_PER_FRAME:]),  # 40 frames again: batched with the other
        (faces_c[:0], audio_c[:0]),  # an empty track has no windows and empty scores
        (faces_c, audio_c),
    ]


def _visual_encoder_calls(scorer: ActiveSpeakerScorer) -> list[int]:
    """Batch sizes seen by the visual encoder, recorded around LightASD.encode_visual."""
    sizes: list[int] = []
    encode = scorer.model.encode_visual  # every visual pass, the module's or its folded copy's

    def counted(video):
        sizes.append(video.shape[0])
        return encode(video)

    scorer.model.encode_visual = counted
    return sizes


def test_batched_plain_scores_equal_per_track_scores(weights, tracks):
    alone = ActiveSpeakerScorer(weights, batch_windows=1)
    together = ActiveSpeakerScorer(weights, batch_windows=8)
    passes = _visual_encoder_calls(together)
    batched = together.logits_many(tracks)
    assert len(batched) == len(tracks)
    for (faces, audio), got in zip(tracks, batched):
        want = alone.logits(faces, audio)
        assert got.shape == want.shape == (len(faces), 2)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    # Windows: two 75-frame tracks (one window each), 150 frames (two 100-frame windows), two
    # 40-frame tracks: grouped by length into three passes of two instead of six passes.
    assert sorted(passes) == [2, 2, 2]
    probabilities = together.probabilities_many(tracks)
    np.testing.assert_allclose(probabilities[0], alone.probabilities(*tracks[0]), atol=1e-5, rtol=0)


def test_batched_shifted_scores_equal_per_track_scores(weights, tracks):
    alone = ActiveSpeakerScorer(weights, batch_windows=1)
    together = ActiveSpeakerScorer(weights, batch_windows=2)
    passes = _visual_encoder_calls(together)
    padded = [(faces, np.concatenate([np.zeros(MAX_SHIFT * SAMPLES_PER_FRAME, np.int16), audio]))
              for faces, audio in tracks]
    batched = together.shifted_scores_many(padded, MAX_SHIFT)
    for (faces, audio), (logits, visual) in zip(padded, batched):
        want_logits, want_visual = alone.shifted_scores(faces, audio, MAX_SHIFT)
        assert logits.shape == want_logits.shape == (2 * MAX_SHIFT + 1, len(faces), 2)
        np.testing.assert_allclose(logits, want_logits, atol=1e-5, rtol=0)
        np.testing.assert_allclose(visual, want_visual, atol=1e-5, rtol=0)
    assert passes == [2, 2, 2]  # batch_windows = 2: each length's pair fills one pass
    # The speaking GRID faces score as speaking mid-clip through the batched path too.
    probability = 1 / (1 + np.exp(-(batched[0][0][MAX_SHIFT, 30:50, 1] - batched[0][0][MAX_SHIFT, 30:50, 0])))
    assert probability.mean() > 0.5


def test_window_count_matches_the_plan(weights):
    scorer = ActiveSpeakerScorer(weights, batch_windows=4)
    assert [scorer.window_count(n) for n in (0, 40, 100, 150, 176, 250)] == [0, 1, 1, 2, 3, 3]
