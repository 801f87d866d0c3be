"""Stochastic denoising steps with Gaussian log-probabilities, for RL on a flow model.

Convention as in training/flow.py: ``x_tau = (1 - tau) x0 + tau * noise``, velocity
``v = noise - x0``, tau runs from 1 (noise) to 0 (data); one step goes tau -> tau_next < tau.
Both samplers keep the marginals of the ODE and return (sample, mean, std):

- ``em`` (Euler-Maruyama of the reverse SDE): with dt = tau_next - tau < 0 and
  ``sigma = eta * sqrt(tau / (1 - tau))`` (at tau = 1 the denominator uses the next grid
  level, to stay finite),
  ``mean = x + (v + sigma^2 / (2 tau) * (x + (1 - tau) v)) dt``, ``std = sigma * sqrt(-dt)``.
- ``cps`` (coefficients-preserving): with x0_hat = x - tau v and noise_hat = x + (1 - tau) v,
  ``std = tau_next * sin(eta * pi / 2)`` and
  ``mean = (1 - tau_next) x0_hat + sqrt(tau_next^2 - std^2) noise_hat``, so the sample keeps
  exactly the coefficients (1 - tau_next, tau_next) of x0 and unit noise.

``log_prob`` is the Gaussian log-density of the sample, averaged over the latent dimensions.
"""

from __future__ import annotations

import math

import torch


def sde_step(x: torch.Tensor, v: torch.Tensor, tau: float, tau_next: float, eta: float, kind: str,
             noise: torch.Tensor, tau_cap: float | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One stochastic step; ``noise`` is a standard normal draw of x's shape."""
    if kind == "em":
        dt = tau_next - tau
        denom = 1 - (tau if tau < 1 else (tau_cap if tau_cap is not None else tau_next))
        sigma = eta * math.sqrt(tau / max(denom, 1e-6))
        mean = x + (v + sigma ** 2 / (2 * tau) * (x + (1 - tau) * v)) * dt
        std = sigma * math.sqrt(-dt)
    elif kind == "cps":
        std = tau_next * math.sin(eta * math.pi / 2)
        x0_hat, noise_hat = x - tau * v, x + (1 - tau) * v
        mean = (1 - tau_next) * x0_hat + math.sqrt(max(tau_next ** 2 - std ** 2, 0.0)) * noise_hat
    else:
        raise ValueError(f"unknown SDE kind {kind!r}")
    if std <= 0:
        raise ValueError(f"no noise at the step {tau} -> {tau_next}: move the SDE window off the last step")
    return mean + std * noise, mean, std


def log_prob(sample: torch.Tensor, mean: torch.Tensor, std: float | torch.Tensor) -> torch.Tensor:
    """Gaussian log-density of ``sample`` under N(mean, std^2), mean over the last dimension."""
    std = torch.as_tensor(std, dtype=sample.dtype, device=sample.device)
    return (-(sample - mean) ** 2 / (2 * std ** 2) - torch.log(std) - 0.5 * math.log(2 * math.pi)).mean(-1)


def gaussian_kl(mean: torch.Tensor, mean_ref: torch.Tensor, std: float | torch.Tensor) -> torch.Tensor:
    """KL(N(mean, std^2) || N(mean_ref, std^2)) = |mean - mean_ref|^2 / (2 std^2), mean over the last dim."""
    return ((mean - mean_ref) ** 2 / (2 * torch.as_tensor(std, dtype=mean.dtype) ** 2)).mean(-1)
