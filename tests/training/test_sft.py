"""SFT on pipeline shards: overfitting, gradient accumulation, exact resume, the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
import yaml
from training_fixtures import (  # noqa: F401
    REPO_ROOT,
    flame_shards_fixture,
    tiny_config,
    tiny_encoders_fixture,
    vae_run_fixture,
)

from training.checkpoint import checkpoint_dirs
from training.config import load_run_config
from training.data import batches, train_pipeline
from training.sft import run_sft
from training.trainer_base import LOG_FILE


def test_overfitting_one_batch_cuts_the_flow_loss_by_90_percent(tmp_path, flame_shards, tiny_encoders, vae_run):
    """One batch, repeated with its per-sample draws (noise, tau): a fixed regression the model must fit."""
    config = load_run_config(None, **tiny_config(
        "flow", tmp_path / "run", flame_shards, tiny_encoders, vae_run, steps=40, save_every=1000,
        optim={"lr": 3e-3, "grad_clip": None}, flow={"audio_drop": 0.0, "text_drop": 0.0}))
    batch = next(batches(train_pipeline(config.data, seed=0), config.data))
    rows = run_sft(config, fixed_batch=batch)
    assert len(rows) == 40
    assert rows[-1]["loss"] <= 0.1 * rows[0]["loss"], [round(r["loss"], 4) for r in rows]


def _one_sgd_step(tmp_path, shards, name: str, batch_size: int, accum: int) -> dict[str, torch.Tensor]:
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()  # a fresh accelerator per run, with this run's accumulation count
    config = load_run_config(None, **tiny_config(
        "vae", tmp_path / name, shards, steps=1, save_every=1,
        data={"batch_size": batch_size}, optim={"name": "sgd", "lr": 1.0, "grad_clip": None, "grad_accum": accum}))
    run_sft(config)
    from safetensors.torch import load_file

    return load_file(str(checkpoint_dirs(tmp_path / name)[-1] / "model.safetensors"))


def test_two_accumulated_micro_batches_equal_one_double_batch(tmp_path, flame_shards):
    """SGD with lr 1 moves each weight by minus its gradient: equal updates mean equal gradients."""
    accumulated = _one_sgd_step(tmp_path, flame_shards, "accum", batch_size=2, accum=2)
    single = _one_sgd_step(tmp_path, flame_shards, "single", batch_size=4, accum=1)
    moved = 0
    for name, value in single.items():
        torch.testing.assert_close(accumulated[name], value, rtol=1e-5, atol=1e-6)
        moved += int(name.endswith("weight"))
    assert moved > 0
    halved = _one_sgd_step(tmp_path, flame_shards, "half", batch_size=2, accum=1)  # one micro-batch only
    assert any(not torch.allclose(halved[n], single[n], atol=1e-6) for n in single)


def test_resuming_gives_the_same_next_step_loss(tmp_path, flame_shards, tiny_encoders, vae_run):
    """Dropout on, EMA on, two micro-batches per step: RNGs, EMA, optimizer and data position all matter."""
    def config(name, steps):
        return load_run_config(None, **tiny_config(
            "flow", tmp_path / name, flame_shards, tiny_encoders, vae_run, steps=steps, save_every=2,
            data={"batch_size": 2}, flow={"dropout": 0.2},
            optim={"lr": 1e-3, "grad_accum": 2, "ema_decay": 0.9, "warmup_steps": 3}))

    straight = run_sft(config("straight", 3))
    first = run_sft(config("resumed", 2))
    assert [r["step"] for r in first] == [1, 2] and first[1]["loss"] == straight[1]["loss"]
    resumed = run_sft(config("resumed", 3))
    assert [r["step"] for r in resumed] == [3]
    assert abs(resumed[0]["loss"] - straight[2]["loss"]) <= 1e-6, (resumed[0]["loss"], straight[2]["loss"])
    assert resumed[0]["lr"] == straight[2]["lr"]
    checkpoint = checkpoint_dirs(tmp_path / "resumed")[-1]
    assert {"stats.json", "config.yaml", "model.safetensors", "optimizer.bin", "scheduler.bin"} <= {
        p.name for p in checkpoint.iterdir()}
    logged = [json.loads(line) for line in (tmp_path / "resumed" / LOG_FILE).read_text().splitlines()]
    assert [row["step"] for row in logged] == [1, 2, 3]


def test_the_sft_command_dry_run_builds_everything_and_runs_one_step(tmp_path, flame_shards):
    config_file = tmp_path / "vae.yaml"
    config_file.write_text(yaml.safe_dump(tiny_config("vae", tmp_path / "run", flame_shards, steps=50)))
    done = subprocess.run([sys.executable, "-m", "training.sft", "--config", str(config_file), "--dry-run"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "done: 1 step(s)" in done.stdout
    assert (tmp_path / "run" / "stats.json").exists() and (tmp_path / "run" / "config.yaml").exists()
    assert checkpoint_dirs(tmp_path / "run") == []
