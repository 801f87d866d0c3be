"""What a flow model is built from and fed with: the frozen VAE, the encoders and the statistics.

SFT, RL and evaluation all need these; they live here so none of those modules imports another.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from training.checkpoint import load_weights
from training.config import RunConfig, load_run_config
from training.encoders import FrozenEncoders
from training.flow import MotionFlow
from training.stats import MotionStats
from training.vae import MotionVAE


@dataclass
class FlowParts:
    """What a flow model needs around it: frozen VAE and encoders, and the motion statistics."""
    vae: MotionVAE
    encoders: torch.nn.Module
    stats: MotionStats
    vae_config: RunConfig


def load_vae(vae_run: str | Path) -> tuple[MotionVAE, MotionStats, RunConfig]:
    vae_config = load_run_config(Path(vae_run) / "config.yaml")
    stats = MotionStats.load(Path(vae_run))
    vae = MotionVAE(len(stats.mean), vae_config.vae)
    load_weights(Path(vae_run), vae)
    return vae.eval().requires_grad_(False), stats, vae_config


def flow_parts(config: RunConfig, device: torch.device) -> FlowParts:
    if not config.flow.vae_run:
        raise ValueError("flow.vae_run is not set: train a VAE first (kind: vae) and point at its run folder")
    vae, stats, vae_config = load_vae(config.flow.vae_run)
    return FlowParts(vae.to(device), FrozenEncoders(config.encoders).to(device), stats, vae_config)


def build_flow(config: RunConfig, parts: FlowParts) -> MotionFlow:
    length = config.data.window_frames // parts.vae_config.vae.latent_rate
    return MotionFlow(parts.vae_config.vae.latent_dim, parts.encoders.audio_dim, parts.encoders.text_dim, length,
                      config.flow)


def flow_inputs(parts: FlowParts, batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
    """Latents (from the frozen VAE's means), audio features per latent and caption embeddings."""
    motion = parts.stats.normalise(batch["motion"].to(device))
    rate = parts.vae_config.vae.latent_rate
    with torch.no_grad():
        latents, _ = parts.vae.encode(motion)
        audio = parts.encoders.audio_features(batch["audio"], motion.shape[1], rate)
        text = parts.encoders.text_features(batch["caption"])
    return {"latents": latents, "audio": audio, "text": text, "motion": motion}
