"""Checkpoints: accelerate's ``save_state`` folders plus the trainer state and the statistics.

``<run_dir>/checkpoints/step-000123/`` holds the model, optimizer, scheduler, the RNG states
of python, numpy, torch (and CUDA) saved by accelerate, every object registered for
checkpointing (the EMA, the trainer state with the step, which fixes the data position), and
a copy of ``stats.json``. Folders are written under a temporary name and renamed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

CHECKPOINTS = "checkpoints"
PREFIX = "step-"


class TrainState:
    """The position of a run: optimizer steps done (the data stream is skipped to match)."""

    def __init__(self) -> None:
        self.step = 0

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])


class EMA:
    """Exponential moving average of a model's floating-point parameters."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {n: p.detach().clone().float() for n, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for name, param in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].mul_(self.decay).add_(param.detach().float(), alpha=1 - self.decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for name, param in model.named_parameters():
            if name in self.shadow:
                param.copy_(self.shadow[name].to(param.dtype))

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    folder = Path(run_dir) / CHECKPOINTS
    return sorted(folder.glob(f"{PREFIX}[0-9]*")) if folder.is_dir() else []


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = checkpoint_dirs(run_dir)
    return found[-1] if found else None


def save_checkpoint(accelerator, run_dir: Path, step: int, extra_files: list[Path]) -> Path:
    final = Path(run_dir) / CHECKPOINTS / f"{PREFIX}{step:06d}"
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        for path in extra_files:
            shutil.copy(path, tmp / path.name)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    accelerator.wait_for_everyone()
    return final


def load_weights(run_dir: Path, model: nn.Module, prefer_ema: bool = True) -> Path:
    """Load the newest checkpoint's weights of ``run_dir`` into ``model`` (EMA weights if saved)."""
    folder = latest_checkpoint(run_dir)
    if folder is None:
        raise FileNotFoundError(f"no checkpoint in {Path(run_dir) / CHECKPOINTS}")
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    ema_file = folder / "custom_checkpoint_1.pkl"
    meta = folder / "objects.json"
    if prefer_ema and meta.exists() and json.loads(meta.read_text()).get("ema") and ema_file.exists():
        ema_state = torch.load(ema_file, weights_only=False)
        holder = EMA(model, ema_state["decay"])
        holder.load_state_dict(ema_state)
        holder.copy_to(model)
    return folder
