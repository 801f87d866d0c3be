"""Group-relative advantages from rewards of G rollouts per condition.

Normalising x within a set means (x - mean) / (std + eps) with the population std (ddof=0)
and eps = ``RLConfig.adv_eps`` (a group whose rewards are all equal gets advantage 0).

- GRPO: one reward per rollout (the weighted sum of the reward columns), normalised within
  its group.
- GDPO: each reward column normalised within the group separately, then the weighted sum,
  then that sum normalised over the whole batch.

Rewards arrive as (N, K) with N = groups * G, rollouts of one group consecutive.
"""

from __future__ import annotations

import torch


def normalise(x: torch.Tensor, dim: int, eps: float) -> torch.Tensor:
    return (x - x.mean(dim, keepdim=True)) / (x.std(dim, unbiased=False, keepdim=True) + eps)


def grpo(rewards: torch.Tensor, weights: torch.Tensor, group_size: int, eps: float) -> torch.Tensor:
    total = (rewards * weights).sum(-1).reshape(-1, group_size)
    return normalise(total, 1, eps).reshape(-1)


def gdpo(rewards: torch.Tensor, weights: torch.Tensor, group_size: int, eps: float) -> torch.Tensor:
    per_group = normalise(rewards.reshape(-1, group_size, rewards.shape[-1]), 1, eps)
    total = (per_group * weights).sum(-1).reshape(-1)
    return normalise(total, 0, eps)


ADVANTAGES = {"grpo": grpo, "gdpo": gdpo}
