"""Metrics of a flow model on held-out shards: sample every tiled window, decode, compare.

``python -m training train evaluate --run RUN [--shards DIR] [--guidance-scale S]`` scores the
newest checkpoint of a flow run (its EMA weights when it kept them) or of an RL run (the policy,
with the VAE, encoders and statistics of its SFT run ``rl.init_run``) and prints the metrics as
JSON. Windows are sampled with ``metrics.guidance_scale`` (default 1.0: no guidance, as the
papers report; ``metrics.guidance_listen`` on listening frames), not the scale the run samples
with in training; the report names the scales and the space of every figure.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

from training.checkpoint import load_weights
from training.config import RunConfig, load_run_config
from training.data import batches, eval_pipeline, group_slices
from training.flow import MotionFlow, role_guidance, sample_window
from training.flow_parts import FlowParts, build_flow, flow_inputs, flow_parts
from training.metrics import evaluation_metrics
from training.trainer_base import progress_bar


def model_config(config: RunConfig) -> RunConfig:
    """The config that built a run's flow model: the run's own (kind flow) or its SFT run's (kind rl)."""
    if config.kind == "flow":
        return config
    if config.kind == "rl":
        if not config.rl.init_run:
            raise ValueError("rl.init_run is not set: an RL run's model is its SFT run's")
        return load_run_config(Path(config.rl.init_run) / "config.yaml", progress=config.progress)
    raise ValueError(f"a {config.kind!r} run has no flow model to evaluate")


@torch.no_grad()
def evaluate_flow(model: MotionFlow, parts: FlowParts, config: RunConfig, spec: str | None = None) -> dict:
    """Mean metrics over at most ``metrics.max_windows`` windows (seeded sampling, guidance per latent
    from the roles with the metrics' scales): all frames, speaking and listening frames, and the
    expressive subset (training/metrics.py)."""
    spec = spec or config.data.eval_shards
    if spec is None:
        return {"metrics": "skipped: data.eval_shards is not set"}
    device = next(model.parameters()).device
    slices = group_slices(parts.stats.groups, parts.stats.dims)
    generator = torch.Generator().manual_seed(config.seed)
    preds, truths, roles, seen = [], [], [], 0
    data = config.data.model_copy(update={"num_workers": 0})
    limit = config.metrics.max_windows
    rate = parts.vae_config.vae.latent_rate
    speak, listen = config.metrics.guidance_scale, config.metrics.listen_scale
    with progress_bar(limit, "evaluate", config.progress) as bar:
        for batch in batches(eval_pipeline(spec, data), data, keep_last=True):
            inputs = flow_inputs(parts, batch, device, model.partner)
            scale = role_guidance(inputs["roles"], rate, speak, listen)
            latents = sample_window(model, inputs["conditions"], config.flow.sample_steps, scale, generator)
            preds.append(parts.stats.denormalise(parts.vae.decode(model.unstandardise(latents))).cpu())
            truths.append(batch["motion"])
            roles.append(batch["role"])
            bar.update(min(len(batch["key"]), limit - seen))
            seen += len(batch["key"])
            if seen >= limit:
                break
    if not preds:
        return {"metrics": f"skipped: no window of {config.data.window_frames} frames in {spec}"}
    pred, true, role = torch.cat(preds)[:limit], torch.cat(truths)[:limit], torch.cat(roles)[:limit]
    channel_std = torch.as_tensor(parts.stats.std, dtype=true.dtype)
    return {"windows": len(pred), "guidance": {"speak": speak, "listen": listen},
            **evaluation_metrics(pred, true, role, slices, config.metrics.flame_model, channel_std,
                                 config.metrics.expressive_share)}


def run_evaluator(config: RunConfig, device: torch.device):
    """A callable scoring a trainer's (EMA, when kept) weights on held-out shards, for flow and RL
    runs; None for VAE runs or without ``data.eval_shards``."""
    if config.kind not in ("flow", "rl") or not config.data.eval_shards:
        return None
    parts = flow_parts(model_config(config), device)

    def run(trainer) -> dict:
        model = trainer.unwrapped
        if trainer.ema is not None:
            model = copy.deepcopy(model)
            trainer.ema.copy_to(model)
        return evaluate_flow(model.eval(), parts, config)

    return run


def load_run_model(run_dir: Path, config: RunConfig, device: torch.device) -> tuple[MotionFlow, FlowParts]:
    """The newest checkpoint's flow model of a flow or RL run (EMA weights when kept) and its parts."""
    built = model_config(config)
    parts = flow_parts(built, device)
    model = build_flow(built, parts)
    load_weights(run_dir, model)
    return model.to(device).eval(), parts


def evaluate_run(run_dir: Path, spec: str | None = None, progress: bool = True,
                 guidance_scale: float | None = None) -> dict:
    """Metrics of the newest checkpoint of the flow or RL run ``run_dir`` on ``spec`` (default: its
    eval_shards), sampled at ``guidance_scale`` when given (else ``metrics.guidance_scale``)."""
    overrides = {} if guidance_scale is None else {"metrics": {"guidance_scale": guidance_scale}}
    config = load_run_config(Path(run_dir) / "config.yaml", progress=progress, **overrides)
    device = torch.device("cuda" if torch.cuda.is_available() and not config.cpu else "cpu")
    model, parts = load_run_model(Path(run_dir), config, device)
    return {"run": {"dir": str(run_dir), "kind": config.kind}, **evaluate_flow(model, parts, config, spec)}


def command(args: argparse.Namespace) -> int:
    """``train evaluate``: print the run's metrics as one JSON object."""
    print(json.dumps(evaluate_run(Path(args.run), args.shards, progress=not args.no_progress,
                                  guidance_scale=args.guidance_scale), indent=1))
    return 0
