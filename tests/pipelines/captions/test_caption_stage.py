"""The caption stage on a real clip: tiny random Qwen2-VL / Qwen2.5-VL / Qwen3-VL folders
loaded by the production code, captions cached across runs, the rule check flagging a
rule-breaking answer and passing a compliant one; without a model the stage says so and
keeps the clip."""

from __future__ import annotations

import shutil

import pytest

from pipelines.config import load_config
from pipelines.fixtures.qwen_vl import FAMILIES
from pipelines.runner import run_source, run_stage
from pipelines.schema.records import StageResult
from pipelines.stage_spec import StageContext
from pipelines.workdir import source_dir
from stage_fixtures import SharedDetectorBackends, scan

COMPLIANT = "A content man with relaxed brows and soft eyes, mouth corners lifted, gazing at the camera."
BREAKS_RULES = "She is talking. Her brows are up."


def _config(root, inputs, models):
    # Captions alone: the other later stages are off (each has its own tests).
    return load_config(paths={"input_dir": inputs, "data_dir": root / "data", "model_dir": models},
                       asd={"enabled": False}, speech={"enabled": False}, flame={"enabled": False})


@pytest.fixture(scope="module")
def one_clip(tmp_path_factory, grid_clip, model_dir, scrfd_detector):
    """One GRID clip through faces and crops, once for the module: (root, inputs, ref, record)."""
    root = tmp_path_factory.mktemp("caption-stage")
    inputs = root / "input"
    inputs.mkdir()
    shutil.copyfile(grid_clip, inputs / grid_clip.name)
    models = root / "detector-models"
    (models / "scrfd").mkdir(parents=True)
    (models / "scrfd" / "scrfd_500m_kps.onnx").symlink_to(model_dir / "scrfd" / "scrfd_500m_kps.onnx")
    cfg = _config(root, inputs, models)
    (ref,) = scan(cfg).values()
    outcome = run_stage("faces", ref, cfg, SharedDetectorBackends(cfg, scrfd_detector))
    return root, inputs, ref, outcome.result


def _captions(cfg, ref, record, captioner) -> StageResult:
    """The caption stage's own function on the source's face segments (the other later stages are off)."""
    from pipelines.captions.stage import run

    return run(StageContext(ref, cfg, captioner, source_dir(cfg, ref.source_id), "", record,
                            tuple(record.accepted_segments())))


def _private_models(tmp_path):
    """A model folder of this test's own: nothing in it unless the test puts it there."""
    models = tmp_path / "models"
    models.mkdir()
    return models


class ScriptedCaptioner:
    """Answers every request with one fixed text; records the frames it was given."""

    def __init__(self, name, answer):
        self.name = name
        self.answer = answer
        self.frames = []

    def caption(self, frames, instruction):
        self.frames.append(frames)
        return self.answer


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_qwen_captions_each_window_and_the_cache_answers_reruns(one_clip, tiny_qwen_vl, tmp_path, family):
    from pipelines.captions.stage import build_backend

    root, inputs, ref, record = one_clip
    models = _private_models(tmp_path)
    (models / "qwen-vl").symlink_to(tiny_qwen_vl(family), target_is_directory=True)
    cfg = _config(root, inputs, models)
    captioner = build_backend(cfg)
    assert captioner is not None and captioner.model_type == family
    first = _captions(cfg, ref, record, captioner)
    assert first.details == {"backend": cfg.captions.backend, "installed": True}
    (decision,) = first.segments.values()
    payload = decision.payload
    assert payload["model"] == captioner.name and captioner.name.startswith(f"qwen-vl:{family}:")
    windows = payload["windows"]
    assert len(windows) == 1 and len(windows[0]["frames"]) == 8  # a clip under 200 frames is one window
    assert windows[0]["model"] == captioner.name
    assert isinstance(windows[0]["caption"], str) and windows[0]["cached"] is False
    second = _captions(cfg, ref, record, captioner)
    (again,) = second.segments.values()
    assert again.payload["windows"][0]["cached"] is True
    assert again.payload["windows"][0]["caption"] == windows[0]["caption"]


def test_rule_breaking_caption_is_flagged_and_compliant_one_is_not(one_clip, tmp_path):
    root, inputs, ref, record = one_clip
    cfg = _config(root, inputs, _private_models(tmp_path))

    bad = ScriptedCaptioner("scripted:breaks-rules", BREAKS_RULES)
    (decision,) = _captions(cfg, ref, record, bad).segments.values()
    (window,) = decision.payload["windows"]
    assert len(bad.frames) == 2  # the answer, then one retry with the problems named
    assert all(len(f) == 8 and f[0].shape == (384, 384, 3) for f in bad.frames)  # from the 384 px crop
    assert window["flagged"] is True and window["caption"] == BREAKS_RULES
    assert window["problems"] == ["more than one sentence", "uses banned words: talking", "names no specific emotion"]
    assert decision.flags == ["caption_flagged"] and decision.numbers["flagged"] == 1

    good = ScriptedCaptioner("scripted:compliant", COMPLIANT)
    (decision,) = _captions(cfg, ref, record, good).segments.values()
    (window,) = decision.payload["windows"]
    assert len(good.frames) == 1
    assert window["flagged"] is False and window["problems"] == [] and window["caption"] == COMPLIANT
    assert decision.flags == [] and decision.numbers["flagged"] == 0


def test_without_a_model_clips_are_kept_and_flagged(tmp_path, grid_clip, model_dir, scrfd_detector):
    """Through the runner, on a data folder of its own: faces run, captions decide on every face clip."""
    from pipelines.captions.stage import build_backend

    inputs = tmp_path / "input"
    inputs.mkdir()
    shutil.copyfile(grid_clip, inputs / grid_clip.name)
    cfg = _config(tmp_path, inputs, _private_models(tmp_path))
    assert build_backend(cfg) is None
    (ref,) = scan(cfg).values()
    outcomes = run_source(ref, cfg, SharedDetectorBackends(cfg, scrfd_detector), stages=["captions"])
    assert [o.status for o in outcomes] == ["ran", "ran", "disabled", "disabled", "ran"]
    record, result = outcomes[0].result, outcomes[-1].result
    assert result.details["installed"] is False
    assert set(result.segments) == {s.key for s in record.accepted_segments()}
    (decision,) = result.segments.values()
    assert decision.decision == "accepted" and decision.flags == ["caption_model_not_installed"]
    assert "qwen-vl" in decision.payload["detail"]
