"""Every shipped run config parses; the GDPO-Listener presets hold the paper's sizes and build a model of them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.config import load_run_config
from training.flow import Conditions, MotionFlow

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "training" / "configs").glob("*.yaml"))
# Hidden widths of the encoders the preset names (their model cards' configs): wav2vec2-large 1024, T5-XXL 4096.
WAV2VEC2_LARGE, T5_XXL = 1024, 4096


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_parses(path):
    assert load_run_config(path).kind == path.stem.split("_")[0]  # the file name starts with its run kind


def test_the_gdpo_listener_presets_hold_the_papers_sizes():
    directory = CONFIGS[0].parent
    vae = load_run_config(directory / "vae_gdpo_listener.yaml")
    flow = load_run_config(directory / "flow_gdpo_listener.yaml")
    assert (vae.data.window_frames, vae.latents_per_window, vae.data.expression_coefficients) == (200, 25, 50)
    assert vae.vae.encoder_attention == "causal"
    assert (flow.flow.width, flow.flow.layers, flow.flow.heads, flow.flow.sample_steps) == (512, 6, 16, 10)
    assert (flow.flow.audio_tokens, flow.flow.positions, flow.flow.partner_streams) == ("frames", "tmrope", True)
    assert flow.flow.vae_run == vae.run_dir and flow.data.expression_coefficients == 50
    assert "t5-v1_1-xxl" in flow.encoders.text_path and "wav2vec2-large" in flow.encoders.audio_path
    assert flow.metrics.guidance_scale == 1.0


def test_the_gdpo_listener_flow_model_builds_and_runs_at_the_papers_size():
    """Random weights at the preset's size with the encoders' widths: one velocity pass over a 200-frame
    window with one audio token per frame and both partner streams."""
    directory = CONFIGS[0].parent
    vae = load_run_config(directory / "vae_gdpo_listener.yaml")
    flow = load_run_config(directory / "flow_gdpo_listener.yaml")
    rate, length, dim = vae.vae.latent_rate, vae.latents_per_window, vae.vae.latent_dim
    torch.manual_seed(0)
    model = MotionFlow(dim, WAV2VEC2_LARGE, T5_XXL, length, flow.flow, rate).eval()
    assert model.mask.shape == (1 + 2 * 200 + 3 * length, 1 + 2 * 200 + 3 * length)
    gen = torch.Generator().manual_seed(1)
    audio, partner_audio = (torch.randn(1, length, rate, WAV2VEC2_LARGE, generator=gen) for _ in range(2))
    cond = Conditions(audio, torch.randn(1, T5_XXL, generator=gen), partner_audio,
                      torch.randn(1, length, dim, generator=gen), torch.ones(1, dtype=torch.bool),
                      torch.ones(1, length, dtype=torch.bool))
    keep = torch.zeros(1, dtype=torch.bool)
    with torch.no_grad():
        velocity = model.velocity(torch.randn(1, length, dim, generator=gen), torch.rand(1, length, generator=gen),
                                  torch.randn(1, length, dim, generator=gen), cond, keep, keep)
    assert velocity.shape == (1, length, dim) and torch.isfinite(velocity).all()
