"""RL post-training: exact first ratio, every weight moves, GDPO/GRPO by hand, SDE steps and KL."""

from __future__ import annotations

import math

import pytest
import torch
from training_fixtures import (  # noqa: F401
    flame_shards_fixture,
    flow_run_fixture,
    tiny_config,
    tiny_encoders_fixture,
    vae_run_fixture,
)

from training.advantages import gdpo, grpo
from training.config import load_run_config
from training.rl import RLRun
from training.rl import main as rl_main
from training.sde import gaussian_kl, log_prob, sde_step


# Speaking-only shards have no listening frame: RL on them needs rl.listener_only off.
SPEAKING_ONLY = {"listener_only": False}
# Without a partner in the data the partner projections get zero gradients: Adam leaves them as they are.
PARTNER_WEIGHTS = {f"partner_{stream}_proj.{p}" for stream in ("audio", "motion") for p in ("weight", "bias")} | {
    "partner_token_type"}


def _rl_config(tmp_path, shards, flow_dir, **rl):
    return load_run_config(None, **tiny_config(
        "rl", tmp_path / "rl", shards, steps=1, save_every=1, data={"batch_size": 2},
        optim={"lr": 1e-3, "weight_decay": 0.0, "grad_clip": None},
        rl={"init_run": str(flow_dir), "group_size": 4, **SPEAKING_ONLY, **rl}))


@pytest.mark.parametrize("sde", ["em", "cps"])
def test_first_ratio_is_exactly_one_and_one_update_moves_every_trainable_weight(tmp_path, flame_shards, flow_run, sde):
    run = RLRun(_rl_config(tmp_path, flame_shards, flow_run, sde=sde, window_start=1))
    policy = run.trainer.unwrapped
    before = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    reference = {n: p.detach().clone() for n, p in run.reference.named_parameters()}
    out = run.step(next(run.stream(0)))
    assert out["first_ratio_dev"] == 0.0  # ratio = exp(logp_new - logp_old) == 1 exactly
    assert out["rollouts"].inputs.shape[:2] == (1, 8)  # one SDE step (window 1), 2 conditions x 4 rollouts
    assert out["advantages"].shape == (8,) and out["advantages"].abs().sum() > 0
    unchanged = {n for n, p in policy.named_parameters() if p.requires_grad and torch.equal(p, before[n])}
    assert before and unchanged == PARTNER_WEIGHTS
    assert all(torch.equal(p, reference[n]) for n, p in run.reference.named_parameters())  # frozen reference


def test_gdpo_advantage_matches_the_hand_computation():
    # 2 groups x 4 rollouts x 2 reward columns, weights (1, 0.5), population std, eps 1e-6.
    # Group 1, column A [0,0,2,2]: mean 1, std 1 -> [-1,-1,1,1];  column B [1,3,1,3]: mean 2, std 1 -> [-1,1,-1,1]
    #   weighted sum A + 0.5 B = [-1.5, -0.5, 0.5, 1.5]
    # Group 2, column A [5,5,5,5]: std 0 -> 0 / (0 + eps) = [0,0,0,0]; column B [0,4,0,4]: mean 2, std 2 -> [-1,1,-1,1]
    #   weighted sum = [-0.5, 0.5, -0.5, 0.5]
    # Batch of 8 sums: mean 0, variance (2.25 + 0.25 + 0.25 + 2.25 + 4 * 0.25) / 8 = 0.75, std sqrt(0.75)
    #   -> [-1.5, -0.5, 0.5, 1.5, -0.5, 0.5, -0.5, 0.5] / sqrt(0.75)
    rewards = torch.tensor([[0., 1.], [0., 3.], [2., 1.], [2., 3.], [5., 0.], [5., 4.], [5., 0.], [5., 4.]])
    weights = torch.tensor([1.0, 0.5])
    s = math.sqrt(3.0)
    expected = torch.tensor([-s, -1 / s, 1 / s, s, -1 / s, 1 / s, -1 / s, 1 / s])
    torch.testing.assert_close(gdpo(rewards, weights, 4, 1e-6), expected, atol=1e-5, rtol=0)


def test_unscored_rollouts_get_zero_advantage_and_stay_out_of_gdpos_batch_normalisation():
    rewards = torch.tensor([[0., 1.], [0., 3.], [2., 1.], [2., 3.], [5., 0.], [5., 4.], [5., 0.], [5., 4.]])
    weights = torch.tensor([1.0, 0.5])
    junk = torch.tensor([[9., -7.], [3., 8.], [-2., 0.], [4., 4.]])  # a third group, not scored
    scored = torch.tensor([True] * 8 + [False] * 4)
    for advantage in (gdpo, grpo):
        out = advantage(torch.cat([rewards, junk]), weights, 4, 1e-6, scored)
        torch.testing.assert_close(out[:8], advantage(rewards, weights, 4, 1e-6))
        assert torch.equal(out[8:], torch.zeros(4))


def test_grpo_normalises_the_weighted_sum_within_each_group():
    # Weighted sums: group 1 [0.5, 1.5, 2.5, 3.5] (mean 2, std sqrt(1.25)); group 2 [5, 7, 5, 7] (mean 6, std 1).
    rewards = torch.tensor([[0., 1.], [0., 3.], [2., 1.], [2., 3.], [5., 0.], [5., 4.], [5., 0.], [5., 4.]])
    out = grpo(rewards, torch.tensor([1.0, 0.5]), 4, 0.0)
    g1 = torch.tensor([-1.5, -0.5, 0.5, 1.5]) / math.sqrt(1.25)
    torch.testing.assert_close(out, torch.cat([g1, torch.tensor([-1.0, 1.0, -1.0, 1.0])]))


@pytest.mark.parametrize("kind", ["em", "cps"])
def test_sde_steps_keep_the_flow_marginals(kind):
    """Data at a point c: x_tau = (1 - tau) c + tau z has exact velocity (x - c) / tau. A step must
    land on (1 - tau_next) c + tau_next z' (std tau_next), as the ODE marginal does."""
    gen = torch.Generator().manual_seed(0)
    c, tau, tau_next, n = 0.7, 0.6, 0.59, 400_000
    x = (1 - tau) * c + tau * torch.randn(n, 1, generator=gen)
    v = (x - c) / tau
    new, _, std = sde_step(x, v, tau, tau_next, 0.5, kind, torch.randn(n, 1, generator=gen))
    assert std > 0
    assert abs(float(new.mean()) - (1 - tau_next) * c) < 3e-3
    assert abs(float(new.std()) / tau_next - 1) < (3e-3 if kind == "cps" else 1e-2)


def test_log_prob_and_kl_are_those_of_gaussians():
    gen = torch.Generator().manual_seed(1)
    mean, ref, sample = (torch.randn(3, 5, generator=gen) for _ in range(3))
    normal = torch.distributions.Normal(mean, 0.3)
    torch.testing.assert_close(log_prob(sample, mean, 0.3), normal.log_prob(sample).mean(-1))
    expected = torch.distributions.kl_divergence(normal, torch.distributions.Normal(ref, 0.3)).mean(-1)
    torch.testing.assert_close(gaussian_kl(mean, ref, 0.3), expected)


def test_cps_refuses_a_window_on_the_noiseless_last_step():
    with pytest.raises(ValueError, match="no noise"):
        sde_step(torch.zeros(2, 3), torch.zeros(2, 3), 0.25, 0.0, 0.5, "cps", torch.zeros(2, 3))


def test_the_rl_command_dry_run(tmp_path, flame_shards, flow_run, capsys):
    import yaml

    config_file = tmp_path / "rl.yaml"
    config_file.write_text(yaml.safe_dump(_rl_config(tmp_path, flame_shards, flow_run).model_dump(mode="json")))
    assert rl_main(["--config", str(config_file), "--dry-run"]) == 0
    assert "done: 1 step(s)" in capsys.readouterr().out
    assert (tmp_path / "rl" / "stats.json").exists()


def test_resuming_rl_gives_the_same_next_step_loss_and_advantages(tmp_path, flame_shards, flow_run):
    """EMA on, two inner epochs of two micro-batches: optimizer, EMA, step counter and data position all matter."""
    from training.checkpoint import checkpoint_dirs
    from training.rl import run_rl

    def config(name, steps):
        return load_run_config(None, **tiny_config(
            "rl", tmp_path / name, flame_shards, steps=steps, save_every=2, data={"batch_size": 2},
            optim={"lr": 1e-3, "grad_clip": None, "grad_accum": 2, "ema_decay": 0.9},
            rl={"init_run": str(flow_run), "group_size": 4, "inner_epochs": 2, **SPEAKING_ONLY}))

    straight = RLRun(config("straight", 3))
    stream = straight.stream(0)
    uninterrupted = [straight.step(next(stream)) for _ in range(3)]
    assert not torch.equal(uninterrupted[1]["advantages"], uninterrupted[2]["advantages"])

    first = run_rl(config("resumed", 2))
    assert [round(r["loss"], 6) for r in first] == [round(o["loss"], 6) for o in uninterrupted[:2]]
    assert [p.name for p in checkpoint_dirs(tmp_path / "resumed")] == ["step-000002"]
    resumed = RLRun(config("resumed", 3))
    assert resumed.trainer.resume() is not None and resumed.trainer.state.step == 2
    out = resumed.step(next(resumed.stream(resumed.trainer.state.step)))
    expected = uninterrupted[2]
    torch.testing.assert_close(out["rewards"], expected["rewards"], rtol=0, atol=1e-6)
    torch.testing.assert_close(out["advantages"], expected["advantages"], rtol=0, atol=1e-5)
    assert abs(out["loss"] - expected["loss"]) <= 1e-6, (out["loss"], expected["loss"])
    assert abs(out["kl"] - expected["kl"]) <= 1e-7
    weights = dict(resumed.trainer.unwrapped.named_parameters())
    assert all(torch.allclose(p, weights[n], atol=1e-6) for n, p in straight.trainer.unwrapped.named_parameters())
