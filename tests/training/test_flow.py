"""The AR flow transformer: the attention layout makes parallel training equal sequential sampling."""

from __future__ import annotations

import torch
from training_fixtures import (  # noqa: F401
    flame_shards_fixture,
    flow_run_fixture,
    tiny_encoders_fixture,
    vae_run_fixture,
)

import pytest

from training.config import FlowConfig, load_run_config
from training.flow import Conditions, MotionFlow, sample_long, sample_window
from training.layers import rotary

L, D, DA, DT, RATE = 5, 4, 6, 3, 4
# (positions, audio tokens): today's layout, rotary positions with pooled audio, GDPO-Listener's frame-rate audio
LAYOUTS = [("learned", "pooled"), ("tmrope", "pooled"), ("tmrope", "frames")]


def _model(positions: str = "learned", audio_tokens: str = "pooled", **config) -> MotionFlow:
    torch.manual_seed(0)
    return MotionFlow(D, DA, DT, L, FlowConfig(width=16, layers=2, heads=2, positions=positions,
                                               audio_tokens=audio_tokens, **config), RATE).eval()


def _inputs(batch: int = 2, audio_tokens: str = "pooled"):
    gen = torch.Generator().manual_seed(1)
    audio_shape = (batch, L, RATE, DA) if audio_tokens == "frames" else (batch, L, DA)
    return [torch.randn(batch, L, D, generator=gen), torch.rand(batch, L, generator=gen),
            torch.randn(batch, L, D, generator=gen), torch.randn(*audio_shape, generator=gen),
            torch.randn(batch, DT, generator=gen)]


@pytest.mark.parametrize("positions,audio_tokens", LAYOUTS)
def test_position_i_sees_only_earlier_history_and_its_own_noisy_input(positions, audio_tokens):
    model = _model(positions, audio_tokens)
    noisy, tau, history, audio, text = _inputs(audio_tokens=audio_tokens)
    keep = torch.zeros(2, dtype=torch.bool)
    base = model.velocity(noisy, tau, history, Conditions(audio, text), keep, keep)
    i = 2
    changed_later = history.clone()
    changed_later[:, i:] += 5.0  # the latent at i and after: not visible to position i
    noisy_other = noisy.clone()
    noisy_other[:, [0, 1, 3, 4]] += 5.0
    tau_other = tau.clone()
    tau_other[:, [0, 4]] = 0.9
    same = model.velocity(noisy_other, tau_other, changed_later, Conditions(audio, text), keep, keep)
    torch.testing.assert_close(same[:, i], base[:, i], atol=1e-5, rtol=1e-5)
    earlier = history.clone()
    earlier[:, i - 1] += 5.0
    assert not torch.allclose(model.velocity(noisy, tau, earlier, Conditions(audio, text), keep, keep)[:, i],
                              base[:, i])
    later_audio = audio.clone()
    later_audio[:, -1] += 5.0  # the audio prefix is bidirectional within the window
    assert not torch.allclose(model.velocity(noisy, tau, history, Conditions(later_audio, text), keep, keep)[:, i],
                              base[:, i])


def test_tmrope_times_text_at_zero_audio_frames_at_their_frame_latents_at_their_middle_frame():
    # rate 4: latent j spans frames 4j..4j+3, its time is 4j + 2; frame-rate audio token i is at i.
    latent = [2, 6, 10, 14, 18]
    speaking = _model("tmrope", "frames", partner_streams=False).token_times(L, torch.device("cpu"))
    assert speaking.tolist() == [0, *range(20), *latent, *latent]  # text, audio, history, noisy
    conversation = _model("tmrope", "frames").token_times(L, torch.device("cpu"))
    assert conversation.tolist() == [0, *range(20), *range(20), *latent, *latent, *latent]  # + partner audio, motion
    pooled = _model("tmrope", "pooled", partner_streams=False).token_times(L, torch.device("cpu"))
    assert pooled.tolist() == [0, *latent, *latent, *latent]


def test_rotary_positions_make_attention_depend_on_time_differences_only():
    gen = torch.Generator().manual_seed(3)
    q, k = torch.randn(6, 8, generator=gen), torch.randn(6, 8, generator=gen)
    times = torch.tensor([0.0, 1, 2, 5, 9, 30])
    scores = rotary(q, times) @ rotary(k, times).T
    shifted = rotary(q, times + 17.0) @ rotary(k, times + 17.0).T
    torch.testing.assert_close(shifted, scores, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(rotary(q, times) @ rotary(k, times * 2).T, scores, atol=1e-3)
    # The model: shifting every token's time by whole windows leaves the velocity as it was.
    model = _model("tmrope", "frames")
    noisy, tau, history, audio, text = _inputs(audio_tokens="frames")
    keep = torch.zeros(2, dtype=torch.bool)
    base = model.velocity(noisy, tau, history, Conditions(audio, text), keep, keep)
    original = model.token_times
    model.token_times = lambda n, device: original(n, device) + 40
    torch.testing.assert_close(model.velocity(noisy, tau, history, Conditions(audio, text), keep, keep), base,
                               atol=1e-4, rtol=1e-4)


def test_frame_rate_audio_tokens_resolve_the_order_of_frames_that_pooling_averages_away():
    noisy, tau, history, audio, text = _inputs(audio_tokens="frames")
    reordered = audio.flip(2)  # each latent's frames in reverse order: the same mean per latent
    keep = torch.zeros(2, dtype=torch.bool)
    frames = _model("tmrope", "frames")
    assert not torch.allclose(frames.velocity(noisy, tau, history, Conditions(reordered, text), keep, keep),
                              frames.velocity(noisy, tau, history, Conditions(audio, text), keep, keep), atol=1e-5)
    pooled = _model("tmrope", "pooled")
    torch.testing.assert_close(pooled.velocity(noisy, tau, history, Conditions(reordered.mean(2), text), keep, keep),
                               pooled.velocity(noisy, tau, history, Conditions(audio.mean(2), text), keep, keep))
    with pytest.raises(ValueError, match="one per frame"):
        frames.velocity(noisy, tau, history, Conditions(audio.mean(2), text), keep, keep)


def test_frame_rate_audio_needs_time_aligned_positions():
    with pytest.raises(ValueError, match="tmrope"):
        FlowConfig(audio_tokens="frames")


def test_guidance_mixes_conditional_and_unconditional_velocities():
    model = _model()
    noisy, tau, history, audio, text = _inputs()
    conditions = Conditions(audio, text)
    keep = torch.zeros(2, dtype=torch.bool)
    cond = model.velocity(noisy, tau, history, conditions, keep, keep)
    uncond = model.velocity(noisy, tau, history, conditions, ~keep, ~keep)
    assert not torch.allclose(cond, uncond)
    torch.testing.assert_close(model.guided_velocity(noisy, tau, history, conditions, 1.0), cond)
    torch.testing.assert_close(model.guided_velocity(noisy, tau, history, conditions, 3.0),
                               uncond + 3.0 * (cond - uncond))


@pytest.mark.parametrize("positions,audio_tokens", LAYOUTS)
def test_long_sequences_slide_a_window_over_the_audio(positions, audio_tokens):
    model = _model(positions, audio_tokens)
    gen = torch.Generator().manual_seed(2)
    shape = (1, L + 3, RATE, DA) if audio_tokens == "frames" else (1, L + 3, DA)
    audio, text = torch.randn(*shape, generator=gen), torch.randn(1, DT, generator=gen)
    out = sample_long(model, Conditions(audio, text), steps=3, scale=1.5, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, L + 3, D) and torch.isfinite(out).all()
    first = sample_window(model, Conditions(audio[:, :L], text), 3, 1.5, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out[:, :L], first)  # the first window is sampled whole, then one latent per slide


def test_held_out_metrics_of_a_trained_flow_run(tmp_path, flame_shards, flow_run):
    from training.checkpoint import load_weights
    from training.evaluate import evaluate_flow
    from training.flow_parts import build_flow, flow_parts

    config = load_run_config(flow_run / "config.yaml", data={"eval_shards": str(flame_shards)})
    parts = flow_parts(config, torch.device("cpu"))
    model = build_flow(config, parts)
    load_weights(flow_run, model)
    out = evaluate_flow(model.eval(), parts, config)
    assert out["windows"] == 3
    assert all(out[k] >= 0 for k in ("dd_upper_face", "dd_jaw", "dd_head_pose"))
    assert out["vertex_metrics"].startswith("skipped: metrics.flame_model is not set")
