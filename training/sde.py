"""Stochastic denoising steps with Gaussian log-probabilities, for RL on a flow model.

Convention as in training/flow.py: ``x_tau = (1 - tau) x0 + tau * noise``, velocity
``v = noise - x0``, tau runs from 1 (noise) to 0 (data); one step goes tau -> tau_next < tau,
dt = tau_next - tau < 0. Every sampler returns (sample, mean, std) with sample = mean + std * noise:

- ``em`` (Flow-GRPO's reverse SDE, Euler-Maruyama; keeps the ODE's marginals): with
  ``sigma = eta * sqrt(tau / (1 - tau))`` (at tau = 1 the denominator uses the next grid
  level, to stay finite),
  ``mean = x + (v + sigma^2 / (2 tau) * (x + (1 - tau) v)) dt``, ``std = sigma * sqrt(-dt)``.
  Formula of ``sde_step_with_logprob`` in yifan123/flow_grpo,
  flow_grpo/diffusers_patch/sd3_sde_with_logprob.py (commit ac4c86e), in our notation.
- ``cps`` (coefficients-preserving sampling, Wang & Yu 2025, arXiv:2509.05952): with
  x0_hat = x - tau v and noise_hat = x + (1 - tau) v, ``std = tau_next * sin(eta * pi / 2)`` and
  ``mean = (1 - tau_next) x0_hat + sqrt(tau_next^2 - std^2) noise_hat``, so the sample keeps
  exactly the coefficients (1 - tau_next, tau_next) of x0 and unit noise. Formula of the
  Flow-CPS branch of ``sde_step_with_logprob`` in IamCreateAI/FlowCPS,
  flow_grpo/diffusers_patch/sd3_sde_with_logprob.py (commit b402c7a); that code scores
  -|sample - mean|^2 without the Gaussian's scale and constants, here the log-density is whole.
  No noise on a step that ends at tau = 0.
- ``em_constant`` (GDPO-Listener): Euler-Maruyama with a constant sigma = eta and no drift
  correction, ``mean = x + v dt``, ``std = eta * sqrt(-dt)``. It does not keep the ODE's
  marginals: each step adds eta^2 |dt| of variance.

``log_prob`` is the Gaussian log-density of the sample, averaged over the latent dimensions.
"""

from __future__ import annotations

import math

import torch

SAMPLERS = ("em", "cps", "em_constant")


def sde_step(x: torch.Tensor, v: torch.Tensor, tau: float, tau_next: float, eta: float, kind: str,
             noise: torch.Tensor, tau_cap: float | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One stochastic step; ``noise`` is a standard normal draw of x's shape."""
    dt = tau_next - tau
    if kind == "em":
        denom = 1 - (tau if tau < 1 else (tau_cap if tau_cap is not None else tau_next))
        sigma = eta * math.sqrt(tau / max(denom, 1e-6))
        mean = x + (v + sigma ** 2 / (2 * tau) * (x + (1 - tau) * v)) * dt
        std = sigma * math.sqrt(-dt)
    elif kind == "cps":
        std = tau_next * math.sin(eta * math.pi / 2)
        x0_hat, noise_hat = x - tau * v, x + (1 - tau) * v
        mean = (1 - tau_next) * x0_hat + math.sqrt(max(tau_next ** 2 - std ** 2, 0.0)) * noise_hat
    elif kind == "em_constant":
        mean = x + v * dt
        std = eta * math.sqrt(-dt)
    else:
        raise ValueError(f"unknown SDE kind {kind!r} (known: {', '.join(SAMPLERS)})")
    if std <= 0:
        raise ValueError(f"no noise at the step {tau} -> {tau_next}: move the SDE window off the last step")
    return mean + std * noise, mean, std


def has_noise(kind: str, tau_next: float) -> bool:
    """Whether a step of ``kind`` ending at ``tau_next`` carries noise (CPS's std vanishes at tau 0)."""
    return not (kind == "cps" and tau_next <= 0)


def log_prob(sample: torch.Tensor, mean: torch.Tensor, std: float | torch.Tensor) -> torch.Tensor:
    """Gaussian log-density of ``sample`` under N(mean, std^2), mean over the last dimension."""
    std = torch.as_tensor(std, dtype=sample.dtype, device=sample.device)
    return (-(sample - mean) ** 2 / (2 * std ** 2) - torch.log(std) - 0.5 * math.log(2 * math.pi)).mean(-1)


def gaussian_kl(mean: torch.Tensor, mean_ref: torch.Tensor, std: float | torch.Tensor) -> torch.Tensor:
    """KL(N(mean, std^2) || N(mean_ref, std^2)) = |mean - mean_ref|^2 / (2 std^2), mean over the last dim."""
    return ((mean - mean_ref) ** 2 / (2 * torch.as_tensor(std, dtype=mean.dtype) ** 2)).mean(-1)
