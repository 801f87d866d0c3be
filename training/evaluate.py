"""Metrics of a flow model on held-out shards: sample every tiled window, decode, compare.

``python -m training train evaluate --run runs/flow [--shards DIR]`` scores a trained flow run
(its EMA weights when it kept them) and prints the metrics as JSON.
"""

from __future__ import annotations

import argparse
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


@torch.no_grad()
def evaluate_flow(model: MotionFlow, parts: FlowParts, config: RunConfig, spec: str | None = None) -> dict:
    """Mean metrics over at most ``metrics.max_windows`` windows (seeded sampling, guidance per latent
    from the roles as configured): all frames, speaking and listening frames, and the expressive
    subset (training/metrics.py)."""
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
    with progress_bar(limit, "evaluate", config.progress) as bar:
        for batch in batches(eval_pipeline(spec, data), data, keep_last=True):
            inputs = flow_inputs(parts, batch, device, model.partner)
            scale = role_guidance(inputs["roles"], rate, config.flow.guidance_scale, config.flow.listen_scale)
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
    return {"windows": len(pred), **evaluation_metrics(pred, true, role, slices, config.metrics.flame_model,
                                                       channel_std, config.metrics.expressive_share)}


def evaluate_run(run_dir: Path, spec: str | None = None, progress: bool = True) -> dict:
    """Metrics of the newest checkpoint of the flow run ``run_dir`` on ``spec`` (default: its eval_shards)."""
    config = load_run_config(run_dir / "config.yaml", progress=progress)
    if config.kind != "flow":
        raise ValueError(f"{run_dir} is a {config.kind!r} run; evaluation scores flow runs")
    device = torch.device("cuda" if torch.cuda.is_available() and not config.cpu else "cpu")
    parts = flow_parts(config, device)
    model = build_flow(config, parts)
    load_weights(run_dir, model)
    return evaluate_flow(model.to(device).eval(), parts, config, spec)


def command(args: argparse.Namespace) -> int:
    """``train evaluate``: print the run's metrics as one JSON object."""
    print(json.dumps(evaluate_run(Path(args.run), args.shards, progress=not args.no_progress), indent=1))
    return 0
