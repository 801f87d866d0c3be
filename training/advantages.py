"""Group-relative advantages from rewards of G rollouts per condition.

Normalising x within a set means (x - mean) / (std + eps * scale) with the population std
(ddof=0), eps = ``RLConfig.adv_eps`` and scale the set's mean |x|: the epsilon is relative, so
the result does not depend on the rewards' units. A column whose rollouts differ by 1e-7
around 1e-7 keeps unit advantages (an absolute 1e-6 would shrink it tenfold); a set equal up
to float rounding of its magnitude, or exactly equal, gets about 0 (exactly 0 when the std is 0).

- GRPO: one reward per rollout (the weighted sum of the reward columns), normalised within
  its group.
- GDPO: each reward column normalised within the group separately, then the weighted sum,
  then that sum normalised over the whole batch.
- GDPO mean (GDPO-Listener, Eq. 8-9): each column i normalised within the group (A_i), then
  A = sum_i(w_i A_i) / (sum_i(w_i) + eps), with no further normalisation.

Rewards arrive as (N, K) with N = groups * G, rollouts of one group consecutive. ``scored``
(N,) bool, when given, marks the rollouts whose rewards mean something (RL's listener_only: the
window has listening frames); the others get advantage 0 and stay out of GDPO's batch
normalisation (a group's rollouts share one window, so a group is scored whole or not at all).
"""

from __future__ import annotations

import torch


def normalise(x: torch.Tensor, dim: int, eps: float) -> torch.Tensor:
    centred = x - x.mean(dim, keepdim=True)
    spread = x.std(dim, unbiased=False, keepdim=True) + eps * x.abs().mean(dim, keepdim=True)
    return torch.where(spread > 0, centred / torch.where(spread > 0, spread, 1.0), 0.0)


def _unscored_zero(out: torch.Tensor, scored: torch.Tensor | None) -> torch.Tensor:
    return out if scored is None else torch.where(scored, out, torch.zeros_like(out))


def grpo(rewards: torch.Tensor, weights: torch.Tensor, group_size: int, eps: float,
         scored: torch.Tensor | None = None) -> torch.Tensor:
    total = (rewards * weights).sum(-1).reshape(-1, group_size)
    return _unscored_zero(normalise(total, 1, eps).reshape(-1), scored)


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


def gdpo_mean(rewards: torch.Tensor, weights: torch.Tensor, group_size: int, eps: float,
              scored: torch.Tensor | None = None) -> torch.Tensor:
    per_group = normalise(rewards.reshape(-1, group_size, rewards.shape[-1]), 1, eps)
    total = (per_group * weights).sum(-1).reshape(-1) / (weights.sum() + eps)
    return _unscored_zero(total, scored)


ADVANTAGES = {"grpo": grpo, "gdpo": gdpo, "gdpo_mean": gdpo_mean}
