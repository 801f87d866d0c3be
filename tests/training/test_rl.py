"""RL post-training: exact first ratio, a lagging behaviour policy that makes the ratio move and the clip
act, one precision path under bf16, every weight moves, GDPO/GRPO/GDPO-Listener advantages by hand and
scale-free, the samplers' steps and KL."""

from __future__ import annotations

import contextlib
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

from training.advantages import gdpo, gdpo_mean, grpo, normalise
from training.config import load_run_config
from training.rl import RLRun, Velocity, log_probs, sde_window, step_means
from training.rl import main as rl_main
from training.sde import gaussian_kl, log_prob, sde_step


# Speaking-only shards have no listening frame: RL on them needs rl.listener_only off.
SPEAKING_ONLY = {"listener_only": False}
# Without a partner in the data the partner projections get zero gradients: Adam leaves them as they are.
PARTNER_WEIGHTS = {f"partner_{stream}_proj.{p}" for stream in ("audio", "motion") for p in ("weight", "bias")} | {
    "partner_token_type"}


def _rl_config(tmp_path, shards, flow_dir, optim=None, **rl):
    return load_run_config(None, **tiny_config(
        "rl", tmp_path / "rl", shards, steps=1, save_every=1, data={"batch_size": 2},
        optim={"lr": 1e-3, "weight_decay": 0.0, "grad_clip": None, **(optim or {})},
        rl={"init_run": str(flow_dir), "group_size": 4, **SPEAKING_ONLY, **rl}))


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def _same(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[name], second[name]) for name in first)


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate keeps one process-wide state: a run here sets its own precision, and none leaks out."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    yield
    AcceleratorState._reset_state()


@pytest.mark.parametrize("sde", ["em", "cps"])
def test_first_ratio_is_exactly_one_and_one_update_moves_every_trainable_weight(tmp_path, flame_shards, flow_run, sde):
    run = RLRun(_rl_config(tmp_path, flame_shards, flow_run, sde=sde, window_start=1))
    policy = run.trainer.unwrapped
    before = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    reference = {n: p.detach().clone() for n, p in run.reference.named_parameters()}
    out = run.step(next(run.stream(0)))
    assert out["behaviour_synced"] and out["first_ratio_dev"] == 0.0  # ratio = exp(logp_new - logp_old) == 1 exactly
    assert out["rollout_logp_dev"] == 0.0  # the rollout drew with the log-probabilities the replay computes
    assert out["rollouts"].inputs.shape[:2] == (1, 8)  # one SDE step (window 1), 2 conditions x 4 rollouts
    # CFG off by default (FlowPortrait): one conditional pass, the null embeddings never used nor trained.
    assert torch.equal(out["rollouts"].guidance, torch.ones(8, 6))
    assert not policy.null_audio.requires_grad and not policy.null_text.requires_grad
    assert out["advantages"].shape == (8,) and out["advantages"].abs().sum() > 0
    unchanged = {n for n, p in policy.named_parameters() if p.requires_grad and torch.equal(p, before[n])}
    assert before and unchanged == PARTNER_WEIGHTS
    assert all(torch.equal(p, reference[n]) for n, p in run.reference.named_parameters())  # frozen reference


def test_a_lagging_behaviour_policy_makes_the_ratio_move_and_the_clip_act(tmp_path, flame_shards, flow_run):
    """Behaviour synced every 2 steps, 2 inner updates, a small clip range: on a sync step the first
    update's ratio is exactly 1 and the second's is not; between syncs the rollouts come from the
    stale behaviour policy and even the first update clips."""
    run = RLRun(_rl_config(tmp_path, flame_shards, flow_run, window_start=1, behaviour_sync_every=2, inner_epochs=2,
                           clip_range=1e-4))
    policy, stream = run.trainer.unwrapped, run.stream(0)
    initial = _weights(policy)
    first = run.step(next(stream))
    assert first["behaviour_synced"] and len(first["inner"]) == 2 and run.trainer.state.step == 1
    assert first["inner"][0]["ratio_dev"] == 0.0 and first["inner"][0]["clip_frac"] == 0.0
    assert first["inner"][1]["ratio_dev"] > 1e-4 and first["inner"][1]["clip_frac"] > 0
    assert _same(_weights(run.behaviour), initial) and not _same(_weights(policy), initial)

    second = run.step(next(stream))
    assert not second["behaviour_synced"] and _same(_weights(run.behaviour), initial)  # still the step-0 policy
    assert all(update["ratio_dev"] > 1e-4 and update["clip_frac"] > 0 for update in second["inner"])

    before_third = _weights(policy)
    third = run.step(next(stream))
    assert third["behaviour_synced"] and _same(_weights(run.behaviour), before_third)
    assert third["first_ratio_dev"] == 0.0 and third["inner"][1]["clip_frac"] > 0


def test_under_bf16_rollouts_old_and_new_log_probs_and_the_reference_share_one_path(
        tmp_path, flame_shards, flow_run, fresh_accelerate_state):
    """bf16 autocast (CPU): the step-0 KL is 0 and the rollout's log-probabilities are the replay's. The same
    replay without autocast (the rollout-in-float32 mismatch of before) is visibly off: the path was bf16.
    GDPO-Listener's sampler: constant-sigma Euler-Maruyama on every step, 3 RL steps beside 4 at inference."""
    config = _rl_config(tmp_path, flame_shards, flow_run, optim={"mixed_precision": "bf16"}, sde="em_constant",
                        window=None, sample_steps=3, eta=0.5)
    assert config.flow.sample_steps == 4
    run = RLRun(config)
    out = run.step(next(run.stream(0)))
    rollouts = out["rollouts"]
    assert [level for step in rollouts.levels for level in step] == pytest.approx([1, 2 / 3, 2 / 3, 1 / 3, 1 / 3, 0])
    assert rollouts.stds == pytest.approx([0.5 * math.sqrt(1 / 3)] * 3)
    assert out["inner"][0]["kl"] <= 1e-12 and out["first_ratio_dev"] == 0.0
    assert out["rollout_logp_dev"] <= 1e-6
    with torch.enable_grad():
        float32 = log_probs(step_means(Velocity(run.behaviour, contextlib.nullcontext), rollouts, run.config), rollouts)
    assert float((float32 - rollouts.logp).abs().max()) > 1e-4


def test_cfg_during_rl_is_a_switch(tmp_path, flame_shards, flow_run):
    run = RLRun(_rl_config(tmp_path, flame_shards, flow_run, window_start=1, cfg=True))
    rollouts, _, _, _ = run.rollout(next(run.stream(0)))
    assert torch.equal(rollouts.guidance, torch.full((8, 6), 1.5))  # flow.guidance_scale on speaking frames
    assert run.trainer.unwrapped.null_audio.requires_grad and run.trainer.unwrapped.null_text.requires_grad


@pytest.mark.parametrize(("sde", "window", "expected"), [
    ("em", None, [0, 1, 2, 3]), ("em_constant", None, [0, 1, 2, 3]), ("cps", None, [0, 1, 2]),
    ("em", 2, [2, 3]), ("cps", 2, [1, 2])])
def test_the_sde_window_covers_the_steps_that_can_carry_noise(tmp_path, sde, window, expected):
    start = None if window is None else expected[0]
    config = load_run_config(None, rl={"sde": sde, "window": window, "window_start": start})
    assert sde_window(config, 4, torch.Generator()) == expected
    if window is not None:
        late = load_run_config(None, rl={"sde": sde, "window": window, "window_start": expected[0] + 1})
        with pytest.raises(ValueError, match="past the last possible start"):
            sde_window(late, 4, torch.Generator())


def test_gdpo_mean_is_gdpo_listeners_eq_8_9_by_hand():
    """Two conditions x 4 rollouts x 3 FLAME groups, lambda = (2, 1, 1); per group i and condition
    A_i = (R_i - mean) / std (population std), then A = sum(lambda_i A_i) / (sum(lambda_i) + eps), nothing after.
    Condition 1: R_0 [1, 3, 1, 3] -> [-1, 1, -1, 1]; R_1 [0, 0, 0, 4] (mean 1, std sqrt(3)) -> [-1, -1, -1, 3] / sqrt(3);
      R_2 [7, 7, 7, 7] -> 0. A = (2 A_0 + A_1) / 4.
    Condition 2: R_0 [2, 2, 2, 2] -> 0; R_1 [10, 20, 30, 40] (mean 25, std sqrt(125)) -> [-15, -5, 5, 15] / sqrt(125);
      R_2 [-1, 1, -1, 1] -> [-1, 1, -1, 1]. A = (A_1 + A_2) / 4."""
    rewards = torch.tensor([[1., 0., 7.], [3., 0., 7.], [1., 0., 7.], [3., 4., 7.],
                            [2., 10., -1.], [2., 20., 1.], [2., 30., -1.], [2., 40., 1.]], dtype=torch.float64)
    weights = torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64)
    r3, r125 = math.sqrt(3), math.sqrt(125)
    first = [(-2 - 1 / r3) / 4, (2 - 1 / r3) / 4, (-2 - 1 / r3) / 4, (2 + 3 / r3) / 4]
    second = [(-15 / r125 - 1) / 4, (-5 / r125 + 1) / 4, (5 / r125 - 1) / 4, (15 / r125 + 1) / 4]
    expected = torch.tensor(first + second, dtype=torch.float64)
    torch.testing.assert_close(gdpo_mean(rewards, weights, 4, 1e-6), expected, atol=1e-5, rtol=0)
    unscored = gdpo_mean(rewards, weights, 4, 1e-6, torch.tensor([True] * 4 + [False] * 4))
    torch.testing.assert_close(unscored, torch.cat([expected[:4], torch.zeros(4, dtype=torch.float64)]),
                               atol=1e-5, rtol=0)


def test_advantages_are_scale_free_across_orders_of_magnitude():
    """Reward columns around 1e-7, 1e-3, 1 and 1e3, each with a within-group spread of its own order (the
    smallest: 1e-7), keep unit-scale advantages; an absolute 1e-6 on the std would shrink the smallest
    column tenfold. A column equal up to float32 rounding of its magnitude gets about 0."""
    pattern = torch.tensor([[-1.0, 1.0, -1.0, 1.0], [-1.5, 0.5, -0.5, 1.5]])[..., None]  # 2 conditions x 4 rollouts
    scales = torch.tensor([1e-7, 1e-3, 1.0, 1e3])
    rewards = (-3 * scales + pattern * scales).reshape(8, 4)  # every column: a level and a spread, float32
    spread = rewards.reshape(2, 4, 4).std(1, unbiased=False)
    torch.testing.assert_close(spread[:, 0], torch.tensor([1e-7, math.sqrt(1.25) * 1e-7]))
    per_group = normalise(rewards.reshape(2, 4, 4), 1, 1e-6)
    torch.testing.assert_close(per_group.std(1, unbiased=False), torch.ones(2, 4), atol=1e-3, rtol=0)
    for column in range(4):  # the same pattern at every scale: the same advantages
        torch.testing.assert_close(per_group[..., column], per_group[..., 2], atol=1e-3, rtol=0)
    absolute = (rewards[:4, 0] - rewards[:4, 0].mean()) / (rewards[:4, 0].std(unbiased=False) + 1e-6)
    assert float(absolute.std(unbiased=False)) < 0.2
    for advantage in (gdpo_mean, gdpo, grpo):
        out = advantage(rewards[:, :1], torch.ones(1), 4, 1e-6)
        torch.testing.assert_close(out.reshape(2, 4).std(1, unbiased=False), torch.ones(2), atol=1e-3, rtol=0)
    level = torch.full((4,), 3.0)
    rounding = torch.stack([level[0], torch.nextafter(level[1], torch.tensor(4.0)), level[2],
                            torch.nextafter(level[3], torch.tensor(2.0))])
    assert float(rounding.std(unbiased=False)) > 0
    assert float(normalise(rounding, 0, 1e-6).abs().max()) < 0.2


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
def test_flow_grpo_and_cps_steps_keep_the_flow_marginals(kind):
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


def test_gdpo_listeners_constant_sigma_step_adds_variance_without_drift_correction():
    """mean = x + v dt exactly, std = sigma sqrt(-dt); on the point-mass data of the test above the sample's
    std is sqrt(tau_next^2 + sigma^2 (tau - tau_next)): above the ODE marginal's tau_next."""
    gen = torch.Generator().manual_seed(2)
    c, tau, tau_next, n, sigma = 0.7, 0.6, 0.35, 400_000, 0.5
    x = (1 - tau) * c + tau * torch.randn(n, 1, generator=gen)
    v = (x - c) / tau
    new, mean, std = sde_step(x, v, tau, tau_next, sigma, "em_constant", torch.randn(n, 1, generator=gen))
    torch.testing.assert_close(mean, x + v * (tau_next - tau))
    assert std == pytest.approx(sigma * math.sqrt(tau - tau_next))
    assert abs(float(new.mean()) - (1 - tau_next) * c) < 3e-3
    assert float(new.std()) == pytest.approx(math.sqrt(tau_next ** 2 + sigma ** 2 * (tau - tau_next)), rel=1e-2)


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
    """EMA on, two inner epochs of two micro-batches, the behaviour policy synced every 2 steps (at the
    resumed step 3 it is the policy of step 2, neither the policy nor the reference): optimizer, EMA,
    behaviour policy, step counter and data position all matter."""
    from training.checkpoint import checkpoint_dirs
    from training.rl import run_rl

    def config(name, steps):
        return load_run_config(None, **tiny_config(
            "rl", tmp_path / name, flame_shards, steps=steps, save_every=3, data={"batch_size": 2},
            optim={"lr": 1e-3, "grad_clip": None, "grad_accum": 2, "ema_decay": 0.9},
            rl={"init_run": str(flow_run), "group_size": 4, "inner_epochs": 2, "behaviour_sync_every": 2,
                **SPEAKING_ONLY}))

    straight = RLRun(config("straight", 4))
    stream = straight.stream(0)
    uninterrupted = [straight.step(next(stream)) for _ in range(4)]
    assert not torch.equal(uninterrupted[2]["advantages"], uninterrupted[3]["advantages"])
    assert [o["behaviour_synced"] for o in uninterrupted] == [True, False, True, False]

    first = run_rl(config("resumed", 3))
    assert [round(r["loss"], 6) for r in first] == [round(o["loss"], 6) for o in uninterrupted[:3]]
    assert [p.name for p in checkpoint_dirs(tmp_path / "resumed")] == ["step-000003"]
    resumed = RLRun(config("resumed", 4))
    assert resumed.trainer.resume() is not None and resumed.trainer.state.step == 3
    assert not _same(_weights(resumed.behaviour), _weights(resumed.reference))
    out = resumed.step(next(resumed.stream(resumed.trainer.state.step)))
    expected = uninterrupted[3]
    torch.testing.assert_close(out["rewards"], expected["rewards"], rtol=0, atol=1e-6)
    torch.testing.assert_close(out["advantages"], expected["advantages"], rtol=0, atol=1e-5)
    assert abs(out["loss"] - expected["loss"]) <= 1e-6, (out["loss"], expected["loss"])
    assert abs(out["kl"] - expected["kl"]) <= 1e-7
    weights = dict(resumed.trainer.unwrapped.named_parameters())
    assert all(torch.allclose(p, weights[n], atol=1e-6) for n, p in straight.trainer.unwrapped.named_parameters())
