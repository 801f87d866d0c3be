"""bf16 autocast on CPU (accelerate ``mixed_precision: bf16``): SFT still learns, weights stay float32."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file
from training_fixtures import flame_shards_fixture, tiny_config  # noqa: F401

from training.checkpoint import checkpoint_dirs
from training.config import load_run_config
from training.data import batches, train_pipeline
from training.sft import run_sft

STEPS = 12


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate keeps one process-wide state: each run here sets its own precision, and none leaks out."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    yield AcceleratorState._reset_state
    AcceleratorState._reset_state()


def _overfit(tmp_path, shards, precision: str) -> list[dict]:
    config = load_run_config(None, **tiny_config(
        "vae", tmp_path / precision, shards, steps=STEPS, save_every=STEPS,
        optim={"lr": 3e-3, "grad_clip": None, "mixed_precision": precision}))
    batch = next(batches(train_pipeline(config.data, seed=0), config.data))
    return run_sft(config, fixed_batch=batch)


def test_bf16_steps_are_finite_learn_an_overfit_batch_and_save_float32(tmp_path, flame_shards, fresh_accelerate_state):
    rows = _overfit(tmp_path, flame_shards, "bf16")
    losses = [row["loss"] for row in rows]
    assert len(losses) == STEPS and all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.5 * losses[0], [round(v, 4) for v in losses]
    weights = load_file(str(checkpoint_dirs(tmp_path / "bf16")[-1] / "model.safetensors"))
    assert weights and {value.dtype for value in weights.values()} == {torch.float32}

    fresh_accelerate_state()
    reference = _overfit(tmp_path, flame_shards, "no")
    # Same seed, batch and weights: the first losses differ only by bf16 rounding, so autocast was on.
    first, full = rows[0]["loss"], reference[0]["loss"]
    assert first != full and abs(first - full) <= 0.05 * abs(full), (first, full)
