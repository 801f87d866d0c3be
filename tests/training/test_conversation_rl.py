"""Conversations end to end on CPU: SFT (VAE + flow with partner streams) and RL on conversation shards (the
scripted ones and the pipeline's conversation mode's), RL restricted to listener latents by rl.listener_only,
evaluation split by role."""

from __future__ import annotations

import io
import json
import math
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from training_fixtures import (  # noqa: F401
    conversation_flow_run_fixture,
    conversation_shards_fixture,
    flame_shards_fixture,
    flow_run_fixture,
    pipeline_conversation_shards_fixture,
    tiny_config,
    REPO_ROOT,
    tiny_encoders_fixture,
    vae_run_fixture,
)

from pipelines.schema.conversation import ROLE_MEMBER, Role, actor_listens
from training.checkpoint import checkpoint_dirs, load_weights
from training.config import load_run_config
from training.data import batches, finite_clips, shard_urls, train_pipeline
from training.evaluate import evaluate_flow, evaluate_run
from training.flow import MOSTLY, latent_share
from training.rl import RLRun, log_probs, rl_loss, run_rl, step_means
from training.sft import run_sft
from training.trainer_base import LOG_FILE


def _rl_config(tmp_path, shards, flow_dir, name="rl", steps=2, **rl):
    return load_run_config(None, **tiny_config(
        "rl", tmp_path / name, shards, steps=steps, save_every=steps, data={"batch_size": 2},
        optim={"lr": 1e-3, "weight_decay": 0.0, "grad_clip": None},
        rl={"init_run": str(flow_dir), "group_size": 4, "window_start": 1, **rl}))


def test_sft_of_the_vae_and_the_flow_model_ran_on_the_conversation_shards(conversation_flow_run, conversation_shards):
    flow_config = load_run_config(conversation_flow_run / "config.yaml")
    assert flow_config.data.shards == str(conversation_shards) and flow_config.flow.partner_streams
    vae_run = Path(flow_config.flow.vae_run)
    assert load_run_config(vae_run / "config.yaml").data.shards == str(conversation_shards)
    for run, steps in ((vae_run, 20), (conversation_flow_run, 4)):
        rows = [json.loads(line) for line in (run / LOG_FILE).read_text().splitlines()]
        assert [r["step"] for r in rows] == list(range(1, steps + 1)) and all(math.isfinite(r["loss"]) for r in rows)
        assert [p.name for p in checkpoint_dirs(run)] == [f"step-{steps:06d}"]


def _per_latent_gradient(tmp_path, shards, flow_dir, listener_only: bool, term: str):
    """|d loss / d (noisy input of each latent)| summed over the SDE steps and channels, (N, L), for
    the ``policy`` term (advantages as computed, policy = reference) or the ``kl`` term alone
    (advantages zero, policy moved away from the reference); and the listener latents (N, L)."""
    config = _rl_config(tmp_path, shards, flow_dir, name=f"{term}-{listener_only}", listener_only=listener_only)
    run = RLRun(config)
    batch = next(run.stream(0))
    rollouts, advantages, _, _ = run.rollout(batch)
    if term == "kl":
        advantages = torch.zeros_like(advantages)
        with torch.no_grad():
            for parameter in run.trainer.unwrapped.parameters():
                parameter.add_(0.05 * torch.randn_like(parameter))
    rollouts.inputs = rollouts.inputs.clone().requires_grad_(True)
    with torch.enable_grad():
        old = log_probs(step_means(run.policy_velocity, rollouts, config), rollouts).detach()
        losses = rl_loss(run.policy_velocity, run.reference_velocity, rollouts, old, advantages, config, slice(None))
        gradient = torch.autograd.grad(losses["loss"], rollouts.inputs)[0]
    roles = batch["role"].repeat_interleave(config.rl.group_size, 0)
    listener = latent_share(actor_listens(roles), 8) > MOSTLY
    return gradient.abs().sum((0, -1)), listener, losses


@pytest.mark.parametrize("term", ["policy", "kl"])
def test_a_gradient_flows_from_listener_latents_only_when_listener_only_is_on(tmp_path, conversation_shards,
                                                                             conversation_flow_run, term):
    gradient, listener, losses = _per_latent_gradient(tmp_path, conversation_shards, conversation_flow_run, True, term)
    assert listener.any() and (~listener).any()  # the batch mixes listening and other latents
    assert (gradient[~listener] == 0).all()
    assert (gradient[listener] > 0).all()
    if term == "kl":
        assert losses["kl"] > 0
    everywhere, listener_off, _ = _per_latent_gradient(tmp_path, conversation_shards, conversation_flow_run, False,
                                                       term)
    assert torch.equal(listener_off, listener) and (everywhere > 0).all()  # off: every latent counts


@pytest.mark.parametrize("name", ["rl.yaml", "rl_cps.yaml"])
def test_the_shipped_rl_configs_run_a_step_on_conversation_shards(tmp_path, conversation_shards,
                                                                  conversation_flow_run, name):
    """training/configs' RL settings as shipped (sampler, steps, rewards on all six groups, advantages, optimiser),
    on the tiny conversation run: only the paths, the batch and the precision (bf16 is tested apart) differ."""
    config = load_run_config(REPO_ROOT / "training" / "configs" / name, run_dir=str(tmp_path / "rl"), cpu=True,
                             data={"shards": str(conversation_shards), "batch_size": 2},
                             optim={"mixed_precision": "no"}, rl={"init_run": str(conversation_flow_run)})
    run = RLRun(config)
    out = run.step(next(run.stream(0)))
    steps = config.rl.sample_steps or config.flow.sample_steps
    assert len(out["rollouts"].levels) == (steps if config.rl.window is None else config.rl.window)
    assert out["rewards"].shape == (8, 6) and out["first_ratio_dev"] == 0.0 and len(out["inner"]) == 2
    assert out["listener_latents"] > 0 and math.isfinite(out["loss"]) and out["advantages"].abs().sum() > 0


def test_listener_only_on_speaking_only_shards_is_an_error_naming_the_switch(tmp_path, flame_shards, flow_run):
    run = RLRun(_rl_config(tmp_path, flame_shards, flow_run))
    with pytest.raises(ValueError, match=r"rl\.listener_only is on .* no listening frame.*rl\.listener_only: false"):
        run.step(next(run.stream(0)))


def test_rl_on_conversation_shards_trains_every_weight_and_counts_listener_latents(tmp_path, conversation_shards,
                                                                                   conversation_flow_run):
    config = _rl_config(tmp_path, conversation_shards, conversation_flow_run)
    run = RLRun(config)
    policy = run.trainer.unwrapped
    before = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    out = run.step(next(run.stream(0)))
    assert out["first_ratio_dev"] == 0.0 and out["listener_latents"] > 0
    assert math.isfinite(out["loss"]) and out["advantages"].abs().sum() > 0
    unchanged = [n for n, p in policy.named_parameters() if p.requires_grad and torch.equal(p, before[n])]
    assert before and unchanged == []  # the partner projections train too
    rows = run_rl(_rl_config(tmp_path, conversation_shards, conversation_flow_run, name="rl-run"))
    assert [r["listener_latents"] > 0 and math.isfinite(r["loss"]) for r in rows] == [True, True]
    assert [p.name for p in checkpoint_dirs(tmp_path / "rl-run")] == ["step-000002"]


def test_the_trained_flow_model_uses_the_partner_and_is_evaluated_by_role(conversation_shards,
                                                                          conversation_flow_run):
    from training.flow_parts import build_flow, flow_inputs, flow_parts

    config = load_run_config(conversation_flow_run / "config.yaml", data={"eval_shards": str(conversation_shards)},
                             flow={"guidance_listen": 1.0}, metrics={"expressive_share": 0.5})
    parts = flow_parts(config, torch.device("cpu"))
    model = build_flow(config, parts)
    load_weights(conversation_flow_run, model)
    model.eval()
    batch = next(batches(train_pipeline(config.data, seed=0), config.data))
    inputs = flow_inputs(parts, batch, torch.device("cpu"))
    cond, latents = inputs["conditions"], model.standardise(inputs["latents"])
    tau = torch.full(latents.shape[:2], 0.5)
    keep = torch.zeros(len(latents), dtype=torch.bool)
    with torch.no_grad():
        with_partner = model.velocity(latents, tau, latents, cond, keep, keep, keep)
        ablated = model.velocity(latents, tau, latents, cond, keep, keep, ~keep)
    assert cond.partner_heard.all() and (with_partner - ablated).abs().amax(dim=(1, 2)).min() > 0

    out = evaluate_flow(model, parts, config)
    assert out["windows"] == 3
    assert out["speaking"]["frames"] > 0 and out["listening"]["frames"] > 0
    for role in ("speaking", "listening"):
        assert all(out[role][f"dd_{r}"] >= 0 for r in ("upper_face", "jaw", "head_pose")), out[role]
    assert "lve" not in out["listening"]
    assert out["expressive"]["windows"] == 2 and out["expressive"]["share"] == 0.5
    assert out["expressive"]["speaking"]["frames"] > 0


def test_sft_rl_and_evaluation_run_on_conversation_shards_made_by_the_pipeline(tmp_path, pipeline_conversation_shards,
                                                                               tiny_encoders):
    """The pipeline's conversation mode (two speakers taking turns, one recording each) feeds every trainer."""
    shards = pipeline_conversation_shards
    config = load_run_config(None, **tiny_config("vae", tmp_path / "vae", shards, steps=10, save_every=10))
    clips = list(finite_clips(str(shards), config.data, per_node=False))
    stored = {}
    for url in shard_urls(str(shards)):
        with tarfile.open(url) as tar:
            stored.update({m.name.split(".", 1)[0]: np.load(io.BytesIO(tar.extractfile(m).read()))
                           for m in tar.getmembers() if m.name.endswith("." + ROLE_MEMBER)})
    assert len(clips) == 2 and {c.key for c in clips} == set(stored)
    for clip in clips:
        assert np.array_equal(clip.role, stored[clip.key]) and clip.partner_audio is not None
        assert int(clip.partner_tracked.sum()) == clip.record.conversation.partner_flame_frames > 0
        assert {int(Role.SPEAKING), int(Role.LISTENING)} <= set(clip.role.tolist())
    run_sft(config)
    flow_dir = tmp_path / "flow"
    flow = run_sft(load_run_config(None, **tiny_config("flow", flow_dir, shards, tiny_encoders, tmp_path / "vae",
                                                       steps=2, save_every=2)))
    assert len(flow) == 2 and all(math.isfinite(r["loss"]) for r in flow)
    rows = run_rl(_rl_config(tmp_path, shards, flow_dir, name="rl-pipeline", steps=1))
    assert rows[0]["listener_latents"] > 0 and math.isfinite(rows[0]["loss"])
    out = evaluate_run(flow_dir, str(shards), progress=False)
    tiles = sum(len(clip.motion) // config.data.window_frames for clip in clips)  # eval_pipeline's windows
    assert out["windows"] == tiles >= 2 and out["speaking"]["frames"] > 0 and out["listening"]["frames"] > 0
