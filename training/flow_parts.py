"""What a flow model is built from and fed with: the frozen VAE, the encoders and the statistics.

SFT, RL and evaluation all need these; they live here so none of those modules imports another.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from training.checkpoint import load_weights
from training.config import RunConfig, load_run_config
from training.encoders import FrozenEncoders
from training.flow import MOSTLY, Conditions, MotionFlow, latent_share
from training.stats import MotionStats
from training.vae import MotionVAE


@dataclass
class FlowParts:
    """What a flow model needs around it: frozen VAE and encoders, and the motion statistics.
    ``audio_per_frame``: the flow model takes one audio token per frame (``flow.audio_tokens: frames``)."""
    vae: MotionVAE
    encoders: torch.nn.Module
    stats: MotionStats
    vae_config: RunConfig
    audio_per_frame: bool = False


def load_vae(vae_run: str | Path) -> tuple[MotionVAE, MotionStats, RunConfig]:
    path = Path(vae_run) / "config.yaml"
    stated = (yaml.safe_load(path.read_text()) or {}).get("vae") or {}
    # VAE runs saved before vae.encoder_attention existed were trained with full attention.
    legacy = {} if "encoder_attention" in stated else {"vae": {"encoder_attention": "full"}}
    vae_config = load_run_config(path, **legacy)
    stats = MotionStats.load(Path(vae_run))
    vae = MotionVAE(len(stats.mean), vae_config.vae)
    load_weights(Path(vae_run), vae)
    return vae.eval().requires_grad_(False), stats, vae_config


def flow_parts(config: RunConfig, device: torch.device) -> FlowParts:
    if not config.flow.vae_run:
        raise ValueError("flow.vae_run is not set: train a VAE first (kind: vae) and point at its run folder")
    vae, stats, vae_config = load_vae(config.flow.vae_run)
    return FlowParts(vae.to(device), FrozenEncoders(config.encoders).to(device), stats, vae_config,
                     config.flow.audio_tokens == "frames")


def build_flow(config: RunConfig, parts: FlowParts) -> MotionFlow:
    rate = parts.vae_config.vae.latent_rate
    return MotionFlow(parts.vae_config.vae.latent_dim, parts.encoders.audio_dim, parts.encoders.text_dim,
                      config.data.window_frames // rate, config.flow, rate)


def flow_inputs(parts: FlowParts, batch: dict, device: torch.device, partner: bool = True) -> dict:
    """What a flow model is fed from a loader batch: ``latents`` (the frozen VAE's means of the
    normalised motion), ``motion`` (normalised), ``roles`` (B, T) and ``conditions``: audio
    features per latent (or per frame, grouped by latent: ``parts.audio_per_frame``), caption
    embeddings and, with ``partner``, the partner streams.

    Partner motion is normalised with the actor's statistics, untracked frames set to 0 there
    (the mean pose) before the VAE encodes it; a partner-motion latent is attended when its
    frames are mostly tracked (``flow.MOSTLY``). The audio encoder and the VAE only run on rows
    that have a partner (and a tracked face): a speaking-only batch costs nothing more."""
    motion = parts.stats.normalise(batch["motion"].to(device))
    rate = parts.vae_config.vae.latent_rate
    with torch.no_grad():
        latents, _ = parts.vae.encode(motion)
        audio = parts.encoders.audio_features(batch["audio"], motion.shape[1], rate, parts.audio_per_frame)
        cond = Conditions(audio, parts.encoders.text_features(batch["caption"]))
        if partner:
            cond = _with_partner(parts, batch, cond, latents, device)
    return {"latents": latents, "motion": motion, "roles": batch["role"].to(device), "conditions": cond}


def _with_partner(parts: FlowParts, batch: dict, cond: Conditions, latents: torch.Tensor,
                  device: torch.device) -> Conditions:
    frames, rate = batch["motion"].shape[1], parts.vae_config.vae.latent_rate
    heard = batch["has_partner"].to(device)
    if not heard.any():
        return cond  # no partner tensors: the model masks every partner token (a speaking-only batch has none)
    tracked = batch["partner_tracked"].to(device) & heard[:, None]
    seen = latent_share(tracked, rate) > MOSTLY
    partner_audio = torch.zeros_like(cond.audio)
    partner_audio[heard] = parts.encoders.audio_features(batch["partner_audio"][heard.cpu()], frames, rate,
                                                         parts.audio_per_frame).to(partner_audio.dtype)
    partner_motion = torch.zeros_like(latents)
    encoded = seen.any(1)
    if encoded.any():
        motion = parts.stats.normalise(batch["partner_motion"][encoded.cpu()].to(device))
        motion = torch.where(tracked[encoded][..., None], motion, torch.zeros_like(motion))
        partner_motion[encoded] = parts.vae.encode(motion)[0]
    return Conditions(cond.audio, cond.text, partner_audio, partner_motion, heard, seen)
