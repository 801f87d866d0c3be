"""Supervised training: the motion VAE (``kind: vae``) or the flow model on VAE latents (``kind: flow``).

``python -m training.sft --config training/configs/flow.yaml [--dry-run]``. The run folder
gets config.yaml, stats.json (the VAE run computes it from the shards; a flow run copies its
VAE's), log.jsonl (losses per step) and checkpoints/ (resumed automatically).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import PartialState

from training.checkpoint import load_weights
from training.config import RunConfig, load_run_config
from training.data import batches, train_pipeline
from training.flow import MotionFlow
from training.stats import STATS_FILE, MotionStats, compute_stats
from training.trainer_base import (
    TASKS,
    Trainer,
    config_from_args,
    parse_args,
    register_task,
    seed_everything,
)
from training.vae import MotionVAE


@dataclass
class FlowParts:
    """What a flow model needs around it: frozen VAE and encoders, and the motion statistics."""
    vae: MotionVAE
    encoders: torch.nn.Module
    stats: MotionStats
    vae_config: RunConfig


def load_vae(vae_run: str | Path) -> tuple[MotionVAE, MotionStats, RunConfig]:
    vae_config = load_run_config(Path(vae_run) / "config.yaml")
    stats = MotionStats.load(Path(vae_run))
    vae = MotionVAE(len(stats.mean), vae_config.vae)
    load_weights(Path(vae_run), vae)
    return vae.eval().requires_grad_(False), stats, vae_config


def flow_parts(config: RunConfig, device: torch.device) -> FlowParts:
    from training.encoders import FrozenEncoders

    if not config.flow.vae_run:
        raise ValueError("flow.vae_run is not set: train a VAE first (kind: vae) and point at its run folder")
    vae, stats, vae_config = load_vae(config.flow.vae_run)
    return FlowParts(vae.to(device), FrozenEncoders(config.encoders).to(device), stats, vae_config)


def build_flow(config: RunConfig, parts: FlowParts) -> MotionFlow:
    length = config.data.window_frames // parts.vae_config.vae.latent_rate
    return MotionFlow(parts.vae_config.vae.latent_dim, parts.encoders.audio_dim, parts.encoders.text_dim, length,
                      config.flow)


def flow_inputs(parts: FlowParts, batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
    """Latents (from the frozen VAE's means), audio features per latent and caption embeddings."""
    motion = parts.stats.normalise(batch["motion"].to(device))
    rate = parts.vae_config.vae.latent_rate
    with torch.no_grad():
        latents, _ = parts.vae.encode(motion)
        audio = parts.encoders.audio_features(batch["audio"], motion.shape[1], rate)
        text = parts.encoders.text_features(batch["caption"])
    return {"latents": latents, "audio": audio, "text": text, "motion": motion}


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
        inputs = flow_inputs(parts, batch, device)
        return wrapped("loss", inputs["latents"], inputs["audio"], inputs["text"], batch["seed"])

    def first_batch(unwrapped: MotionFlow, batch: dict) -> None:
        latents = flow_inputs(parts, batch, device)["latents"].reshape(-1, unwrapped.latent_dim)
        unwrapped.latent_mean.copy_(latents.mean(0))
        # One scale for all channels: a per-channel std from one batch blows up near-constant channels.
        unwrapped.latent_std.fill_(float(latents.std(unbiased=False).clamp(min=1e-3)))

    return model, loss, first_batch


def flow_evaluator(config: RunConfig, device: torch.device):
    """Held-out metrics of the (EMA, when kept) flow weights, or None for VAE runs."""
    if config.kind != "flow" or not config.data.eval_shards:
        return None
    from training.evaluate import evaluate_flow

    parts = flow_parts(config, device)

    def run(trainer: Trainer) -> dict:
        model = trainer.unwrapped
        if trainer.ema is not None:
            model = copy.deepcopy(model)
            trainer.ema.copy_to(model)
        return evaluate_flow(model.eval(), parts, config)

    return run


def run_sft(config: RunConfig, dry_run: bool = False, fixed_batch: dict | None = None) -> list[dict]:
    """Train ``config.steps`` optimizer steps (from the newest checkpoint when one exists).

    ``fixed_batch``: train on this one batch every step (the overfitting check). Returns the
    logged rows of this call.
    """
    from training.trainer_base import make_accelerator

    accelerator = make_accelerator(config)
    seed_everything(config, accelerator)
    Path(config.run_dir).mkdir(parents=True, exist_ok=True)
    model, loss_fn, first_batch = TASKS[config.kind](config, accelerator.device)
    trainer = Trainer(config, model, accelerator)
    evaluate = flow_evaluator(config, accelerator.device)
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
    while trainer.state.step < last:
        row = trainer.optimizer_step(micro)
        row["lr"] = trainer.scheduler.get_last_lr()[0]
        trainer.log(row)
        rows.append({"step": trainer.state.step, **row})
        if not dry_run and (trainer.state.step % config.save_every == 0 or trainer.state.step == config.steps):
            trainer.save()
        if evaluate is not None and config.eval_every and trainer.state.step % config.eval_every == 0:
            trainer.log({"eval": evaluate(trainer)})
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args("Supervised training of the motion VAE or the flow model.", argv)
    config = config_from_args(args)
    if config.kind not in ("vae", "flow"):
        raise SystemExit(f"kind {config.kind!r} is not an SFT run (use training.rl for kind: rl)")
    rows = run_sft(config, dry_run=args.dry_run)
    print(f"done: {len(rows)} step(s), last loss {rows[-1]['loss']:.5g}, run folder {config.run_dir}")


if __name__ == "__main__":
    main()
