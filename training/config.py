"""One validated config per training run (YAML file -> pydantic), the single source of defaults.

A run directory receives a copy of the resolved config (``config.yaml``, with the frame and
sample rate the data turned out to have when the YAML left them open), the normalisation
statistics and the checkpoints. Unknown keys are errors (typos must not silently fall back
to a default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, model_validator

from pipelines.schema.base import StrictModel

# The FLAME motion groups in the order their columns are concatenated (names as stored in
# the shards' ``<key>.flame.npz``: ``smooth/<group>``; see pipelines/flame/groups.py).
DEFAULT_GROUPS = ("expression", "jaw", "neck", "eyelids", "eye_pose", "global_rotation")


class DataConfig(StrictModel):
    shards: str = Field("data/shards", description="Shard folder (with index.json), or a list file / glob of tars.")
    eval_shards: str | None = Field(None, description="Held-out shards for metrics; none: metrics are skipped.")
    fps: float | None = Field(None, gt=0, description="Frame rate every sample must have; none: the first sample's.")
    sample_rate: int | None = Field(None, gt=0, description="Audio rate every sample must have; none: the first sample's.")
    window_frames: int = Field(200, ge=2)
    groups: tuple[str, ...] = DEFAULT_GROUPS
    array_prefix: Literal["smooth", "raw"] = "smooth"
    batch_size: int = Field(8, ge=1)
    shuffle_buffer: int = Field(64, ge=1, description="Samples held by the webdataset shuffle buffer.")
    # One decoded clip serves several windows: decoding, not cutting, is the loader's cost
    # (bench/results/loader.md); 1 and 1 give the stream of one window per decoded clip.
    windows_per_clip: int = Field(8, ge=1, description="Random windows drawn from each decoded clip per pass.")
    window_shuffle_buffer: int = Field(64, ge=1, description="Drawn windows held by a seeded shuffle buffer "
                                       "(mixes one clip's windows with other clips'); 1: off.")
    num_workers: int = Field(0, ge=0)
    stats_eps: float = Field(1e-4, gt=0, description="Floor on a channel's std (constant channels stay finite).")
    expression_coefficients: int | None = Field(
        None, ge=1, description="Leading FLAME expression coefficients read (GDPO-Listener: 50, its d = 67 with jaw, "
        "neck, eyelids, eye pose and global rotation); none: every stored one (SHeaP writes 100).")


class VAEConfig(StrictModel):
    latent_rate: int = Field(8, ge=1, description="Frames per latent: 200 frames -> 25 latents.")
    encoder_attention: Literal["full", "causal", "chunk"] = Field(
        "causal", description="What encoder latent j sees: every latent (full: a teacher-forced history latent "
        "then carries frames after it), latents <= j (causal) or its own frames only (chunk); "
        "bench/results/vae_history.md measured the choice.")
    latent_dim: int = Field(64, ge=1)
    width: int = Field(256, ge=8)
    layers: int = Field(4, ge=1)
    heads: int = Field(4, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    kl_weight: float = Field(1e-4, ge=0)
    velocity_weight: float = Field(1.0, ge=0, description="Weight of the frame-velocity reconstruction term.")


class FlowConfig(StrictModel):
    width: int = Field(512, ge=8)
    layers: int = Field(6, ge=1)
    heads: int = Field(16, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    audio_drop: float = Field(0.1, ge=0, le=1, description="Condition dropout of the audio prefix (for CFG).")
    text_drop: float = Field(0.1, ge=0, le=1, description="Condition dropout of the caption embedding (for CFG).")
    partner_streams: bool = Field(True, description="Partner audio and partner motion tokens in the prefix "
                                  "(conversations, GDPO-Listener); off: the speaking-only layout, partner data unread.")
    partner_drop: float = Field(0.1, ge=0, le=1, description="Condition dropout of both partner streams (for CFG): "
                                "the sample is trained as if it had no partner.")
    audio_tokens: Literal["pooled", "frames"] = Field(
        "pooled", description="Audio prefix tokens: one per latent (the features averaged over its frames) or one "
        "per motion frame (GDPO-Listener; needs positions: tmrope).")
    positions: Literal["learned", "tmrope"] = Field(
        "learned", description="Learned position embedding per latent, or time-aligned rotary positions "
        "(TMRoPE: text t=0, audio frame i at t=i, latent j at t=j*rate+rate//2).")
    guidance_scale: float = Field(2.0, description="CFG scale at sampling on frames where the actor speaks "
                                  "(omega_speak; speaking-only data has no other); 1 = no guidance.")
    guidance_listen: float | None = Field(None, description="CFG scale on listening and silent frames "
                                          "(omega_listen); none: guidance_scale. A latent gets the mean over "
                                          "its frames.")
    sample_steps: int = Field(10, ge=1, description="Euler steps per latent.")
    vae_run: str | None = Field(None, description="Run directory of the trained VAE (checkpoint + stats).")

    @model_validator(mode="after")
    def _frame_tokens_need_time_positions(self) -> FlowConfig:
        if self.audio_tokens == "frames" and self.positions != "tmrope":
            raise ValueError("flow.audio_tokens: frames needs flow.positions: tmrope (the learned position table "
                             "has one entry per latent)")
        return self

    @property
    def listen_scale(self) -> float:
        return self.guidance_scale if self.guidance_listen is None else self.guidance_listen


class EncoderConfig(StrictModel):
    audio_path: str | None = Field(None, description="Local wav2vec2-family folder (from_pretrained).")
    text_path: str | None = Field(None, description="Local T5-family folder (encoder + tokenizer).")
    max_text_tokens: int = Field(64, ge=1)


class OptimConfig(StrictModel):
    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = Field(0, ge=0)
    grad_clip: float | None = Field(1.0, gt=0)
    grad_accum: int = Field(1, ge=1)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    ema_decay: float | None = Field(None, gt=0, lt=1, description="EMA of the weights; none: off.")


class RewardWeights(StrictModel):
    """Weight of each reward term of one FLAME group (training/rewards.py defines the terms)."""

    pos_sigma: float = 0.0
    vel_sigma: float = 0.0
    pos_var: float = 0.0
    vel_var: float = 0.0
    drift: float = 0.0
    mse: float = 0.0


def _default_reward_weights() -> dict[str, RewardWeights]:
    # GDPO-Listener's four penalties on every motion group, equal weights (its per-term weights are not restated here).
    return {group: RewardWeights(pos_sigma=1.0, vel_sigma=1.0, drift=1.0, mse=1.0) for group in DEFAULT_GROUPS}


class RLConfig(StrictModel):
    init_run: str | None = Field(None, description="SFT flow run directory whose checkpoint starts the policy.")
    sde: Literal["em", "cps", "em_constant"] = Field(
        "em", description="Stochastic sampler of the SDE window (training/sde.py): em, Flow-GRPO's "
        "marginal-preserving Euler-Maruyama; cps, coefficients-preserving sampling (FlowPortrait); em_constant, "
        "GDPO-Listener's Euler-Maruyama with constant sigma and no drift correction.")
    window: int | None = Field(1, ge=1, description="Denoising steps that are stochastic (the SDE window); none: "
                               "every step that can carry noise (GDPO-Listener: all; cps: all but the last).")
    window_start: int | None = Field(None, ge=0, description="First SDE step; none: random per rollout batch.")
    eta: float = Field(0.5, gt=0, description="Noise level of the SDE steps: the noise scale of em, cps's eta, "
                       "em_constant's sigma.")
    sample_steps: int | None = Field(None, ge=1, description="Denoising steps per latent in RL rollouts "
                                     "(GDPO-Listener: 4); none: flow.sample_steps, the inference count (10).")
    cfg: bool = Field(False, description="Classifier-free guidance in rollouts and replays (flow.guidance_scale and "
                      "flow.guidance_listen); off (FlowPortrait): one conditional pass, null embeddings frozen.")
    group_size: int = Field(4, ge=2, description="Rollouts per condition (G).")
    clip_range: float = Field(1e-3, gt=0, description="PPO clip of the importance ratio.")
    kl_beta: float = Field(0.01, ge=0)
    inner_epochs: int = Field(2, ge=1, description="Optimizer updates replayed from each cached rollout batch "
                              "(after the first the ratio moves and the clip acts).")
    behaviour_sync_every: int = Field(8, ge=1, description="RL steps between copies of the policy into the "
                                      "behaviour policy, which samples the rollouts and gives the old log-probs "
                                      "(FlowPortrait: 8); 1: on-policy at every step's first update.")
    advantage: Literal["grpo", "gdpo", "gdpo_mean"] = Field(
        "gdpo_mean", description="grpo: the weighted sum normalised per group; gdpo: each column normalised per "
        "group, weighted sum, batch normalisation; gdpo_mean (GDPO-Listener Eq. 8-9): each column normalised per "
        "group, then sum(w_i A_i) / (sum(w_i) + adv_eps).")
    reward_columns: Literal["per_group", "per_term"] = Field(
        "per_group", description="per_group (GDPO-Listener): one reward R_i per FLAME group, the weighted sum of "
        "its terms, weighted by group_weights in the advantage; per_term: one column per (group, term) with a "
        "non-zero weight, weighted by that term weight.")
    group_weights: dict[str, float] = Field(default_factory=dict, description="lambda_i of each group in "
                                            "per_group columns; a group not named: 1.")
    listener_only: bool = Field(True, description="GDPO-Listener's setting: the policy loss and the KL count only "
                                "latents mostly listening, rewards use listening frames only; a batch without "
                                "listening frame is an error. Off (speaking-only data): every latent and frame.")
    adv_eps: float = Field(1e-6, gt=0, description="Relative epsilon of every normalisation: the std plus adv_eps "
                           "times the set's mean |reward| (scale-free: any spread well above rounding keeps unit "
                           "advantages, a set constant up to rounding gets about 0).")
    rewards: dict[str, RewardWeights] = Field(default_factory=_default_reward_weights,
                                              description="Term weights per FLAME group, scored on normalised "
                                              "channels.")

    @model_validator(mode="after")
    def _weighted_groups_are_scored(self) -> RLConfig:
        unknown = sorted(set(self.group_weights) - set(self.rewards))
        if unknown:
            raise ValueError(f"rl.group_weights names {unknown}, which rl.rewards does not score")
        if any(weight < 0 for weight in self.group_weights.values()):
            raise ValueError("rl.group_weights must not be negative")
        if self.window is None and self.window_start is not None:
            raise ValueError("rl.window_start needs an rl.window (none: every step is stochastic)")
        return self


class MetricsConfig(StrictModel):
    flame_model: str | None = Field(None, description="FLAME model npz (training/flame_model.py converts the FLAME "
                                    "2020 pickle) for LVE, MHD and vertex-space FDD/PDD/JDD (training/metrics.py).")
    guidance_scale: float = Field(1.0, description="CFG scale of the sampled windows the metrics score "
                                  "(omega_speak; the papers report at 1.0, no guidance).")
    guidance_listen: float | None = Field(None, description="CFG scale on listening and silent frames "
                                          "(omega_listen); none: guidance_scale.")
    max_windows: int = Field(64, ge=1)
    expressive_share: float = Field(0.25, gt=0, le=1, description="Share of the evaluated windows, the most "
                                    "expressive by ground-truth variance, reported again as the expressive subset.")

    @property
    def listen_scale(self) -> float:
        return self.guidance_scale if self.guidance_listen is None else self.guidance_listen


class RunConfig(StrictModel):
    kind: Literal["vae", "flow", "rl"] = "flow"
    run_dir: str = "runs/default"
    seed: int = 0
    steps: int = Field(1000, ge=1)
    log_every: int = Field(10, ge=1)
    save_every: int = Field(500, ge=1)
    eval_every: int | None = Field(None, ge=1)
    cpu: bool = Field(False, description="Force CPU even when CUDA is available.")
    progress: bool = Field(True, description="Progress bars (main process only, and only on a terminal).")
    data: DataConfig = Field(default_factory=DataConfig)
    vae: VAEConfig = Field(default_factory=VAEConfig)
    flow: FlowConfig = Field(default_factory=FlowConfig)
    encoders: EncoderConfig = Field(default_factory=EncoderConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    rl: RLConfig = Field(default_factory=RLConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)

    @model_validator(mode="after")
    def _whole_latents(self) -> RunConfig:
        if self.data.window_frames % self.vae.latent_rate:
            raise ValueError(f"data.window_frames {self.data.window_frames} is not a multiple of "
                             f"vae.latent_rate {self.vae.latent_rate}")
        return self

    @property
    def latents_per_window(self) -> int:
        return self.data.window_frames // self.vae.latent_rate


def load_run_config(path: str | Path | None = None, **overrides) -> RunConfig:
    """A RunConfig from a YAML file, with top-level ``overrides`` (nested dicts merge)."""
    raw = yaml.safe_load(Path(path).read_text()) if path else {}
    return RunConfig(**_merge(raw or {}, overrides))


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def save_run_config(config: RunConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
