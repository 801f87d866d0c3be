"""RL post-training of the flow model with group-relative advantages (Flow-GRPO / GDPO style).

``python -m training train rl --config training/configs/rl.yaml [--dry-run]`` (or
``python -m training.rl ...``). Three copies of the flow model take part: the *policy* (trained),
the *behaviour* policy (frozen; a copy of the policy made every ``rl.behaviour_sync_every`` RL
steps, FlowPortrait's old policy) and the *reference* (frozen at the SFT weights, for the KL).
Each step:

1. draw B conditions (windows) and repeat each G times (``rl.group_size``);
2. the behaviour policy rolls out without gradients, ``rl.sample_steps`` denoising steps per
   latent (none: ``flow.sample_steps``, the inference count): every latent is denoised with the
   ODE except inside the SDE window (``rl.window`` steps from ``window_start``, random per
   batch when unset; none: every step), where ``training/sde.py``'s ``rl.sde`` sampler draws
   with noise level ``rl.eta``; inputs, outputs and log-probabilities of those steps are kept;
3. decode to normalised motion, score with the configured rewards against the ground truth,
   turn rewards into advantages (``rl.advantage``);
4. replay the cached steps: old log-probabilities under the behaviour policy, then
   ``rl.inner_epochs`` optimizer updates of the clipped importance-ratio objective (ratio =
   policy / behaviour) plus ``kl_beta`` times the KL to the reference (same std, so
   |mu - mu_ref|^2 / (2 std^2)). On a step that syncs the behaviour policy the first update's
   ratio is exactly 1; later updates, and every update of a step between syncs, see a ratio
   that has moved, which the clip bounds.

One precision and kernel path (:class:`Velocity`): rollouts, the behaviour's and the policy's
log-probabilities and the reference run the same forward, under the accelerator's autocast
(``optim.mixed_precision``) and off PyTorch's transformer inference fast path, with velocities
and the SDE arithmetic in float32. Under bf16 the first KL is then 0 and the rollout's
log-probabilities are those the replay computes (up to the bf16 rounding of the two forwards).

``rl.cfg`` off (the default, as FlowPortrait): rollouts and replays use the conditional velocity
only and the null embeddings are frozen. On: guidance per latent from the roles
(``flow.guidance_scale`` on frames where the actor speaks, ``flow.guidance_listen`` elsewhere;
see training/flow.py).

Rollout noise is drawn per rank: under DDP each process samples its own noise (seeded by the
run seed, the rank and the step), so the ranks' rollouts are different samples.

``rl.listener_only`` (GDPO-Listener's setting, the default): the rewards are computed on the
listening frames only (masked statistics, training/rewards.py; a window without listening
frame gets reward 0 and advantage 0, and GDPO's batch normalisation leaves it out), and the
policy loss and the KL are means over the latents that are mostly listening (``flow.MOSTLY``)
only: every other latent has weight 0. A batch without any listening frame is an error (a
speaking-only dataset would train nothing); a batch with listening frames but no latent mostly
listening makes no update (the step is logged with ``listener_latents`` 0). With
``listener_only`` off every frame and latent counts, as before.

The policy starts from the newest checkpoint of the SFT flow run ``rl.init_run``; the VAE,
the encoders and the statistics are that run's.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from pipelines.schema.conversation import actor_listens
from training.advantages import ADVANTAGES
from training.checkpoint import load_weights
from training.config import DataConfig, RunConfig, load_run_config
from training.data import batches, group_slices, inherit_rates, resolve_rates, train_pipeline
from training.flow import MOSTLY, Conditions, MotionFlow, latent_share, role_guidance, tau_grid
from training.evaluate import run_evaluator
from training.flow_parts import FlowParts, build_flow, flow_inputs, flow_parts
from training.rewards import reward_columns
from training.sde import gaussian_kl, has_noise, log_prob, sde_step
from training.trainer_base import (
    Trainer,
    config_from_args,
    make_accelerator,
    parse_args,
    progress_bar,
    seed_everything,
)


@dataclass
class Rollouts:
    conditions: Conditions  # N rows
    guidance: torch.Tensor  # (N, L) CFG weight per latent
    latents: torch.Tensor  # (N, L, D) standardised, the final samples (history of every position)
    inputs: torch.Tensor  # (W, N, L, D) noisy latents entering each SDE step
    outputs: torch.Tensor  # (W, N, L, D) their stochastic successors
    logp: torch.Tensor  # (W, N, L) log-probability of each output when it was drawn
    levels: list[tuple[float, float]]  # (tau, tau_next) of each SDE step
    stds: list[float]
    # (N, L) weight of each latent in the policy loss and the KL (listener_only), scaled so that a
    # mean over all latents is the mean over the weighted ones; None: every latent counts (mean).
    latent_weights: torch.Tensor | None = None


@contextmanager
def one_kernel_path() -> Iterator[None]:
    """PyTorch's transformer inference fast path off for the block.

    ``nn.TransformerEncoderLayer.forward`` (torch/nn/modules/transformer.py, torch 2.13) runs
    ``torch._transformer_encoder_layer_fwd``, which rounds differently, whenever grad is off or no
    weight requires grad and autocast is off: the frozen behaviour policy and reference, and
    no-grad rollouts, would not compute the policy's function bit for bit.
    """
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


class Velocity:
    """The guided velocity of one model on RL's single path: the accelerator's autocast, no
    inference fast path, float32 out. ``model``: the policy as prepared (through ``forward``, so
    DDP synchronises its gradients), or a plain frozen copy."""

    def __init__(self, model: torch.nn.Module, autocast: Callable[[], AbstractContextManager]) -> None:
        self.model, self.autocast = model, autocast

    def __call__(self, noisy: torch.Tensor, taus: torch.Tensor, history: torch.Tensor, cond: Conditions,
                 scale: torch.Tensor) -> torch.Tensor:
        with self.autocast(), one_kernel_path():
            return self.model("guided_velocity", noisy, taus, history, cond, scale).float()


def rl_steps(config: RunConfig) -> int:
    """Denoising steps per latent in rollouts (GDPO-Listener: 4 in RL, 10 at inference)."""
    return config.rl.sample_steps or config.flow.sample_steps


def rollout_seed(seed: int, rank: int, step: int) -> int:
    """Seed of one rank's rollout noise at one step: each DDP rank draws its own."""
    return hash((seed, rank, step)) & 0x7FFFFFFF


def sde_window(config: RunConfig, steps: int, generator: torch.Generator) -> list[int]:
    rl = config.rl
    grid = tau_grid(steps)
    noisy = sum(has_noise(rl.sde, float(grid[k + 1])) for k in range(steps))  # CPS: not the final step
    if rl.window is None:
        return list(range(noisy))
    last_start = noisy - rl.window
    if last_start < 0:
        raise ValueError(f"SDE window of {rl.window} does not fit {steps} sampling steps ({noisy} can carry noise)")
    start = rl.window_start if rl.window_start is not None else int(
        torch.randint(0, last_start + 1, (1,), generator=generator))
    if start > last_start:
        raise ValueError(f"rl.window_start {start} is past the last possible start {last_start}")
    return list(range(start, start + rl.window))


@torch.no_grad()
def collect_rollouts(velocity: Velocity, latent_dim: int, cond: Conditions, guidance: torch.Tensor,
                     config: RunConfig, generator: torch.Generator) -> Rollouts:
    """Rollouts of N conditions (``guidance``: (N, L) CFG weights per latent) by ``velocity``'s model."""
    steps = rl_steps(config)
    grid = [float(t) for t in tau_grid(steps)]
    window = sde_window(config, steps, generator)
    audio = cond.audio
    n, length, dim = audio.shape[0], guidance.shape[1], latent_dim
    out = torch.zeros(n, length, dim, device=audio.device)
    inputs = torch.zeros(len(window), n, length, dim, device=audio.device)
    outputs, logp = torch.zeros_like(inputs), torch.zeros(len(window), n, length, device=audio.device)
    stds = [0.0] * len(window)
    for i in range(length):
        x = torch.randn(n, dim, generator=generator).to(audio.device)
        for k in range(steps):
            noisy = out.clone()
            noisy[:, i] = x
            tau = torch.full((n, length), grid[k], device=audio.device)
            v = velocity(noisy, tau, out, cond, guidance)[:, i]
            if k in window:
                w = window.index(k)
                noise = torch.randn(n, dim, generator=generator).to(audio.device)
                new, mean, stds[w] = sde_step(x, v, grid[k], grid[k + 1], config.rl.eta, config.rl.sde, noise, grid[1])
                inputs[w, :, i], outputs[w, :, i], logp[w, :, i] = x, new, log_prob(new, mean, stds[w])
                x = new
            else:
                x = x + (grid[k + 1] - grid[k]) * v
        out[:, i] = x
    return Rollouts(cond, guidance, out, inputs, outputs, logp, [(grid[k], grid[k + 1]) for k in window], stds)


def step_means(velocity: Velocity, rollouts: Rollouts, config: RunConfig,
               rows: slice = slice(None)) -> list[torch.Tensor]:
    """Mean of every cached SDE step's transition, all positions in one forward per step: (N, L, D) each."""
    grid1 = float(tau_grid(rl_steps(config))[1])
    means = []
    for w, (tau, tau_next) in enumerate(rollouts.levels):
        noisy = rollouts.inputs[w, rows]
        taus = torch.full(noisy.shape[:2], tau, device=noisy.device)
        v = velocity(noisy, taus, rollouts.latents[rows], rollouts.conditions.rows(rows), rollouts.guidance[rows])
        _, mean, _ = sde_step(noisy, v, tau, tau_next, config.rl.eta, config.rl.sde, torch.zeros_like(noisy), grid1)
        means.append(mean)
    return means


def log_probs(means: list[torch.Tensor], rollouts: Rollouts, rows: slice = slice(None)) -> torch.Tensor:
    return torch.stack([log_prob(rollouts.outputs[w, rows], mean, rollouts.stds[w]) for w, mean in enumerate(means)])


def rl_loss(policy: Velocity, reference: Velocity, rollouts: Rollouts, old_logp: torch.Tensor,
            advantages: torch.Tensor, config: RunConfig, rows: slice) -> dict[str, torch.Tensor]:
    means = step_means(policy, rollouts, config, rows)
    with torch.no_grad():
        ref_means = step_means(reference, rollouts, config, rows)
    ratio = torch.exp(log_probs(means, rollouts, rows) - old_logp[:, rows])  # (W, n, L)
    adv = advantages[rows][None, :, None]
    clip = config.rl.clip_range
    per_latent = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip))
    deviation = (ratio.detach() - 1).abs()
    if rollouts.latent_weights is None:
        policy_loss = per_latent.mean()
        kl = torch.stack([gaussian_kl(m, r, s).mean() for m, r, s in zip(means, ref_means, rollouts.stds)]).mean()
        clip_frac = (deviation > clip).float().mean()
    else:
        weights = rollouts.latent_weights[rows]
        counted = (weights > 0).expand_as(deviation)
        policy_loss = (per_latent * weights).mean()
        kl = torch.stack([(gaussian_kl(m, r, s) * weights).mean()
                          for m, r, s in zip(means, ref_means, rollouts.stds)]).mean()
        deviation = deviation * counted  # the latents that do not count deviate by nothing
        clip_frac = (deviation > clip).float().sum() / counted.sum().clamp(min=1)
    return {"loss": policy_loss + config.rl.kl_beta * kl, "policy_loss": policy_loss.detach(), "kl": kl.detach(),
            "ratio_dev": deviation.max(), "clip_frac": clip_frac}


def listener_weights(roles: torch.Tensor, rate: int) -> torch.Tensor:
    """(N, L) latent weights of ``listener_only``: 0 unless the latent is mostly listening, the
    others equal and scaled so that their mean over all N x L latents is 1 (a plain mean of
    weighted terms is then the mean over the listening latents)."""
    mostly = (latent_share(actor_listens(roles), rate) > MOSTLY).float()
    return mostly * (mostly.numel() / mostly.sum().clamp(min=1))


def decode_motion(parts: FlowParts, model: MotionFlow, latents: torch.Tensor) -> torch.Tensor:
    """Standardised latents -> normalised motion (N, frames, channels), the space rewards are scored in."""
    with torch.no_grad():
        return parts.vae.decode(model.unstandardise(latents))


def rl_parts(config: RunConfig, device: torch.device) -> tuple[RunConfig, FlowParts, MotionFlow, MotionFlow]:
    """(SFT config, parts, policy, frozen reference) from the SFT flow run ``rl.init_run``."""
    if not config.rl.init_run:
        raise ValueError("rl.init_run is not set: point it at an SFT flow run folder")
    init = load_run_config(Path(config.rl.init_run) / "config.yaml")
    parts = flow_parts(init, device)
    policy = build_flow(init, parts)
    load_weights(Path(config.rl.init_run), policy)
    if not config.rl.cfg or (config.flow.guidance_scale == 1.0 and config.flow.listen_scale == 1.0):
        # Without guidance the null embeddings never enter a rollout: nothing to train there.
        policy.null_audio.requires_grad_(False)
        policy.null_text.requires_grad_(False)
    reference = copy.deepcopy(policy).to(device).eval().requires_grad_(False)
    parts.stats.save(Path(config.run_dir))
    return init, parts, policy.to(device), reference


class RLRun:
    """One RL run: the trainer around the policy, the behaviour policy and the reference, plus
    everything a step needs."""

    def __init__(self, config: RunConfig) -> None:
        accelerator = make_accelerator(config)
        seed_everything(config, accelerator)
        Path(config.run_dir).mkdir(parents=True, exist_ok=True)
        self.init, self.parts, policy, self.reference = rl_parts(config, accelerator.device)
        self.behaviour = copy.deepcopy(self.reference)
        self.config = config.model_copy(update={"data": self._data(config)})
        self.trainer = Trainer(self.config, policy, accelerator)
        # Saved with every checkpoint: between syncs it is not the policy, and a resumed run needs it.
        accelerator.register_for_checkpointing(self.behaviour)
        self.slices = group_slices(self.parts.stats.groups, self.parts.stats.dims)
        self.policy_velocity = Velocity(self.trainer.model, accelerator.autocast)
        self.behaviour_velocity = Velocity(self.behaviour, accelerator.autocast)
        self.reference_velocity = Velocity(self.reference, accelerator.autocast)

    def _data(self, config: RunConfig) -> DataConfig:
        """The policy's window length and the rates it was trained at: RL windows must match both."""
        data = config.data.model_copy(update={"window_frames": self.init.data.window_frames})
        return resolve_rates(inherit_rates(data, self.init.data, f"the SFT run {config.rl.init_run}"))

    def stream(self, skip: int):
        data = self.config.data
        return batches(train_pipeline(data, self.config.seed + self.trainer.accelerator.process_index), data, skip)

    def guidance(self, roles: torch.Tensor) -> torch.Tensor:
        """(N, L) CFG weights of rollouts and replays: from the roles with ``rl.cfg``, else 1 (no guidance)."""
        config, rate = self.config, self.parts.vae_config.vae.latent_rate
        if config.rl.cfg:
            return role_guidance(roles, rate, config.flow.guidance_scale, config.flow.listen_scale)
        return torch.ones(roles.shape[0], roles.shape[1] // rate, device=roles.device)

    def sync_behaviour(self) -> None:
        self.behaviour.load_state_dict(self.trainer.unwrapped.state_dict())

    def _micro_losses(self, rollouts: Rollouts, old_logp: torch.Tensor, advantages: torch.Tensor, chunk: int):
        """A callable giving the loss of the next ``chunk`` rollouts at each call (one per micro-batch)."""
        starts = iter(range(0, advantages.shape[0], chunk))

        def micro() -> dict[str, torch.Tensor]:
            start = next(starts)
            return rl_loss(self.policy_velocity, self.reference_velocity, rollouts, old_logp, advantages, self.config,
                           slice(start, start + chunk))
        return micro

    def rollout(self, batch: dict) -> tuple[Rollouts, torch.Tensor, torch.Tensor, dict]:
        """Steps 1-3 for one batch, sampled by the behaviour policy: (rollouts with their latent
        weights, advantages (N,), rewards (N, K), numbers for the log)."""
        config, trainer, device = self.config, self.trainer, self.trainer.device
        group, rate = config.rl.group_size, self.parts.vae_config.vae.latent_rate
        inputs = flow_inputs(self.parts, batch, device, self.behaviour.partner)
        roles = inputs["roles"].repeat_interleave(group, 0)
        listening = actor_listens(roles) if config.rl.listener_only else None
        if listening is not None and not listening.any():
            raise ValueError(f"rl.listener_only is on (RL on listener frames only, GDPO-Listener's setting) but this "
                             f"batch ({', '.join(batch['key'])}) has no listening frame: speaking-only shards have "
                             "none. Set rl.listener_only: false to train on every frame.")
        cond = inputs["conditions"].repeat(group)
        guidance = self.guidance(roles)
        generator = torch.Generator().manual_seed(
            rollout_seed(config.seed, trainer.accelerator.process_index, trainer.state.step))
        trainer.unwrapped.eval()  # no dropout in RL: rollouts and replays must compute the same function
        rollouts = collect_rollouts(self.behaviour_velocity, self.behaviour.latent_dim, cond, guidance, config,
                                    generator)
        pred = decode_motion(self.parts, self.behaviour, rollouts.latents)
        truth = inputs["motion"].repeat_interleave(group, 0)
        rewards, weights, names = reward_columns(pred, truth, self.slices, config.rl, listening)
        scored = None if listening is None else listening.any(1)
        advantages = ADVANTAGES[config.rl.advantage](rewards, weights.to(device), group, config.rl.adv_eps, scored)
        summary = {"reward": float((rewards * weights.to(device)).sum(-1).mean()),
                   **{f"r.{n}": float(rewards[:, j].mean()) for j, n in enumerate(names)}}
        if listening is not None:
            rollouts.latent_weights = listener_weights(roles, rate)
            summary["listener_latents"] = int((rollouts.latent_weights > 0).sum())
        return rollouts, advantages, rewards, summary

    def step(self, batch: dict) -> dict:
        """One rollout batch and its ``inner_epochs`` updates; returns numbers (and tensors) for logs and
        tests, ``inner`` the losses and ratio statistics of each update."""
        config, trainer = self.config, self.trainer
        synced = trainer.state.step % config.rl.behaviour_sync_every == 0
        if synced:
            self.sync_behaviour()
        rollouts, advantages, rewards, summary = self.rollout(batch)
        tensors = {"advantages": advantages, "rewards": rewards, "rollouts": rollouts}
        summary["behaviour_synced"] = synced
        if summary.get("listener_latents") == 0:
            trainer.state.step += 1  # the batch is consumed; nothing to learn from it
            row = {**summary, "skipped": "no latent mostly listening"}
            trainer.log(row)
            return {**row, **tensors}
        # With grad recording on, like the updates below: the forward must take the policy's exact path.
        with torch.enable_grad():
            old_logp = log_probs(step_means(self.behaviour_velocity, rollouts, config), rollouts).detach()
        accum = config.optim.grad_accum
        chunk = -(-advantages.shape[0] // accum)
        inner = []
        for _ in range(config.rl.inner_epochs):
            inner.append(trainer.optimizer_step(self._micro_losses(rollouts, old_logp, advantages, chunk)))
            trainer.state.step -= 1  # one RL step counts once, however many inner updates
        trainer.state.step += 1
        row = {**inner[-1], "first_ratio_dev": inner[0]["ratio_dev"], "first_clip_frac": inner[0]["clip_frac"],
               "rollout_logp_dev": float((rollouts.logp - old_logp).abs().max()), **summary}
        trainer.log(row)
        return {**row, "inner": inner, **tensors}


def run_rl(config: RunConfig, dry_run: bool = False) -> list[dict]:
    run = RLRun(config)
    evaluate = run_evaluator(run.config, run.trainer.accelerator.device)
    if not dry_run:
        run.trainer.resume()
    stream = run.stream(run.trainer.state.step)
    rows = []
    last = run.trainer.state.step + 1 if dry_run else config.steps
    with progress_bar(last, "rl", config.progress, initial=run.trainer.state.step) as bar:
        while run.trainer.state.step < last:
            out = run.step(next(stream))
            rows.append({k: v for k, v in out.items() if not isinstance(v, (torch.Tensor, Rollouts))})
            bar.set_postfix(reward=f"{out['reward']:.4g}", refresh=False)
            bar.update(1)
            if not dry_run and (run.trainer.state.step % config.save_every == 0 or run.trainer.state.step == config.steps):
                run.trainer.save()
            if evaluate is not None and config.eval_every and run.trainer.state.step % config.eval_every == 0:
                run.trainer.log({"eval": evaluate(run.trainer)})
    return rows


def command(args: argparse.Namespace) -> int:
    """``train rl``: the run of ``--config`` (kind rl) with the command line's overrides."""
    config = config_from_args(args)
    if config.kind != "rl":
        print(f"kind {config.kind!r} is not an RL run (use train sft)")
        return 2
    rows = run_rl(config, dry_run=args.dry_run)
    print(f"done: {len(rows)} step(s), last reward {rows[-1]['reward']:.5g}, run folder {config.run_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return command(parse_args("RL post-training of the flow model (GRPO / GDPO advantages).", argv))


if __name__ == "__main__":
    sys.exit(main())
