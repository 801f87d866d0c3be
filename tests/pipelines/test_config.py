"""The validated configuration: defaults, strictness, YAML and environment overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from pipelines.config import (CONFIG_ENV, DATA_DIR_ENV, INPUT_DIR_ENV, MODEL_DIR_ENV, PipelineConfig,
                              load_config)

REPO = Path(__file__).resolve().parents[2]


def test_defaults_match_the_design_numbers():
    cfg = load_config()
    assert cfg.crops.scale == 1.5
    assert cfg.crops.size_px == 384
    assert cfg.crops.fps == 24.0
    assert cfg.audio.sample_rate == 16000
    assert cfg.audio.channels == 1
    assert cfg.tracking.max_gap_s == 1.0
    assert cfg.faces.backend == "scrfd"
    assert cfg == PipelineConfig()


@pytest.mark.parametrize(
    "raw",
    [
        {"crops": {"scael": 2.0}},  # typo in a nested key
        {"crop": {"scale": 2.0}},  # typo in a section
        {"paths": {"model_directory": "/x"}},
    ],
)
def test_unknown_keys_raise(raw):
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        PipelineConfig.model_validate(raw)


def test_unknown_key_in_yaml_raises(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("tracking:\n  max_gap: 2.0\n")
    with pytest.raises(ValidationError, match="max_gap"):
        load_config(path)


@pytest.mark.parametrize("raw", [{"crops": {"scale": 0.5}}, {"faces": {"backend": "dlib"}},
                                 {"tracking": {"min_segment_s": 0.01}}])
def test_invalid_values_raise(raw):
    with pytest.raises(ValidationError):
        PipelineConfig.model_validate(raw)


@pytest.mark.parametrize("rate", [8000, 22050, 44100])
def test_audio_rate_other_than_16k_is_refused_naming_the_models(rate: int):
    with pytest.raises(ValidationError, match=rf"must be 16000 Hz.*Light-ASD.*Whisper.*got {rate} Hz"):
        PipelineConfig.model_validate({"audio": {"sample_rate": rate}})


def test_config_is_frozen():
    cfg = PipelineConfig()
    with pytest.raises(ValidationError):
        cfg.crops.scale = 2.0  # type: ignore[misc]


def test_yaml_loading(tmp_path: Path):
    path = tmp_path / "cfg.yaml"
    path.write_text(
        "paths:\n"
        f"  model_dir: {tmp_path / 'models'}\n"
        "crops:\n"
        "  size_px: 256\n"
        "  fps: 25\n"
        "tracking:\n"
        "  max_gap_s: 0.5\n"
        "faces:\n"
        "  backend: mediapipe\n"
    )
    cfg = load_config(path)
    assert cfg.crops.size_px == 256
    assert cfg.crops.fps == 25.0
    assert cfg.crops.scale == 1.5  # untouched fields keep their defaults
    assert cfg.tracking.max_gap_s == 0.5
    assert cfg.faces.backend == "mediapipe"
    assert cfg.paths.model_dir == (tmp_path / "models").resolve()


def test_yaml_from_environment_and_overrides(tmp_path: Path, monkeypatch):
    path = tmp_path / "cfg.yaml"
    path.write_text("crops:\n  size_px: 128\n  scale: 2.0\n")
    monkeypatch.setenv(CONFIG_ENV, str(path))
    cfg = load_config(crops={"scale": 1.25})
    assert cfg.crops.size_px == 128  # from the file named by the environment
    assert cfg.crops.scale == 1.25  # keyword overrides beat the file


def test_empty_yaml_gives_defaults(tmp_path: Path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path) == load_config()


def test_yaml_must_be_a_mapping(tmp_path: Path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="mapping"):
        load_config(path)


def test_env_overrides_model_dir(tmp_path: Path, monkeypatch):
    path = tmp_path / "cfg.yaml"
    path.write_text(f"paths:\n  model_dir: {tmp_path / 'from_yaml'}\n")
    monkeypatch.setenv(MODEL_DIR_ENV, str(tmp_path / "from_env"))
    assert load_config(path).paths.model_dir == tmp_path / "from_env"
    assert load_config().paths.model_dir == tmp_path / "from_env"
    # Explicit keyword paths beat the environment.
    assert load_config(paths={"model_dir": tmp_path / "kw"}).paths.model_dir == tmp_path / "kw"


def test_env_overrides_data_and_input_dirs(tmp_path: Path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "data"))
    monkeypatch.setenv(INPUT_DIR_ENV, str(tmp_path / "in"))
    cfg = load_config()
    assert cfg.paths.data_dir == tmp_path / "data"
    assert cfg.paths.input_dir == tmp_path / "in"
    assert cfg.paths.shards_dir == tmp_path / "data" / "shards"
    assert cfg.paths.registry_path == tmp_path / "data" / "sources.json"


def test_relative_paths_resolve_against_current_dir(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(paths={"model_dir": "models", "data_dir": "~/somewhere"})
    assert cfg.paths.model_dir == tmp_path.resolve() / "models"
    assert cfg.paths.model_dir.is_absolute()
    assert "~" not in str(cfg.paths.data_dir)


def test_content_hash_ignores_paths_but_not_thresholds(tmp_path: Path):
    base = load_config(paths={"data_dir": tmp_path / "a"})
    assert load_config(paths={"data_dir": tmp_path / "b"}).content_hash() == base.content_hash()
    assert load_config(crops={"scale": 1.6}).content_hash() != base.content_hash()
    assert load_config(tracking={"max_gap_s": 0.5}).content_hash() != base.content_hash()


def test_example_config_validates(monkeypatch):
    example = REPO / "config" / "example.yaml"
    if not example.is_file():
        pytest.skip(f"{example} is not in the repository yet")
    cfg = load_config(example)
    assert isinstance(cfg, PipelineConfig)
