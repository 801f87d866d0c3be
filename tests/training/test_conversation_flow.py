"""The flow model's partner streams: masked where absent, effective where present; CFG weights per role."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipelines.schema.conversation import Role
from training.config import FlowConfig
from training.flow import Conditions, MotionFlow, attention_mask, latent_share, role_guidance

L, D, DA, DT, RATE = 5, 4, 6, 3, 4
REPO = Path(__file__).resolve().parents[2]
# The last commit of training/flow.py before the partner streams (issue 16).
SPEAKING_ONLY_FLOW_COMMIT = "f5a94636753e9e75648e4de8f60cc7228f6c1369"


def _model(**config) -> MotionFlow:
    torch.manual_seed(0)
    return MotionFlow(D, DA, DT, L, FlowConfig(width=16, layers=2, heads=2, **config)).eval()


def _inputs(batch: int = 3, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    noisy, tau, history = torch.randn(batch, L, D, generator=gen), torch.rand(batch, L, generator=gen), \
        torch.randn(batch, L, D, generator=gen)
    cond = Conditions(torch.randn(batch, L, DA, generator=gen), torch.randn(batch, DT, generator=gen),
                      torch.randn(batch, L, DA, generator=gen), torch.randn(batch, L, D, generator=gen),
                      torch.ones(batch, dtype=torch.bool), torch.ones(batch, L, dtype=torch.bool))
    return noisy, tau, history, cond


def _keep(batch: int = 3) -> torch.Tensor:
    return torch.zeros(batch, dtype=torch.bool)


def test_a_sample_without_partner_gives_the_same_velocity_whatever_its_partner_tensors_hold():
    model = _model()
    noisy, tau, history, cond = _inputs()
    cond.partner_heard = torch.tensor([False, True, True])  # row 0 has no partner
    cond.partner_seen[2, 1:3] = False  # row 2: the partner's face is untracked on latents 1 and 2
    keep = _keep()
    base = model.velocity(noisy, tau, history, cond, keep, keep)
    garbage = Conditions(cond.audio, cond.text, cond.partner_audio.clone(), cond.partner_motion.clone(),
                         cond.partner_heard, cond.partner_seen)
    garbage.partner_audio[0] = float("nan")
    garbage.partner_motion[0] = 1e30
    garbage.partner_motion[2, 1:3] = float("inf")
    other = model.velocity(noisy, tau, history, garbage, keep, keep)
    assert torch.equal(other, base)  # bit for bit: the masked tokens reach nothing
    # Row 0 is also what a model without any partner tensors computes.
    absent = model.velocity(noisy[:1], tau[:1], history[:1], Conditions(cond.audio[:1], cond.text[:1]),
                            keep[:1], keep[:1])
    torch.testing.assert_close(absent, base[:1], rtol=1e-6, atol=1e-6)


def test_ablating_the_partner_streams_changes_the_prediction():
    model = _model()
    noisy, tau, history, cond = _inputs()
    keep = _keep()
    with_partner = model.velocity(noisy, tau, history, cond, keep, keep, keep)
    ablated = model.velocity(noisy, tau, history, cond, keep, keep, ~keep)  # drop_partner: as if none
    assert (with_partner - ablated).abs().amax(dim=(1, 2)).min() > 1e-4  # every row changes
    for field in ("partner_audio", "partner_motion"):
        changed = Conditions(**{**cond.__dict__, field: getattr(cond, field) + 1.0})
        assert not torch.allclose(model.velocity(noisy, tau, history, changed, keep, keep), with_partner), field


def test_partner_tokens_are_prefix_tokens_and_history_stays_causal():
    model = _model()
    noisy, tau, history, cond = _inputs()
    keep = _keep()
    base = model.velocity(noisy, tau, history, cond, keep, keep)
    later = Conditions(**{**cond.__dict__, "partner_motion": cond.partner_motion.clone()})
    later.partner_motion[:, -1] += 3.0  # the partner's last latent: the prefix is seen whole by every position
    assert not torch.allclose(model.velocity(noisy, tau, history, later, keep, keep)[:, 0], base[:, 0])
    changed_history = history.clone()
    changed_history[:, 2:] += 5.0
    torch.testing.assert_close(model.velocity(noisy, tau, changed_history, cond, keep, keep)[:, 2], base[:, 2],
                               rtol=1e-5, atol=1e-5)
    assert attention_mask(L, partner=True).shape == (1 + 5 * L, 1 + 5 * L)


def test_without_partner_streams_the_model_has_the_speaking_only_layout_and_ignores_partner_data():
    model = _model(partner_streams=False)
    assert model.mask.shape == (1 + 3 * L, 1 + 3 * L)
    assert not any(name.startswith("partner_") for name, _ in model.named_parameters())
    noisy, tau, history, cond = _inputs()
    keep = _keep()
    plain = Conditions(cond.audio, cond.text)
    assert torch.equal(model.velocity(noisy, tau, history, cond, keep, keep),
                       model.velocity(noisy, tau, history, plain, keep, keep))


def test_guidance_weight_per_latent_is_the_mean_of_the_frames_role_weights():
    s, l, b, q = Role.SPEAKING, Role.LISTENING, Role.BOTH, Role.SILENT
    roles = torch.tensor([[s, s, s, s, s, l, l, l, b, q, l, s]], dtype=torch.int8)  # 3 latents of 4 frames
    # latent 0: 4 speaking -> 2.0; latent 1: 1 speaking + 3 listening -> (2 + 3 * 0.5) / 4 = 0.875;
    # latent 2: both (speaks) + silent + listening + speaking -> (2 + 0.5 + 0.5 + 2) / 4 = 1.25
    torch.testing.assert_close(role_guidance(roles, RATE, 2.0, 0.5), torch.tensor([[2.0, 0.875, 1.25]]))
    torch.testing.assert_close(latent_share(roles == l, RATE), torch.tensor([[0.0, 0.75, 0.25]]))


def test_guided_velocity_applies_one_weight_per_latent():
    model = _model()
    noisy, tau, history, cond = _inputs()
    keep = _keep()
    conditional = model.velocity(noisy, tau, history, cond, keep, keep, keep)
    unconditional = model.velocity(noisy, tau, history, cond, ~keep, ~keep, ~keep)
    weights = torch.tensor([[2.0, 1.0, 0.5, 1.5, 3.0]]).expand(3, L)
    guided = model.guided_velocity(noisy, tau, history, cond, weights)
    torch.testing.assert_close(guided, unconditional + weights[..., None] * (conditional - unconditional))
    torch.testing.assert_close(guided[:, 1], conditional[:, 1])  # weight 1: the conditional velocity
    # Speaking-only roles give the single scale everywhere: the guidance of before.
    speaking = torch.full((3, L * RATE), int(Role.SPEAKING), dtype=torch.int8)
    by_role = role_guidance(speaking, RATE, 2.0, 0.5)
    torch.testing.assert_close(model.guided_velocity(noisy, tau, history, cond, by_role),
                               model.guided_velocity(noisy, tau, history, cond, 2.0))


@pytest.mark.parametrize("partner_drop", [0.0, 1.0])
def test_partner_dropout_in_training_is_masking_the_partner(partner_drop):
    model = _model(partner_drop=partner_drop, audio_drop=0.0, text_drop=0.0)
    _, _, latents, cond = _inputs()
    seeds = torch.arange(3)
    loss = model.loss(latents, cond, seeds)["loss"]
    without = model.loss(latents, Conditions(cond.audio, cond.text), seeds)["loss"]
    if partner_drop == 1.0:
        torch.testing.assert_close(loss, without)
    else:
        assert not torch.allclose(loss, without)


def test_a_model_without_partner_streams_is_the_speaking_only_model_of_before():
    """flow.partner_streams false: the parameters of training/flow.py before the partner streams, initialised
    alike from one seed, computing the same velocities (its checkpoints load and mean what they meant)."""
    shown = subprocess.run(["git", "-C", str(REPO), "show", f"{SPEAKING_ONLY_FLOW_COMMIT}:training/flow.py"],
                           capture_output=True, text=True, check=False)
    if shown.returncode:
        pytest.skip(f"commit {SPEAKING_ONLY_FLOW_COMMIT[:8]} is not in this clone's history: {shown.stderr.strip()}")
    spec = importlib.util.spec_from_loader("flow_before_partner", loader=None)
    old_module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = old_module
    exec(compile(shown.stdout, "flow_before_partner.py", "exec"), old_module.__dict__)
    torch.manual_seed(0)
    old = old_module.MotionFlow(D, DA, DT, L, FlowConfig(width=16, layers=2, heads=2)).eval()
    new = _model(partner_streams=False)
    assert {k: v.shape for k, v in old.state_dict().items()} == {k: v.shape for k, v in new.state_dict().items()}
    assert all(torch.equal(value, new.state_dict()[name]) for name, value in old.state_dict().items())
    with_partner = _model()  # the shared parameters are initialised alike too
    assert all(torch.equal(value, with_partner.state_dict()[name]) for name, value in old.state_dict().items())
    noisy, tau, history, cond = _inputs()
    keep = _keep()
    torch.testing.assert_close(new.velocity(noisy, tau, history, Conditions(cond.audio, cond.text), keep, keep),
                               old.velocity(noisy, tau, history, cond.audio, cond.text, keep, keep), rtol=0, atol=0)
