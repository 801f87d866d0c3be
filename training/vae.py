"""Transformer VAE: (frames, channels) normalised FLAME motion <-> (frames / rate, latent_dim) latents.

Encoder: linear -> strided conv (kernel = stride = rate: one latent per ``rate`` frames) ->
transformer -> mean and log-variance. The strided conv makes latent j a function of its own
``rate`` frames; ``vae.encoder_attention`` sets what the transformer adds: every latent
(``full``), latents <= j (``causal``: latent j never sees a frame after its own) or none
(``chunk``). SFT feeds the encoder's means of ground-truth motion as the flow model's history,
while sampling feeds generated latents that know nothing of later frames: with ``causal`` or
``chunk`` the teacher-forced history holds no look-ahead either. Decoder: linear -> transformer -> transposed conv
(back to frame rate) -> transformer -> linear. Loss: MSE of positions plus
``velocity_weight`` x MSE of frame-to-frame velocities plus ``kl_weight`` x KL to N(0, I).
"""

from __future__ import annotations

import torch
from torch import nn

from training.config import VAEConfig
from training.layers import seeded, sinusoid, transformer

NOISE_SALT = 11


def encoder_mask(attention: str, length: int, device: torch.device) -> torch.Tensor | None:
    """(length, length) bool, True where latent i may NOT attend to latent j; None: full attention."""
    if attention == "full":
        return None
    allowed = torch.ones(length, length, dtype=torch.bool, device=device)
    allowed = torch.tril(allowed) if attention == "causal" else torch.eye(length, dtype=torch.bool, device=device)
    return ~allowed


class MotionVAE(nn.Module):
    def __init__(self, channels: int, config: VAEConfig) -> None:
        super().__init__()
        width, rate = config.width, config.latent_rate
        self.channels, self.rate, self.latent_dim, self.width = channels, rate, config.latent_dim, width
        self.kl_weight, self.velocity_weight = config.kl_weight, config.velocity_weight
        self.encoder_attention = config.encoder_attention
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
        h = self.encoder(h + self._pos(h.shape[1], h), mask=encoder_mask(self.encoder_attention, h.shape[1], h.device))
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
