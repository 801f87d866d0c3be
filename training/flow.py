"""Auto-regressive rectified-flow transformer over motion latents.

Convention: ``x_tau = (1 - tau) * x_data + tau * noise`` with tau = 1 pure noise and tau = 0
data; the network predicts the velocity ``v = noise - x_data`` and sampling integrates tau
from 1 to 0.

One sequence per window of L latents: ``[text (1)] [audio (L)] [history (L)] [noisy (L)]``.
Attention mask: the prefix (text, audio) attends within the prefix; history token j (the
clean latent j) attends to the prefix and history <= j; noisy token i (latent i at noise
level tau_i) attends to the prefix, history < i and itself. So the velocity at position i
depends only on the conditions, the latents before i and its own noisy input: training
computes every position in parallel (teacher forcing), sampling fills positions one by one,
and both see exactly the same function.

Condition dropout replaces the text token and/or all audio tokens by learned null
embeddings (per sample, seeded); classifier-free guidance mixes the velocities with and
without conditions: ``v = v_uncond + s * (v_cond - v_uncond)``.
"""

from __future__ import annotations

import torch
from torch import nn

from training.config import FlowConfig
from training.layers import seeded, sinusoid, transformer

TAU_SALT, NOISE_SALT, DROP_SALT = 21, 22, 23
TEXT, AUDIO, HISTORY, NOISY = range(4)


def attention_mask(length: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean (1 + 3L, 1 + 3L) mask, True where attention is NOT allowed (layout above)."""
    prefix = 1 + length
    size = prefix + 2 * length
    allowed = torch.zeros(size, size, dtype=torch.bool, device=device)
    allowed[:prefix, :prefix] = True
    hist = slice(prefix, prefix + length)
    noisy = slice(prefix + length, size)
    allowed[hist, :prefix] = True
    allowed[hist, hist] = torch.tril(torch.ones(length, length, dtype=torch.bool, device=device))
    allowed[noisy, :prefix] = True
    allowed[noisy, hist] = torch.tril(torch.ones(length, length, dtype=torch.bool, device=device), diagonal=-1)
    allowed[noisy, noisy] = torch.eye(length, dtype=torch.bool, device=device)
    return ~allowed


class MotionFlow(nn.Module):
    def __init__(self, latent_dim: int, audio_dim: int, text_dim: int, length: int, config: FlowConfig) -> None:
        super().__init__()
        width = config.width
        self.latent_dim, self.length, self.width = latent_dim, length, width
        self.audio_drop, self.text_drop = config.audio_drop, config.text_drop
        self.audio_proj = nn.Linear(audio_dim, width)
        self.text_proj = nn.Linear(text_dim, width)
        self.null_audio = nn.Parameter(torch.randn(width) * 0.02)
        self.null_text = nn.Parameter(torch.randn(width) * 0.02)
        self.history_proj = nn.Linear(latent_dim, width)
        self.noisy_proj = nn.Linear(latent_dim, width)
        self.time_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.position = nn.Parameter(torch.randn(length, width) * 0.02)
        self.token_type = nn.Parameter(torch.randn(4, width) * 0.02)
        self.blocks = transformer(width, config.layers, config.heads, config.dropout)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, latent_dim)
        # Latent standardisation (per-channel mean, one scale), set once from the first training batch.
        self.register_buffer("latent_mean", torch.zeros(latent_dim))
        self.register_buffer("latent_std", torch.ones(latent_dim))
        self.register_buffer("mask", attention_mask(length), persistent=False)

    def forward(self, method: str, *args):
        # Losses and replayed velocities go through forward so that DDP synchronises gradients.
        return getattr(self, method)(*args)

    def velocity(self, noisy: torch.Tensor, tau: torch.Tensor, history: torch.Tensor, audio: torch.Tensor,
                 text: torch.Tensor, drop_audio: torch.Tensor, drop_text: torch.Tensor) -> torch.Tensor:
        """Velocity (B, L, D) for noisy latents (B, L, D) at levels tau (B, L).

        history (B, L, D): clean latents (only those before each position are seen);
        audio (B, L, Da) features per latent; text (B, Dt); drop_* (B,) bools.
        """
        n = noisy.shape[1]
        pos = self.position[:n]
        a = self.audio_proj(audio)
        a = torch.where(drop_audio[:, None, None], self.null_audio.expand_as(a), a) + pos + self.token_type[AUDIO]
        t = self.text_proj(text)
        t = torch.where(drop_text[:, None], self.null_text.expand_as(t), t) + self.token_type[TEXT]
        h = self.history_proj(history) + pos + self.token_type[HISTORY]
        x = (self.noisy_proj(noisy) + self.time_mlp(sinusoid(tau * 1000.0, self.width).to(noisy.dtype))
             + pos + self.token_type[NOISY])
        tokens = torch.cat([t[:, None], a, h, x], dim=1)
        mask = self.mask if n == self.length else attention_mask(n, noisy.device)
        out = self.blocks(tokens, mask=mask)
        return self.out(self.norm(out[:, 1 + 2 * n:]))

    def guided_velocity(self, noisy: torch.Tensor, tau: torch.Tensor, history: torch.Tensor, audio: torch.Tensor,
                        text: torch.Tensor, scale: float) -> torch.Tensor:
        keep = torch.zeros(noisy.shape[0], dtype=torch.bool, device=noisy.device)
        cond = self.velocity(noisy, tau, history, audio, text, keep, keep)
        if scale == 1.0:
            return cond
        uncond = self.velocity(noisy, tau, history, audio, text, ~keep, ~keep)
        return uncond + scale * (cond - uncond)

    def standardise(self, latents: torch.Tensor) -> torch.Tensor:
        return (latents - self.latent_mean) / self.latent_std

    def unstandardise(self, latents: torch.Tensor) -> torch.Tensor:
        return latents * self.latent_std + self.latent_mean

    def loss(self, latents: torch.Tensor, audio: torch.Tensor, text: torch.Tensor,
             seeds: torch.Tensor) -> dict[str, torch.Tensor]:
        """Flow-matching loss on standardised latents (B, L, D); draws are seeded per sample."""
        x0 = self.standardise(latents)
        shape = tuple(x0.shape[1:])
        tau = seeded(seeds, TAU_SALT, shape[:1], kind="uniform").to(x0)
        noise = seeded(seeds, NOISE_SALT, shape).to(x0)
        drops = seeded(seeds, DROP_SALT, (2,), kind="uniform").to(x0.device)
        noisy = (1 - tau[..., None]) * x0 + tau[..., None] * noise
        pred = self.velocity(noisy, tau, x0, audio, text, drops[:, 0] < self.audio_drop, drops[:, 1] < self.text_drop)
        return {"loss": (pred - (noise - x0)).pow(2).mean()}


def tau_grid(steps: int, device: torch.device | None = None) -> torch.Tensor:
    """steps + 1 noise levels from 1 to 0 (uniform)."""
    return torch.linspace(1.0, 0.0, steps + 1, device=device)


@torch.no_grad()
def sample_window(model: MotionFlow, audio: torch.Tensor, text: torch.Tensor, steps: int, scale: float,
                  generator: torch.Generator | None = None, history: torch.Tensor | None = None,
                  start: int = 0) -> torch.Tensor:
    """Fill latents ``start..L-1`` of one window by Euler ODE sampling, one latent at a time.

    history (B, L, D) holds standardised latents already fixed before ``start`` (sliding
    windows); returns the standardised latents (B, L, D).
    """
    batch, length = audio.shape[0], audio.shape[1]
    out = torch.zeros(batch, length, model.latent_dim, device=audio.device) if history is None else history.clone()
    grid = tau_grid(steps, audio.device)
    for i in range(start, length):
        x = torch.randn(batch, model.latent_dim, generator=generator).to(audio.device)
        for k in range(steps):
            noisy = out.clone()
            noisy[:, i] = x
            tau = torch.full((batch, length), float(grid[k]), device=audio.device)
            v = model.guided_velocity(noisy, tau, out, audio, text, scale)[:, i]
            x = x + (grid[k + 1] - grid[k]) * v
        out[:, i] = x
    return out


@torch.no_grad()
def sample_long(model: MotionFlow, audio: torch.Tensor, text: torch.Tensor, steps: int, scale: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Any number N of latents (audio (B, N, Da)) by a sliding window of the model's length.

    The first window is sampled whole; each later latent is sampled with the previous L-1
    latents as history and the audio of the window ending at it. Returns (B, N, D) standardised.
    """
    length = model.length
    total = audio.shape[1]
    first = sample_window(model, audio[:, :min(length, total)], text, steps, scale, generator)
    if total <= length:
        return first
    out = torch.cat([first, torch.zeros(audio.shape[0], total - length, model.latent_dim, device=audio.device)], 1)
    for i in range(length, total):
        s = i - length + 1
        window = sample_window(model, audio[:, s:i + 1], text, steps, scale, generator,
                               history=out[:, s:i + 1], start=length - 1)
        out[:, i] = window[:, -1]
    return out
