"""Transformer VAE: (frames, channels) normalised FLAME motion <-> (frames / rate, latent_dim) latents.

Encoder: linear -> strided conv (kernel = stride = rate: one latent per ``rate`` frames) ->
transformer -> mean and log-variance. Decoder: linear -> transformer -> transposed conv
(back to frame rate) -> transformer -> linear. Loss: MSE of positions plus
``velocity_weight`` x MSE of frame-to-frame velocities plus ``kl_weight`` x KL to N(0, I).
"""

from __future__ import annotations

import torch
from torch import nn

from training.config import VAEConfig
from training.layers import seeded, sinusoid, transformer

NOISE_SALT = 11


class MotionVAE(nn.Module):
    def __init__(self, channels: int, config: VAEConfig) -> None:
        super().__init__()
        width, rate = config.width, config.latent_rate
        self.channels, self.rate, self.latent_dim, self.width = channels, rate, config.latent_dim, width
        self.kl_weight, self.velocity_weight = config.kl_weight, config.velocity_weight
        self.inp = nn.Linear(channels, width)
        self.down = nn.Conv1d(width, width, rate, stride=rate)
        self.encoder = transformer(width, config.layers, config.heads, config.dropout)
        self.to_stats = nn.Linear(width, 2 * config.latent_dim)
        self.from_latent = nn.Linear(config.latent_dim, width)
        self.decoder = transformer(width, config.layers, config.heads, config.dropout)
        self.up = nn.ConvTranspose1d(width, width, rate, stride=rate)
        self.refine = transformer(width, 1, config.heads, config.dropout)
        self.out = nn.Linear(width, channels)

    def _pos(self, length: int, like: torch.Tensor) -> torch.Tensor:
        return sinusoid(torch.arange(length, device=like.device), self.width).to(like.dtype)

    def encode(self, motion: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, C) -> mean and log-variance, each (B, T // rate, latent_dim)."""
        h = self.down(self.inp(motion).transpose(1, 2)).transpose(1, 2)
        h = self.encoder(h + self._pos(h.shape[1], h))
        mean, logvar = self.to_stats(h).chunk(2, dim=-1)
        return mean, logvar.clamp(-20, 10)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, L, latent_dim) -> (B, L * rate, C)."""
        h = self.from_latent(latents)
        h = self.decoder(h + self._pos(h.shape[1], h))
        h = self.up(h.transpose(1, 2)).transpose(1, 2)
        return self.out(self.refine(h + self._pos(h.shape[1], h)))

    def forward(self, motion: torch.Tensor, seeds: torch.Tensor) -> dict[str, torch.Tensor]:
        # The loss goes through forward so that DDP synchronises its gradients.
        return self.loss(motion, seeds)

    def loss(self, motion: torch.Tensor, seeds: torch.Tensor) -> dict[str, torch.Tensor]:
        mean, logvar = self.encode(motion)
        noise = seeded(seeds, NOISE_SALT, tuple(mean.shape[1:])).to(mean)
        recon = self.decode(mean + noise * (0.5 * logvar).exp())
        pos = (recon - motion).pow(2).mean()
        vel = (recon.diff(dim=1) - motion.diff(dim=1)).pow(2).mean()
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
        total = pos + self.velocity_weight * vel + self.kl_weight * kl
        return {"loss": total, "recon": pos.detach(), "velocity": vel.detach(), "kl": kl.detach()}
