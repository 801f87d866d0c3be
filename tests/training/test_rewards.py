"""Rewards by hand: every reward on small windows worked out on paper, the columns per group
(GDPO-Listener's R_i) and per term, and the ordering (a prediction closer to the truth earns more)."""

from __future__ import annotations

import math

import pytest
import torch

from training.config import DEFAULT_GROUPS, RewardWeights, RLConfig
from training.rewards import REWARDS, drift, mse, pos_sigma, pos_var, reward_columns, vel_sigma, vel_var

# One window of 3 frames x 2 dims (the expression group below).
TRUE = [[0.0, 0.0], [1.0, 2.0], [2.0, 4.0]]
PRED = [[0.0, 1.0], [0.0, 1.0], [3.0, 1.0]]
# var_t(TRUE) = (2/3, 8/3), var_t(PRED) = (2, 0)             -> pos_var = -(4/3 + 8/3) / 2 = -2
# dTRUE = (1, 2) twice: var 0; dPRED = (0, 0), (3, 0): var (9/4, 0) -> vel_var = -(9/4) / 2 = -9/8
# mean_t(TRUE) = (1, 2), mean_t(PRED) = (1, 1)               -> drift = -(0 + 1) / 2 = -1/2
# PRED - TRUE = (0, 1), (-1, -1), (1, -3): squares sum to 13  -> mse = -13/6
# std_t(TRUE) = (sqrt(2/3), 2 sqrt(2/3)), std_t(PRED) = (sqrt(2), 0) -> pos_sigma = -(sqrt(2) + sqrt(2/3)) / 2
# std_t(dTRUE) = (0, 0), std_t(dPRED) = (3/2, 0)                    -> vel_sigma = -(3/2) / 2 = -3/4
EXPECTED = {"pos_var": -2.0, "vel_var": -9 / 8, "drift": -0.5, "mse": -13 / 6,
            "pos_sigma": -(math.sqrt(2) + math.sqrt(2 / 3)) / 2, "vel_sigma": -0.75}

# Jaw (1 dim): the truth is still, the prediction is still one unit away.
JAW_TRUE, JAW_PRED = [[0.0], [0.0], [0.0]], [[1.0], [1.0], [1.0]]
JAW_EXPECTED = {"pos_var": 0.0, "vel_var": 0.0, "drift": -1.0, "mse": -1.0, "pos_sigma": 0.0, "vel_sigma": 0.0}
# Head rotation (2 dims): the truth is still, the prediction flips between +-1.
# var_t = 1 - 1/9 = 8/9 per dim (std 2 sqrt(2) / 3); velocities +-2: var 4 (std 2); means (1/3, -1/3);
# every square 1.
ROT_TRUE, ROT_PRED = [[0.0, 0.0]] * 3, [[1.0, -1.0], [-1.0, 1.0], [1.0, -1.0]]
ROT_EXPECTED = {"pos_var": -8 / 9, "vel_var": -4.0, "drift": -1 / 3, "mse": -1.0,
                "pos_sigma": -2 * math.sqrt(2) / 3, "vel_sigma": -2.0}

SLICES = {"expression": slice(0, 2), "jaw": slice(2, 3), "global_rotation": slice(3, 5)}
ORDER = ("pos_sigma", "vel_sigma", "pos_var", "vel_var", "drift", "mse")
# The per-term weights of the columns before GDPO-Listener's per-group rewards.
PER_TERM = {"expression": RewardWeights(pos_var=1.0, vel_var=1.0, drift=0.5, mse=1.0),
            "jaw": RewardWeights(pos_var=1.0, vel_var=1.0, drift=0.5, mse=1.0),
            "global_rotation": RewardWeights(pos_var=0.5, vel_var=0.5, drift=0.5, mse=0.5)}


def window(*parts: list) -> torch.Tensor:
    """(1, frames, channels) float64 from per-group (frames, dims) lists, concatenated along channels."""
    return torch.cat([torch.tensor(p, dtype=torch.float64) for p in parts], dim=1)[None]


@pytest.mark.parametrize("name", ORDER)
def test_each_reward_equals_the_hand_computed_value(name):
    pred, true = window(PRED), window(TRUE)
    got = REWARDS[name](pred, true)
    assert got.shape == (1,)
    assert got.item() == pytest.approx(EXPECTED[name], abs=1e-12)
    assert REWARDS[name](true, true).item() == pytest.approx(0.0, abs=1e-12)  # the truth itself: the maximum


def test_registry_names_the_six_functions():
    assert REWARDS == {"pos_sigma": pos_sigma, "vel_sigma": vel_sigma, "pos_var": pos_var, "vel_var": vel_var,
                       "drift": drift, "mse": mse}


def test_rewards_are_per_window():
    """A batch of two windows: each row is its own window's reward."""
    pred = torch.cat([window(PRED), window(TRUE)])
    true = torch.cat([window(TRUE), window(TRUE)])
    for name in ORDER:
        got = REWARDS[name](pred, true)
        assert got.tolist() == pytest.approx([EXPECTED[name], 0.0], abs=1e-12)


def test_the_default_scores_gdpo_listeners_four_penalties_on_every_group_per_group():
    config = RLConfig()
    assert tuple(config.rewards) == DEFAULT_GROUPS and config.reward_columns == "per_group"
    assert config.advantage == "gdpo_mean" and config.group_weights == {}
    assert all(w == RewardWeights(pos_sigma=1.0, vel_sigma=1.0, drift=1.0, mse=1.0) for w in config.rewards.values())


def test_per_group_columns_are_each_groups_weighted_sum_with_its_lambda():
    pred = window(PRED, JAW_PRED, ROT_PRED)
    true = window(TRUE, JAW_TRUE, ROT_TRUE)
    rl = RLConfig(rewards={"expression": RewardWeights(pos_sigma=1.0, vel_sigma=0.5, drift=2.0, mse=1.0),
                           "jaw": RewardWeights(drift=1.0, mse=1.0),
                           "global_rotation": RewardWeights(pos_sigma=1.0, vel_sigma=1.0)},
                  group_weights={"expression": 2.0})
    rewards, column_weights, names = reward_columns(pred, true, SLICES, rl)
    assert names == ["expression", "jaw", "global_rotation"] and column_weights.tolist() == [2.0, 1.0, 1.0]
    expression = -(math.sqrt(2) + math.sqrt(2 / 3)) / 2 + 0.5 * -0.75 + 2 * -0.5 + -13 / 6
    jaw = -1.0 - 1.0
    rotation = -2 * math.sqrt(2) / 3 - 2.0
    assert rewards[0].tolist() == pytest.approx([expression, jaw, rotation], abs=1e-12)


def test_per_term_columns_and_sum():
    pred = window(PRED, JAW_PRED, ROT_PRED)
    true = window(TRUE, JAW_TRUE, ROT_TRUE)
    rewards, column_weights, names = reward_columns(pred, true, SLICES, RLConfig(rewards=PER_TERM,
                                                                                 reward_columns="per_term"))
    terms = ("pos_var", "vel_var", "drift", "mse")
    assert names == [f"{g}.{r}" for g in ("expression", "jaw", "global_rotation") for r in terms]
    expected = [EXPECTED[r] for r in terms] + [JAW_EXPECTED[r] for r in terms] + [ROT_EXPECTED[r] for r in terms]
    assert rewards.shape == (1, 12)
    assert rewards[0].tolist() == pytest.approx(expected, abs=1e-12)
    assert column_weights.tolist() == [1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 0.5, 1.0, 0.5, 0.5, 0.5, 0.5]
    total = (rewards * column_weights).sum(-1)
    by_hand = -(2 + 9 / 8 + 0.5 * 0.5 + 13 / 6) - (0.5 * 1 + 1) - 0.5 * (8 / 9 + 4 + 1 / 3 + 1)
    assert total.item() == pytest.approx(by_hand, abs=1e-12)
    assert by_hand == pytest.approx(-10.152777777777779, abs=1e-12)


@pytest.mark.parametrize("columns", ["per_group", "per_term"])
def test_zero_weights_drop_their_column_and_bad_configs_are_named(columns):
    pred, true = window(PRED, JAW_PRED, ROT_PRED), window(TRUE, JAW_TRUE, ROT_TRUE)
    rl = RLConfig(rewards={"jaw": RewardWeights(drift=2.0), "expression": RewardWeights()}, reward_columns=columns)
    rewards, column_weights, names = reward_columns(pred, true, SLICES, rl)
    assert names == (["jaw"] if columns == "per_group" else ["jaw.drift"])
    assert column_weights.tolist() == ([1.0] if columns == "per_group" else [2.0])
    assert rewards.tolist() == ([[-2.0]] if columns == "per_group" else [[-1.0]])  # the weight inside R_i, or beside
    with pytest.raises(ValueError, match="'neck' is not among the motion groups"):
        reward_columns(pred, true, SLICES, RLConfig(rewards={"neck": RewardWeights(mse=1.0)}, reward_columns=columns))
    with pytest.raises(ValueError, match="every reward weight is zero"):
        reward_columns(pred, true, SLICES, RLConfig(rewards={"jaw": RewardWeights()}, reward_columns=columns))
    with pytest.raises(ValueError, match="every reward weight is zero"):
        reward_columns(pred, true, SLICES, RLConfig(rewards={"jaw": RewardWeights(mse=1.0)}, group_weights={"jaw": 0}))
    with pytest.raises(ValueError, match=r"group_weights names \['neck'\]"):
        RLConfig(rewards={"jaw": RewardWeights(mse=1.0)}, group_weights={"neck": 1.0})


def test_a_prediction_closer_to_the_truth_earns_more():
    """pred(a) = truth + a * error: for a = 0.1 < 0.5 < 1 every reward column and the weighted sum
    fall strictly, and the truth itself earns 0 everywhere."""
    generator = torch.Generator().manual_seed(0)
    true = torch.randn(4, 24, 5, generator=generator, dtype=torch.float64)
    error = torch.randn(4, 24, 5, generator=generator, dtype=torch.float64) + 0.5
    rl = RLConfig(rewards={group: RewardWeights(**{name: 1.0 for name in ORDER}) for group in SLICES},
                  reward_columns="per_term")
    totals, columns = [], []
    for scale in (0.0, 0.1, 0.5, 1.0):
        rewards, column_weights, _ = reward_columns(true + scale * error, true, SLICES, rl)
        columns.append(rewards)
        totals.append((rewards * column_weights).sum(-1))
    assert torch.equal(columns[0], torch.zeros_like(columns[0]))
    for closer, farther in zip(columns[1:], columns[2:]):
        assert bool((closer > farther).all())
    for closer, farther in zip(totals, totals[1:]):
        assert bool((closer > farther).all())


def test_masked_rewards_use_the_masked_frames_and_the_velocities_between_them_only():
    # 5 frames x 1 dim, frame 2 masked out (its values would dominate every statistic).
    pred = torch.tensor([0.0, 2.0, 100.0, 4.0, 0.0], dtype=torch.float64)[None, :, None]
    true = torch.tensor([1.0, 1.0, -50.0, 1.0, 1.0], dtype=torch.float64)[None, :, None]
    frames = torch.tensor([[True, True, False, True, True]])
    # pred on the masked frames 0, 2, 4, 0: mean 1.5, var (2.25 + 0.25 + 6.25 + 2.25) / 4 = 2.75; truth 1,1,1,1: var 0
    # velocities between two masked frames: 0->1 and 3->4: pred 2 and -4 (mean -1, var 9), truth 0 and 0 (var 0)
    # squared errors 1, 1, 9, 1: mean 3
    expected = {"pos_var": -2.75, "vel_var": -9.0, "drift": -0.5, "mse": -3.0,
                "pos_sigma": -math.sqrt(2.75), "vel_sigma": -3.0}
    for name, value in expected.items():
        assert REWARDS[name](pred, true, frames).item() == pytest.approx(value, abs=1e-12), name
    nothing = torch.zeros_like(frames)
    assert all(REWARDS[name](pred, true, nothing).item() == 0.0 for name in ORDER)  # no frame: 0
    everything = torch.ones_like(frames)
    for name in ORDER:
        torch.testing.assert_close(REWARDS[name](pred, true, everything), REWARDS[name](pred, true))
