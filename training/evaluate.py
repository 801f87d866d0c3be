"""Metrics of a flow model on held-out shards: sample every tiled window, decode, compare."""

from __future__ import annotations

import torch

from training.config import RunConfig
from training.data import batches, eval_pipeline, group_slices
from training.flow import MotionFlow, sample_window
from training.metrics import motion_metrics


@torch.no_grad()
def evaluate_flow(model: MotionFlow, parts, config: RunConfig, spec: str | None = None) -> dict:
    """Mean metrics over at most ``metrics.max_windows`` windows (seeded sampling, guidance as configured)."""
    from training.sft import flow_inputs

    spec = spec or config.data.eval_shards
    if spec is None:
        return {"metrics": "skipped: data.eval_shards is not set"}
    device = next(model.parameters()).device
    slices = group_slices(parts.stats.groups, parts.stats.dims)
    generator = torch.Generator().manual_seed(config.seed)
    preds, truths, seen = [], [], 0
    data = config.data.model_copy(update={"num_workers": 0})
    for batch in batches(eval_pipeline(spec, data), data, keep_last=True):
        inputs = flow_inputs(parts, batch, device)
        latents = sample_window(model, inputs["audio"], inputs["text"], config.flow.sample_steps,
                                config.flow.guidance_scale, generator)
        preds.append(parts.stats.denormalise(parts.vae.decode(model.unstandardise(latents))).cpu())
        truths.append(batch["motion"])
        seen += len(batch["key"])
        if seen >= config.metrics.max_windows:
            break
    if not preds:
        return {"metrics": f"skipped: no window of {config.data.window_frames} frames in {spec}"}
    pred, true = torch.cat(preds)[:config.metrics.max_windows], torch.cat(truths)[:config.metrics.max_windows]
    return {"windows": len(pred), **motion_metrics(pred, true, slices, config.metrics.flame_model)}
