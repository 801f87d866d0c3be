"""Supervised training: the motion VAE (``kind: vae``) or the flow model on VAE latents (``kind: flow``).

``python -m training train sft --config training/configs/flow.yaml [--dry-run]`` (or
``python -m training.sft ...``, the module ``accelerate launch -m`` runs). The run folder
gets config.yaml, stats.json (the VAE run computes it from the shards; a flow run copies its
VAE's), log.jsonl (losses per step) and checkpoints/ (resumed automatically).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from accelerate import PartialState

from training.config import RunConfig, load_run_config
from training.data import batches, inherit_rates, resolve_rates, train_pipeline
from training.evaluate import run_evaluator
from training.flow import MotionFlow
from training.flow_parts import build_flow, flow_inputs, flow_parts
from training.stats import STATS_FILE, MotionStats, compute_stats
from training.trainer_base import (
    TASKS,
    Trainer,
    config_from_args,
    make_accelerator,
    parse_args,
    progress_bar,
    register_task,
    seed_everything,
)
from training.vae import MotionVAE


@register_task("vae")
def vae_task(config: RunConfig, device: torch.device):
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = PartialState()
    # The main process computes and writes the statistics; the others then read that file
    # (no rank reads it half-written, all normalise with the same numbers).
    with state.main_process_first():
        stats = MotionStats.load(run_dir) if (run_dir / STATS_FILE).exists() else compute_stats(config.data)
        if state.is_main_process:
            stats.save(run_dir)
    model = MotionVAE(len(stats.mean), config.vae)

    def loss(wrapped, batch: dict) -> dict[str, torch.Tensor]:
        return wrapped(stats.normalise(batch["motion"].to(device)), batch["seed"])

    return model, loss, None


@register_task("flow")
def flow_task(config: RunConfig, device: torch.device):
    parts = flow_parts(config, device)
    if PartialState().is_main_process:
        parts.stats.save(Path(config.run_dir))
    model = build_flow(config, parts)

    def loss(wrapped, batch: dict) -> dict[str, torch.Tensor]:
        inputs = flow_inputs(parts, batch, device, model.partner)
        return wrapped("loss", inputs["latents"], inputs["conditions"], batch["seed"])

    def first_batch(unwrapped: MotionFlow, batch: dict) -> None:
        latents = flow_inputs(parts, batch, device, partner=False)["latents"].reshape(-1, unwrapped.latent_dim)
        unwrapped.latent_mean.copy_(latents.mean(0))
        # One scale for all channels: a per-channel std from one batch blows up near-constant channels.
        unwrapped.latent_std.fill_(float(latents.std(unbiased=False).clamp(min=1e-3)))

    return model, loss, first_batch


def with_data_rates(config: RunConfig) -> RunConfig:
    """``config`` with the frame and sample rate every training sample must have: as stated, a
    flow run's VAE's, else the first sample's (config.yaml of the run then records them)."""
    data = config.data
    if config.kind == "flow" and config.flow.vae_run:
        vae_data = load_run_config(Path(config.flow.vae_run) / "config.yaml").data
        data = inherit_rates(data, vae_data, f"the VAE run {config.flow.vae_run}")
    return config.model_copy(update={"data": resolve_rates(data)})


def run_sft(config: RunConfig, dry_run: bool = False, fixed_batch: dict | None = None) -> list[dict]:
    """Train ``config.steps`` optimizer steps (from the newest checkpoint when one exists).

    ``fixed_batch``: train on this one batch every step (the overfitting check). Returns the
    logged rows of this call.
    """
    config = with_data_rates(config)
    accelerator = make_accelerator(config)
    seed_everything(config, accelerator)
    Path(config.run_dir).mkdir(parents=True, exist_ok=True)
    model, loss_fn, first_batch = TASKS[config.kind](config, accelerator.device)
    trainer = Trainer(config, model, accelerator)
    evaluate = run_evaluator(config, accelerator.device)
    resumed = None if dry_run else trainer.resume()
    accum = config.optim.grad_accum
    stream = (iter(lambda: fixed_batch, None) if fixed_batch is not None else
              batches(train_pipeline(config.data, config.seed + accelerator.process_index), config.data,
                      skip=trainer.state.step * accum))
    pending = [next(stream)]
    if first_batch is not None and resumed is None:
        first_batch(trainer.unwrapped, pending[0])

    def micro() -> dict[str, torch.Tensor]:
        batch = pending.pop() if pending else next(stream)
        return loss_fn(trainer.model, batch)

    rows = []
    last = trainer.state.step + 1 if dry_run else config.steps
    with progress_bar(last, f"sft {config.kind}", config.progress, initial=trainer.state.step) as bar:
        while trainer.state.step < last:
            row = trainer.optimizer_step(micro)
            row["lr"] = trainer.scheduler.get_last_lr()[0]
            trainer.log(row)
            rows.append({"step": trainer.state.step, **row})
            bar.set_postfix(loss=f"{row['loss']:.4g}", refresh=False)
            bar.update(1)
            if not dry_run and (trainer.state.step % config.save_every == 0 or trainer.state.step == config.steps):
                trainer.save()
            if evaluate is not None and config.eval_every and trainer.state.step % config.eval_every == 0:
                trainer.log({"eval": evaluate(trainer)})
    return rows


def command(args: argparse.Namespace) -> int:
    """``train sft``: the run of ``--config`` (kind vae or flow) with the command line's overrides."""
    config = config_from_args(args)
    if config.kind not in ("vae", "flow"):
        print(f"kind {config.kind!r} is not an SFT run (use train rl for kind: rl)")
        return 2
    rows = run_sft(config, dry_run=args.dry_run)
    print(f"done: {len(rows)} step(s), last loss {rows[-1]['loss']:.5g}, run folder {config.run_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return command(parse_args("Supervised training of the motion VAE or the flow model.", argv))


if __name__ == "__main__":
    sys.exit(main())
