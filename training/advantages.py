"""Group-relative advantages from rewards of G rollouts per condition.

Normalising x within a set means (x - mean) / (std + eps) with the population std (ddof=0)
and eps = ``RLConfig.adv_eps`` (a group whose rewards are all equal gets advantage 0).

- GRPO: one reward per rollout (the weighted sum of the reward columns), normalised within
  its group.
- GDPO: each reward column normalised within the group separately, then the weighted sum,
  then that sum normalised over the whole batch.

Rewards arrive as (N, K) with N = groups * G, rollouts of one group consecutive. ``scored``
(N,) bool, when given, marks the rollouts whose rewards mean something (RL's listener_only: the
window has listening frames); the others get advantage 0 and stay out of GDPO's batch
normalisation (a group's rollouts share one window, so a group is scored whole or not at all).
"""

from __future__ import annotations

import torch


def normalise(x: torch.Tensor, dim: int, eps: float) -> torch.Tensor:
    return (x - x.mean(dim, keepdim=True)) / (x.std(dim, unbiased=False, keepdim=True) + eps)


def grpo(rewards: torch.Tensor, weights: torch.Tensor, group_size: int, eps: float,
         scored: torch.Tensor | None = None) -> torch.Tensor:
    total = (rewards * weights).sum(-1).reshape(-1, group_size)
    out = normalise(total, 1, eps).reshape(-1)
    return out if scored is None else torch.where(scored, out, torch.zeros_like(out))


def gdpo(rewards: torch.Tensor, weights: torch.Tensor, group_size: int, eps: float,
         scored: torch.Tensor | None = None) -> torch.Tensor:
    per_group = normalise(rewards.reshape(-1, group_size, rewards.shape[-1]), 1, eps)
    total = (per_group * weights).sum(-1).reshape(-1)
    if scored is None:
        return normalise(total, 0, eps)
    out = torch.zeros_like(total)
    if scored.any():
        out[scored] = normalise(total[scored], 0, eps)
    return out


ADVANTAGES = {"grpo": grpo, "gdpo": gdpo}
