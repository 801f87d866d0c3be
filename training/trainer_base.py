"""What every trainer shares: the accelerator, run folder, optimizer, EMA, checkpoints, logs.

Tasks (what is trained and how its loss is computed) are looked up in ``TASKS`` by the
config's ``kind``; ``Trainer`` drives any of them. Gradient accumulation follows
accelerate: each micro-batch runs inside ``accelerator.accumulate`` and ``accelerator.backward``
divides its (batch-mean) loss by the accumulation count; the optimizer and scheduler only
step when gradients are synchronised, i.e. once per ``grad_accum`` micro-batches.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import set_seed
from tqdm import tqdm

from training.checkpoint import EMA, TrainState, latest_checkpoint, save_checkpoint
from training.config import RunConfig, load_run_config, save_run_config
from training.stats import STATS_FILE

TASKS: dict[str, Callable] = {}
LOG_FILE = "log.jsonl"


def register_task(kind: str):
    def wrap(builder: Callable) -> Callable:
        TASKS[kind] = builder
        return builder
    return wrap


def make_accelerator(config: RunConfig) -> Accelerator:
    return Accelerator(cpu=config.cpu, mixed_precision=config.optim.mixed_precision,
                       gradient_accumulation_steps=config.optim.grad_accum)


def progress_bar(total: int, description: str, enabled: bool, initial: int = 0) -> tqdm:
    """A tqdm bar that shows only when ``enabled``, on the main process, with stdout on a terminal
    (other ranks and log files stay clean)."""
    shown = enabled and PartialState().is_main_process and sys.stdout.isatty()
    return tqdm(total=total, initial=initial, desc=description, unit="step", disable=not shown, dynamic_ncols=True)


def make_optimizer(params, config: RunConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    optim = config.optim
    params = [p for p in params if p.requires_grad]
    if optim.name == "sgd":
        optimizer = torch.optim.SGD(params, lr=optim.lr, weight_decay=optim.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)
    warmup = optim.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    return optimizer, scheduler


class Trainer:
    """Run folder, accelerate objects, EMA, checkpoint save/resume and loss logging for one model."""

    def __init__(self, config: RunConfig, model: torch.nn.Module, accelerator: Accelerator | None = None) -> None:
        self.config = config
        self.accelerator = accelerator or make_accelerator(config)
        self.run_dir = Path(config.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.accelerator.is_main_process:
            save_run_config(config, self.run_dir / "config.yaml")
        optimizer, scheduler = make_optimizer(model.parameters(), config)
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, optimizer, scheduler)
        self.state = TrainState()
        self.accelerator.register_for_checkpointing(self.state)
        self.ema = EMA(self.unwrapped, config.optim.ema_decay) if config.optim.ema_decay else None
        if self.ema is not None:
            self.accelerator.register_for_checkpointing(self.ema)

    @property
    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def resume(self) -> Path | None:
        """Restore the newest checkpoint of the run folder, if any (weights, optimizer, RNGs, step)."""
        folder = latest_checkpoint(self.run_dir)
        if folder is not None:
            self.accelerator.load_state(str(folder))
        return folder

    def optimizer_step(self, micro_losses: Callable[[], dict[str, torch.Tensor]]) -> dict[str, float]:
        """One optimizer step over ``grad_accum`` micro-batches; returns the mean of each loss."""
        totals: dict[str, float] = {}
        accum = self.config.optim.grad_accum
        for _ in range(accum):
            with self.accelerator.accumulate(self.model):
                losses = micro_losses()
                self.accelerator.backward(losses["loss"])
                if self.accelerator.sync_gradients and self.config.optim.grad_clip:
                    self.accelerator.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad()
            for name, value in losses.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach()) / accum
        if self.ema is not None:
            self.ema.update(self.unwrapped)
        self.state.step += 1
        return totals

    def log(self, values: dict) -> None:
        if self.accelerator.is_main_process:
            row = {"step": self.state.step, "time": round(time.time(), 3), **values}
            with open(self.run_dir / LOG_FILE, "a") as handle:
                handle.write(json.dumps(row) + "\n")
            if self.state.step % self.config.log_every == 0 or self.state.step == 1:
                # tqdm.write prints the same line to stdout, above a progress bar instead of through it.
                tqdm.write(" ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                                    if k != "time"), file=sys.stdout)

    def save(self) -> Path:
        (self.run_dir / "objects.json").write_text(json.dumps({"ema": self.ema is not None}))
        extra = [self.run_dir / name for name in (STATS_FILE, "objects.json", "config.yaml")
                 if (self.run_dir / name).exists()]
        return save_checkpoint(self.accelerator, self.run_dir, self.state.step, extra)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every trainer command takes (``python -m training.sft``, ``talkinghead train sft``, ...)."""
    parser.add_argument("--config", required=True, help="run config YAML (see training/configs/)")
    parser.add_argument("--shards", help="override data.shards")
    parser.add_argument("--run-dir", help="override run_dir")
    parser.add_argument("--steps", type=int, help="override steps")
    parser.add_argument("--dry-run", action="store_true", help="build everything, run one step, save nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (same as progress: false)")


def parse_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    add_run_arguments(parser)
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    overrides: dict = {}
    if args.shards:
        overrides["data"] = {"shards": args.shards}
    if args.run_dir:
        overrides["run_dir"] = args.run_dir
    if args.steps:
        overrides["steps"] = args.steps
    if args.no_progress:
        overrides["progress"] = False
    return load_run_config(args.config, **overrides)


def seed_everything(config: RunConfig, accelerator: Accelerator) -> None:
    set_seed(config.seed + accelerator.process_index)
