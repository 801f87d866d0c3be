"""pyannote diarization backend: a local SpeakerDiarization pipeline folder, loaded offline.

Without real weights the pipeline is built from random-weight models written in the
test's tmp folder (tests/speech_fixtures.py): the output is noise, but loading from a local
config.yaml, running segmentation -> embeddings -> VBx clustering -> reconstruction, and the
conversion to Turns and a SpeakerActivity all run for real. With a real pipeline folder
(``<model dir>/pyannote-diarization/config.yaml``) the overlap ratio on pyannote's sample is
checked against its RTTM.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")

pytest.importorskip("pyannote.audio", reason="pyannote.audio is not installed")

from speech_fixtures import build_random_diarization_pipeline, pyannote_sample, read_rttm  # noqa: E402

from pipelines.media.wav import read_wav_float  # noqa: E402
from pipelines.speech.base import SAMPLE_RATE  # noqa: E402
from pipelines.speech.diarization import (  # noqa: E402
    DiarizationPipelineError,
    PyannoteDiarizationActivity,
)
from pipelines.speech.overlap import activity_from_turns, overlap_stats  # noqa: E402

REAL_PIPELINE = Path("pyannote-diarization") / "config.yaml"
# Read at import: tests/pipelines/conftest.py clears TALKINGHEAD_* for the session before tests run.
MODEL_DIR_FROM_ENV = os.environ.get("TALKINGHEAD_MODEL_DIR")
MAX_OVERLAP_GAP = 0.05


@pytest.fixture(scope="module")
def random_pipeline_dir(tmp_path_factory) -> Path:
    import torch

    torch.set_num_threads(2)
    return build_random_diarization_pipeline(tmp_path_factory.mktemp("random-diarization"))


@pytest.fixture(scope="module")
def grid_speech(grid_clips, tmp_path_factory) -> np.ndarray:
    """Three GRID clips (about 9 s of one talker) concatenated, as 16 kHz mono float32."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    clips = grid_clips[:3]
    out = tmp_path_factory.mktemp("grid-speech") / "grid.wav"
    inputs = [arg for clip in clips for arg in ("-i", str(clip))]
    graph = "".join(f"[{i}:a]" for i in range(len(clips))) + f"concat=n={len(clips)}:v=0:a=1[a]"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *inputs, "-filter_complex", graph,
                    "-map", "[a]", "-ac", "1", "-ar", str(SAMPLE_RATE), "-c:a", "pcm_s16le", str(out)],
                   check=True, capture_output=True)
    from scipy.io import wavfile

    rate, data = wavfile.read(out)
    assert rate == SAMPLE_RATE
    return data.astype(np.float32) / 32768.0


@pytest.fixture(scope="module")
def random_backend(random_pipeline_dir) -> PyannoteDiarizationActivity:
    return PyannoteDiarizationActivity(random_pipeline_dir)


@pytest.mark.filterwarnings("ignore:std\\(\\)")  # pooling over an empty mask (inactive local speaker)
def test_random_pipeline_output_structure(random_backend, random_pipeline_dir, grid_speech):
    duration = len(grid_speech) / SAMPLE_RATE
    assert 8.0 < duration < 12.0
    activity = random_backend.activity(grid_speech)

    assert random_backend.name == f"pyannote-diarization:{random_pipeline_dir.name}"
    assert activity.backend == random_backend.name
    assert activity.start_s == 0.0
    assert len(activity.counts) == math.ceil(duration / activity.step_s)
    assert activity.counts.min() >= 0

    turns = activity.turns
    assert turns, "the biased random segmentation model always finds some speech"
    for turn in turns:
        assert isinstance(turn.speaker, str) and turn.speaker
        assert 0.0 <= turn.start < turn.end <= duration + 1e-6
    assert turns == sorted(turns, key=lambda t: (t.start, t.end, t.speaker))
    # The count timeline is exactly the turns', so the overlap rule reads both the same way.
    rebuilt = activity_from_turns(turns, duration, "check", step_s=activity.step_s)
    np.testing.assert_array_equal(rebuilt.counts, activity.counts)
    stats = overlap_stats(activity)
    assert 0.0 < stats.speech_s <= duration and 0.0 <= stats.ratio <= 1.0


def test_config_file_path_and_empty_audio(random_pipeline_dir):
    backend = PyannoteDiarizationActivity(random_pipeline_dir / "config.yaml", num_speakers=1, step_s=0.02)
    assert backend.config_path == random_pipeline_dir / "config.yaml"
    activity = backend.activity(np.zeros(0, np.float32))
    assert len(activity.counts) == 0 and activity.turns == [] and activity.step_s == 0.02


def test_missing_folder_or_config_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DiarizationPipelineError, match="does not exist") as raised:
        PyannoteDiarizationActivity(missing)
    assert str(missing) in str(raised.value) and "config.yaml" in str(raised.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DiarizationPipelineError, match="has no config.yaml") as raised:
        PyannoteDiarizationActivity(empty)
    assert str(empty) in str(raised.value) and "segmentation/pytorch_model.bin" in str(raised.value)


def test_incomplete_or_hub_config_is_refused_before_loading(tmp_path, random_pipeline_dir):
    folder = tmp_path / "partial"
    shutil.copytree(random_pipeline_dir, folder)
    (folder / "embedding" / "pytorch_model.bin").unlink()
    with pytest.raises(DiarizationPipelineError, match="not fully local") as raised:
        PyannoteDiarizationActivity(folder)
    assert str(folder / "embedding") in str(raised.value) and "pytorch_model.bin" in str(raised.value)

    hub = tmp_path / "hub"
    shutil.copytree(random_pipeline_dir, hub)
    config = (hub / "config.yaml").read_text().replace("$model/embedding", "pyannote/wespeaker-voxceleb-resnet34-LM")
    (hub / "config.yaml").write_text(config)
    with pytest.raises(DiarizationPipelineError, match="Hugging Face hub"):
        PyannoteDiarizationActivity(hub)


def test_token_is_read_from_the_named_variable_and_not_kept(random_pipeline_dir, monkeypatch, caplog):
    from pyannote.audio import Pipeline

    seen = []
    original = Pipeline.from_pretrained.__func__

    def spy(cls, checkpoint, **kwargs):
        seen.append(kwargs.get("token"))
        return original(cls, checkpoint, **kwargs)

    monkeypatch.setattr(Pipeline, "from_pretrained", classmethod(spy))
    secret = "hf_" + "x" * 30
    monkeypatch.setenv("TEST_PYANNOTE_TOKEN", secret)
    backend = PyannoteDiarizationActivity(random_pipeline_dir, hf_token_env="TEST_PYANNOTE_TOKEN")
    assert seen == [secret]  # handed to pyannote (used only for hub downloads)...
    assert secret not in repr(vars(backend))  # ...and not kept or logged
    assert secret not in caplog.text

    monkeypatch.delenv("TEST_PYANNOTE_TOKEN")
    PyannoteDiarizationActivity(random_pipeline_dir, hf_token_env="TEST_PYANNOTE_TOKEN")
    assert seen[-1] is None


def _real_pipeline_config() -> tuple[Path | None, list[Path]]:
    searched = []
    roots = [MODEL_DIR_FROM_ENV]
    shared = os.environ.get("TALKINGHEAD_SHARED_DIR") or Path(__file__).resolve().parents[3].parent / "shared"
    roots.append(str(Path(shared) / "models"))
    for root in filter(None, roots):
        candidate = Path(root).expanduser() / REAL_PIPELINE
        searched.append(candidate)
        if candidate.is_file():
            return candidate, searched
    return None, searched


@pytest.mark.real_weights
def test_real_pipeline_overlap_matches_the_reference_rttm():
    config, searched = _real_pipeline_config()
    if config is None:
        pytest.skip("no real pyannote diarization pipeline: none of "
                    + ", ".join(str(p) for p in searched)
                    + " exists (set $TALKINGHEAD_MODEL_DIR to a folder holding pyannote-diarization/config.yaml "
                      "with its local checkpoints, e.g. a copy of pyannote/speaker-diarization-community-1)")
    import torch

    torch.set_num_threads(2)
    wav, rttm = pyannote_sample()
    audio, turns = read_wav_float(wav, SAMPLE_RATE), read_rttm(rttm)
    duration = len(audio) / SAMPLE_RATE
    reference = overlap_stats(activity_from_turns(turns, duration, "rttm"))
    backend = PyannoteDiarizationActivity(config)
    estimate = overlap_stats(backend.activity(audio))
    report = (f"overlap ratio on pyannote's sample: reference (RTTM) {reference.ratio:.2%}, "
              f"estimate ({backend.name}) {estimate.ratio:.2%}")
    print("\n" + report)
    assert abs(estimate.ratio - reference.ratio) <= MAX_OVERLAP_GAP, report
