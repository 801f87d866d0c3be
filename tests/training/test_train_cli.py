"""``python -m training train ...``: the commands run the trainers and report through exit status."""

from __future__ import annotations

import json
import sys

import pytest
import yaml
from training_fixtures import (  # noqa: F401
    flame_shards_fixture,
    flow_run_fixture,
    tiny_config,
    tiny_encoders_fixture,
    vae_run_fixture,
)

from training.__main__ import main
from training.trainer_base import progress_bar


def _yaml(tmp_path, config: dict):
    path = tmp_path / f"{config['kind']}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_train_sft_dry_run_records_the_datas_rates_in_the_run_config(tmp_path, flame_shards, capsys):
    run_dir = tmp_path / "vae"
    path = _yaml(tmp_path, tiny_config("vae", run_dir, flame_shards))
    assert main(["train", "sft", "--config", str(path), "--dry-run", "--no-progress"]) == 0
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert (saved["data"]["fps"], saved["data"]["sample_rate"], saved["progress"]) == (24.0, 16000, False)
    assert "done: 1 step(s)" in capsys.readouterr().out
    assert not (run_dir / "checkpoints").exists()


def test_a_config_of_the_wrong_kind_exits_with_status_2(tmp_path, flame_shards):
    path = _yaml(tmp_path, tiny_config("rl", tmp_path / "rl", flame_shards))
    assert main(["train", "sft", "--config", str(path)]) == 2
    with pytest.raises(SystemExit):
        main(["train"])  # the sub-command is required


def test_train_evaluate_prints_the_metrics_of_a_flow_run(flow_run, flame_shards, capsys):
    assert main(["train", "evaluate", "--run", str(flow_run), "--shards", str(flame_shards), "--no-progress"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["windows"] == 3
    assert {"dd_upper_face", "dd_jaw", "dd_head_pose"} <= metrics.keys() and metrics["dd_jaw"] >= 0.0


def test_progress_bars_show_only_on_a_terminal_and_when_asked(monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert progress_bar(5, "x", enabled=True).disable
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert not progress_bar(5, "x", enabled=True).disable
    assert progress_bar(5, "x", enabled=False).disable
