"""The caption stage on a real clip: a tiny random Qwen2-VL loaded by the production code,
captions cached across runs; without a model the stage says so and keeps the clip."""

from __future__ import annotations

import shutil

import pytest

from pipelines.config import load_config
from pipelines.ingest import SourceRegistry
from pipelines.sources import process_source


def _config(root, inputs, models):
    # Captions alone: the other later stages are off (each has its own tests).
    return load_config(paths={"input_dir": inputs, "data_dir": root / "data", "model_dir": models},
                       asd={"enabled": False}, speech={"enabled": False}, flame={"enabled": False})


@pytest.fixture
def one_clip(tmp_path, grid_clip, model_dir, scrfd_detector):
    inputs = tmp_path / "input"
    inputs.mkdir()
    shutil.copyfile(grid_clip, inputs / grid_clip.name)
    models = tmp_path / "models"
    (models / "scrfd").mkdir(parents=True)
    (models / "scrfd" / "scrfd_500m_kps.onnx").symlink_to(model_dir / "scrfd" / "scrfd_500m_kps.onnx")
    cfg = _config(tmp_path, inputs, models)
    (ref,) = SourceRegistry(cfg.paths.registry_path).scan(inputs, cfg.ingest.extensions)
    return cfg, ref, process_source(ref, cfg, scrfd_detector), models


def test_tiny_qwen_captions_each_window_and_the_cache_answers_reruns(one_clip):
    from caption_fixtures import build_tiny_qwen2vl
    from pipelines.captions.stage import build_captioner, run_caption_stage

    cfg, ref, record, models = one_clip
    build_tiny_qwen2vl(models / "qwen-vl")
    captioner = build_captioner(cfg)
    assert captioner is not None and captioner.name.startswith("qwen-vl")
    first = run_caption_stage(ref, record, cfg, captioner)
    (decision,) = first["segments"].values()
    windows = decision["payload"]["windows"]
    assert len(windows) == 1 and len(windows[0]["frames"]) == 8  # a 72-frame clip is one window
    assert isinstance(windows[0]["caption"], str) and windows[0]["cached"] is False
    # Random weights write noise, which the rule check flags rather than hides.
    assert windows[0]["flagged"] == bool(windows[0]["problems"])
    second = run_caption_stage(ref, record, cfg, captioner)
    (again,) = second["segments"].values()
    assert again["payload"]["windows"][0]["cached"] is True
    assert again["payload"]["windows"][0]["caption"] == windows[0]["caption"]


def test_without_a_model_clips_are_kept_and_flagged(one_clip):
    from pipelines.captions.stage import build_captioner, run_caption_stage

    cfg, ref, record, _ = one_clip
    assert build_captioner(cfg) is None
    (decision,) = run_caption_stage(ref, record, cfg, None)["segments"].values()
    assert decision["decision"] == "accepted" and decision["flags"] == ["caption_model_not_installed"]
    assert "qwen-vl" in decision["payload"]["detail"]
