"""SFT on pipeline shards: overfitting, gradient accumulation, exact resume, the command line, history
latents without look-ahead."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml
from training_fixtures import (  # noqa: F401
    REPO_ROOT,
    copy_run,
    flame_shards_fixture,
    tiny_config,
    tiny_encoders_fixture,
    vae_run_fixture,
)

from training.checkpoint import checkpoint_dirs
from training.config import VAEConfig, load_run_config
from training.data import batches, train_pipeline
from training.flow_parts import flow_inputs, flow_parts, load_vae
from training.sft import run_sft
from training.trainer_base import LOG_FILE
from training.vae import MotionVAE


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


def _changed_after(motion: torch.Tensor, frame: int) -> torch.Tensor:
    changed = motion.clone()
    changed[:, frame:] += torch.linspace(0.5, 3.0, changed.shape[1] - frame)[None, :, None]
    return changed


@pytest.mark.parametrize("attention,leaks", [("causal", False), ("chunk", False), ("full", True)])
def test_encoder_latents_before_j_see_no_frame_from_latent_j_on(attention, leaks):
    torch.manual_seed(0)
    vae = MotionVAE(7, VAEConfig(latent_rate=4, latent_dim=5, width=16, layers=2, heads=2,
                                 encoder_attention=attention)).eval()
    motion = torch.randn(2, 24, 7, generator=torch.Generator().manual_seed(1))
    j = 3
    with torch.no_grad():
        before, _ = vae.encode(motion)
        after, _ = vae.encode(_changed_after(motion, j * 4))
    assert not torch.allclose(after[:, j], before[:, j])  # latent j itself encodes its frames
    assert torch.allclose(after[:, :j], before[:, :j], atol=1e-6) != leaks


def test_sft_history_latents_before_j_ignore_later_frames(tmp_path, flame_shards, tiny_encoders, vae_run):
    """The flow model's teacher-forced history (the VAE means of the ground truth, flow_inputs) under
    the default encoder: a change to the frames of latent j and after changes no history latent before j."""
    config = load_run_config(None, **tiny_config("flow", tmp_path / "run", flame_shards, tiny_encoders, vae_run))
    assert config.vae.encoder_attention == load_run_config(vae_run / "config.yaml").vae.encoder_attention == "causal"
    parts = flow_parts(config, torch.device("cpu"))
    batch = next(batches(train_pipeline(config.data, seed=0), config.data))
    j = 2
    changed = {**batch, "motion": _changed_after(batch["motion"], j * parts.vae_config.vae.latent_rate)}
    history = flow_inputs(parts, batch, torch.device("cpu"), partner=False)["latents"]
    history_changed = flow_inputs(parts, changed, torch.device("cpu"), partner=False)["latents"]
    torch.testing.assert_close(history_changed[:, :j], history[:, :j], atol=1e-6, rtol=0)
    assert (history_changed[:, j:] - history[:, j:]).abs().amax() > 1e-3


def test_vae_runs_saved_before_the_encoder_option_load_with_full_attention(tmp_path, vae_run):
    old = copy_run(vae_run, tmp_path / "old-vae")
    saved = yaml.safe_load((old / "config.yaml").read_text())
    del saved["vae"]["encoder_attention"]
    (old / "config.yaml").write_text(yaml.safe_dump(saved))
    assert load_vae(old)[0].encoder_attention == "full"
    assert load_vae(vae_run)[0].encoder_attention == "causal"


def test_fifty_expression_coefficients_make_gdpo_listeners_67_channels(tmp_path, flame_shards, tiny_encoders):
    from training.data import inherit_rates
    from training.sft import with_data_rates
    from training.stats import MotionStats

    full = load_run_config(None, **tiny_config("vae", tmp_path / "full", flame_shards))
    fifty = load_run_config(None, **tiny_config("vae", tmp_path / "vae", flame_shards, steps=1, save_every=1,
                                                data={"expression_coefficients": 50}))
    all_columns = next(batches(train_pipeline(full.data, seed=0), full.data))["motion"]
    kept = next(batches(train_pipeline(fifty.data, seed=0), fifty.data))["motion"]
    assert all_columns.shape[-1] == 117 and kept.shape[-1] == 67  # 100 or 50 expression + 3 + 3 + 2 + 6 + 3
    torch.testing.assert_close(kept[..., :50], all_columns[..., :50])  # the leading coefficients
    torch.testing.assert_close(kept[..., 50:], all_columns[..., 100:])  # the other groups as they were
    run_sft(fifty)
    assert MotionStats.load(tmp_path / "vae").dims["expression"] == 50
    flow = load_run_config(None, **tiny_config("flow", tmp_path / "flow", flame_shards, tiny_encoders,
                                               tmp_path / "vae"))
    assert with_data_rates(flow).data.expression_coefficients == 50  # the flow run reads what its VAE learned
    with pytest.raises(ValueError, match="expression_coefficients is 100"):
        inherit_rates(flow.data.model_copy(update={"expression_coefficients": 100}), fifty.data, "the VAE run")
