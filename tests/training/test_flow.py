"""The AR flow transformer: the attention layout makes parallel training equal sequential sampling."""

from __future__ import annotations

import torch
from training_fixtures import (  # noqa: F401
    flame_shards_fixture,
    flow_run_fixture,
    tiny_encoders_fixture,
    vae_run_fixture,
)

from training.config import FlowConfig, load_run_config
from training.flow import Conditions, MotionFlow, sample_long, sample_window

L, D, DA, DT = 5, 4, 6, 3


def _model() -> MotionFlow:
    torch.manual_seed(0)
    return MotionFlow(D, DA, DT, L, FlowConfig(width=16, layers=2, heads=2)).eval()


def _inputs(batch: int = 2):
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(batch, L, D, generator=gen), torch.rand(batch, L, generator=gen),
            torch.randn(batch, L, D, generator=gen), torch.randn(batch, L, DA, generator=gen),
            torch.randn(batch, DT, generator=gen)]


def test_position_i_sees_only_earlier_history_and_its_own_noisy_input():
    model = _model()
    noisy, tau, history, audio, text = _inputs()
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


def test_long_sequences_slide_a_window_over_the_audio():
    model = _model()
    gen = torch.Generator().manual_seed(2)
    audio, text = torch.randn(1, L + 3, DA, generator=gen), torch.randn(1, DT, generator=gen)
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
    assert out["vertex_metrics"] == "skipped: metrics.flame_model is not set"
