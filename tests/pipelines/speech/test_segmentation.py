"""pyannote segmentation backend: a real offline overlap estimate against a reference RTTM.

The model is the pyannote/segmentation v2 checkpoint bundled in the whisperx wheel; the audio
and its reference are pyannote.audio's own sample (sample.wav, sample.rttm: two speakers,
30 s, 8.4% of speech overlapped). Run with ``-s`` to see the two numbers printed; they are
also in the assertion message.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")

pytest.importorskip("pyannote.audio", reason="pyannote.audio is not installed")

from speech_fixtures import pyannote_sample, read_rttm  # noqa: E402

from pipelines.media.wav import read_wav_float  # noqa: E402
from pipelines.speech.base import SAMPLE_RATE, Turn  # noqa: E402
from pipelines.speech.overlap import activity_from_turns, overlap_stats  # noqa: E402
from pipelines.speech.segmentation import (  # noqa: E402
    PyannoteSegmentationActivity,
    SegmentationModelError,
    bundled_segmentation_model_path,
)

MAX_OVERLAP_GAP = 0.03  # percentage points / 100


@pytest.fixture(scope="module")
def segmenter() -> PyannoteSegmentationActivity:
    import torch

    torch.set_num_threads(2)
    try:
        bundled_segmentation_model_path()
    except SegmentationModelError as exc:
        pytest.skip(str(exc))
    return PyannoteSegmentationActivity()


@pytest.fixture(scope="module")
def sample_audio() -> tuple[np.ndarray, list[Turn]]:
    wav, rttm = pyannote_sample()
    return read_wav_float(wav, SAMPLE_RATE), read_rttm(rttm)


def test_overlap_ratio_matches_the_reference_rttm(segmenter, sample_audio):
    import time

    audio, turns = sample_audio
    duration = len(audio) / SAMPLE_RATE
    reference = overlap_stats(activity_from_turns(turns, duration, "rttm"))

    started = time.perf_counter()
    activity = segmenter.activity(audio)
    elapsed = time.perf_counter() - started
    estimate = overlap_stats(activity, 0.0, duration)

    report = (f"overlap ratio on pyannote's sample ({duration:.1f} s): reference (RTTM) "
              f"{reference.ratio:.2%} of {reference.speech_s:.2f} s speech, estimate ({segmenter.name}) "
              f"{estimate.ratio:.2%} of {estimate.speech_s:.2f} s speech; "
              f"{elapsed:.2f} s = {elapsed / duration:.3f} s per audio second")
    print("\n" + report)
    assert reference.ratio == pytest.approx(0.084, abs=0.002), report
    assert abs(estimate.ratio - reference.ratio) <= MAX_OVERLAP_GAP, report
    # Speech itself agrees too (the RTTM covers 22.5 s of the 30 s).
    assert abs(estimate.speech_s - reference.speech_s) <= 1.5, report


def test_silence_has_no_speech(segmenter):
    rng = np.random.default_rng(0)
    for audio in (np.zeros(6 * SAMPLE_RATE, np.float32),
                  (1e-4 * rng.standard_normal(6 * SAMPLE_RATE)).astype(np.float32)):
        stats = overlap_stats(segmenter.activity(audio))
        assert stats.speech_s < 0.1, stats
        assert stats.overlap_s == 0.0, stats


@pytest.mark.parametrize("seconds", [30.0, 7.3, 2.0, 0.05])
def test_frame_grid_covers_the_audio(segmenter, sample_audio, seconds):
    audio = sample_audio[0][: int(seconds * SAMPLE_RATE)]
    duration = len(audio) / SAMPLE_RATE
    activity = segmenter.activity(audio)
    end = activity.start_s + len(activity.counts) * activity.step_s
    assert activity.backend == segmenter.name == "pyannote-segmentation:whisperx/pytorch_model.bin"
    assert activity.step_s == pytest.approx(segmenter.frame_step_s) and 0.01 < activity.step_s < 0.02
    assert 0.0 <= activity.start_s < activity.step_s * 2  # frames are centred on the model's receptive fields
    assert duration <= end < duration + activity.step_s
    assert activity.counts.dtype.kind == "i" and activity.counts.min() >= 0
    assert activity.counts.max() <= segmenter.max_speakers_per_window
    assert activity.turns == []


def test_empty_audio(segmenter):
    activity = segmenter.activity(np.zeros(0, np.float32))
    assert len(activity.counts) == 0 and overlap_stats(activity).speech_s == 0.0


def test_deterministic_and_step_configurable(segmenter, sample_audio):
    audio = sample_audio[0][: 12 * SAMPLE_RATE]
    first, second = segmenter.activity(audio), segmenter.activity(audio)
    np.testing.assert_array_equal(first.counts, second.counts)

    # A 2.5 s step runs the 5 s model over 4 windows instead of 15 on these 12 s, so each frame
    # is averaged over 2 windows instead of 10: the output grid (the model's frames) stays, the
    # counts change where speakers overlap (measured: 12 of 710 frames, overlap 0.57 s vs 0.66 s).
    other = PyannoteSegmentationActivity(step_s=2.5).activity(audio)
    assert (other.start_s, other.step_s, len(other.counts)) == (first.start_s, first.step_s, len(first.counts))
    changed = int((other.counts != first.counts).sum())
    assert changed > 0, "the step setting did not reach the sliding-window inference"
    assert overlap_stats(other).overlap_s != overlap_stats(first).overlap_s
    # Same model, other step: speech agrees closely.
    assert abs(overlap_stats(other).speech_s - overlap_stats(first).speech_s) < 1.0
    with pytest.raises(ValueError, match="step_s must be in"):
        PyannoteSegmentationActivity(step_s=6.0)  # longer than the 5 s window: audio would be skipped


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere" / "pytorch_model.bin"
    with pytest.raises(SegmentationModelError, match="does not exist") as raised:
        PyannoteSegmentationActivity(missing)
    assert str(missing) in str(raised.value)
    with pytest.raises(SegmentationModelError, match="no pytorch_model.bin"):
        PyannoteSegmentationActivity(tmp_path)
