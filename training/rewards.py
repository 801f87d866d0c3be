"""Motion rewards per FLAME group (higher is better), each comparing a rollout with its ground truth.

RL scores windows of normalised channels (the run's statistics, training/stats.py: every
channel in units of its dataset std), so the terms of different groups and channels share
one scale. For a group's columns, with P the predicted and G the ground-truth window
(frames, dims), every statistic over frames with ddof=0 and the result averaged over the
group's dims:

- ``pos_sigma``: -|std_t(P) - std_t(G)| (match of positional spread; GDPO-Listener)
- ``vel_sigma``: -|std_t(dP) - std_t(dG)| with d the frame-to-frame difference (velocity)
- ``pos_var``:   -|var_t(P) - var_t(G)| (the same on variances)
- ``vel_var``:   -|var_t(dP) - var_t(dG)|
- ``drift``:     -|mean_t(P) - mean_t(G)| (mean drift away from the true level)
- ``mse``:       -mean_t((P - G)^2)

With a frame mask (RL's ``listener_only``: the listening frames), every statistic runs over
the masked frames only, and a velocity counts only between two consecutive masked frames; a
window with no such frame (or velocity) gets 0 for that statistic. Without a mask, every frame.

The registry ``REWARDS`` maps each name to its function; ``RLConfig.rewards`` gives a weight
per (group, term). ``RLConfig.reward_columns`` makes the columns: ``per_group``
(GDPO-Listener) one reward R_i per group, the weighted sum of its terms, with the group's
lambda_i (``group_weights``) as column weight; ``per_term`` one column per (group, term) with
a non-zero weight, that weight as column weight.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from training.config import RLConfig


def _masked_mean(x: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """(N, C) mean over the masked frames of (N, T, C); 0 where a window has none."""
    weights = frames.to(x.dtype)[..., None]
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1)


def _masked_var(x: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    return _masked_mean((x - _masked_mean(x, frames)[:, None]) ** 2, frames)


def _variance(x: torch.Tensor, frames: torch.Tensor | None) -> torch.Tensor:
    """(N, C) variance over the (masked) frames of (N, T, C)."""
    return x.var(1, unbiased=False) if frames is None else _masked_var(x, frames)


def _sigma(x: torch.Tensor, frames: torch.Tensor | None) -> torch.Tensor:
    return _variance(x, frames).sqrt()


def _spread_gap(spread: Callable[..., torch.Tensor], pred: torch.Tensor, true: torch.Tensor,
                frames: torch.Tensor | None) -> torch.Tensor:
    return -(spread(pred, frames) - spread(true, frames)).abs().mean(-1)


def _velocity_frames(frames: torch.Tensor | None) -> torch.Tensor | None:
    """The velocities between two consecutive masked frames."""
    return None if frames is None else frames[:, 1:] & frames[:, :-1]


def pos_sigma(pred: torch.Tensor, true: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
    return _spread_gap(_sigma, pred, true, frames)


def vel_sigma(pred: torch.Tensor, true: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
    return _spread_gap(_sigma, pred.diff(dim=1), true.diff(dim=1), _velocity_frames(frames))


def pos_var(pred: torch.Tensor, true: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
    return _spread_gap(_variance, pred, true, frames)


def vel_var(pred: torch.Tensor, true: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
    return _spread_gap(_variance, pred.diff(dim=1), true.diff(dim=1), _velocity_frames(frames))


def drift(pred: torch.Tensor, true: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
    if frames is None:
        return -(pred.mean(1) - true.mean(1)).abs().mean(-1)
    return -(_masked_mean(pred, frames) - _masked_mean(true, frames)).abs().mean(-1)


def mse(pred: torch.Tensor, true: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
    if frames is None:
        return -(pred - true).pow(2).mean((1, 2))
    return -_masked_mean((pred - true).pow(2), frames).mean(-1)


REWARDS: dict[str, Callable[..., torch.Tensor]] = {
    "pos_sigma": pos_sigma, "vel_sigma": vel_sigma, "pos_var": pos_var, "vel_var": vel_var, "drift": drift,
    "mse": mse}


def reward_columns(pred: torch.Tensor, true: torch.Tensor, slices: dict[str, slice], rl: RLConfig,
                   frames: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(rewards (N, K), column weights (K,), names) for N windows (frames, channels) as ``rl.reward_columns``
    makes them from ``rl.rewards`` and ``rl.group_weights``; ``frames`` (N, T) bool: the frames the
    statistics run over (None: all)."""
    columns, column_weights, names = [], [], []
    for group, group_weights in rl.rewards.items():
        if group not in slices:
            raise ValueError(f"reward group {group!r} is not among the motion groups {sorted(slices)}")
        cols = slices[group]
        terms = {name: weight for name, weight in group_weights.model_dump().items() if weight}
        if rl.reward_columns == "per_term":
            for name, weight in terms.items():
                columns.append(REWARDS[name](pred[..., cols], true[..., cols], frames))
                column_weights.append(weight)
                names.append(f"{group}.{name}")
        elif terms:
            columns.append(sum(weight * REWARDS[name](pred[..., cols], true[..., cols], frames)
                               for name, weight in terms.items()))
            column_weights.append(rl.group_weights.get(group, 1.0))
            names.append(group)
    if not columns or not any(column_weights):
        raise ValueError("every reward weight is zero")
    return torch.stack(columns, 1), torch.tensor(column_weights, dtype=pred.dtype), names
