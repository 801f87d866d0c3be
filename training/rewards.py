"""Motion rewards per FLAME group (higher is better), each comparing a rollout with its ground truth.

For a group's columns, with P the predicted and G the ground-truth window (frames, dims),
every statistic over frames with ddof=0 and the result averaged over the group's dims:

- ``pos_var``: -|var_t(P) - var_t(G)| (match of positional variance)
- ``vel_var``: -|var_t(dP) - var_t(dG)| with d the frame-to-frame difference (velocity)
- ``drift``:   -|mean_t(P) - mean_t(G)| (mean drift away from the true level)
- ``mse``:     -mean_t((P - G)^2)

With a frame mask (RL's ``listener_only``: the listening frames), every statistic runs over
the masked frames only, and a velocity counts only between two consecutive masked frames; a
window with no such frame (or velocity) gets 0 for that statistic. Without a mask, every frame.

The registry ``REWARDS`` maps each name to its function; the config gives a weight per
(group, reward); every pair with a non-zero weight is one reward column.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from training.config import RewardWeights


def _masked_mean(x: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """(N, C) mean over the masked frames of (N, T, C); 0 where a window has none."""
    weights = frames.to(x.dtype)[..., None]
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1)


def _masked_var(x: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    return _masked_mean((x - _masked_mean(x, frames)[:, None]) ** 2, frames)


def pos_var(pred: torch.Tensor, true: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
    if frames is None:
        return -(pred.var(1, unbiased=False) - true.var(1, unbiased=False)).abs().mean(-1)
    return -(_masked_var(pred, frames) - _masked_var(true, frames)).abs().mean(-1)


def vel_var(pred: torch.Tensor, true: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
    return pos_var(pred.diff(dim=1), true.diff(dim=1), None if frames is None else frames[:, 1:] & frames[:, :-1])


def drift(pred: torch.Tensor, true: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
    if frames is None:
        return -(pred.mean(1) - true.mean(1)).abs().mean(-1)
    return -(_masked_mean(pred, frames) - _masked_mean(true, frames)).abs().mean(-1)


def mse(pred: torch.Tensor, true: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
    if frames is None:
        return -(pred - true).pow(2).mean((1, 2))
    return -_masked_mean((pred - true).pow(2), frames).mean(-1)


REWARDS: dict[str, Callable[..., torch.Tensor]] = {
    "pos_var": pos_var, "vel_var": vel_var, "drift": drift, "mse": mse}


def reward_columns(pred: torch.Tensor, true: torch.Tensor, slices: dict[str, slice],
                   weights: dict[str, RewardWeights],
                   frames: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(rewards (N, K), weights (K,), names) for N windows (frames, channels) and K weighted pairs;
    ``frames`` (N, T) bool: the frames the statistics run over (None: all)."""
    columns, column_weights, names = [], [], []
    for group, group_weights in weights.items():
        if group not in slices:
            raise ValueError(f"reward group {group!r} is not among the motion groups {sorted(slices)}")
        cols = slices[group]
        for name, weight in group_weights.model_dump().items():
            if weight:
                columns.append(REWARDS[name](pred[..., cols], true[..., cols], frames))
                column_weights.append(weight)
                names.append(f"{group}.{name}")
    if not columns:
        raise ValueError("every reward weight is zero")
    return torch.stack(columns, 1), torch.tensor(column_weights, dtype=pred.dtype), names
