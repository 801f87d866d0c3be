"""Auto-regressive rectified-flow transformer over motion latents.

Convention: ``x_tau = (1 - tau) * x_data + tau * noise`` with tau = 1 pure noise and tau = 0
data; the network predicts the velocity ``v = noise - x_data`` and sampling integrates tau
from 1 to 0.

One sequence per window of L latents:
``[text (1)] [audio (L)] [partner audio (L)] [partner motion (L)] [history (L)] [noisy (L)]``
(with ``flow.partner_streams`` off the two partner blocks are left out: the speaking-only
layout ``[text] [audio] [history] [noisy]``). Each block has its own token type. Positions
(``flow.positions``): ``learned``, one embedding per latent shared by the per-latent blocks; or
``tmrope``, time-aligned rotary positions (Qwen2.5-Omni's TMRoPE on one time axis, as
GDPO-Listener uses it) in frames: the text token at t = 0, audio token i at its frame t = i,
latent j (history, noisy, partner motion) at the middle of its frames, t = j * rate + rate // 2.
Audio tokens (``flow.audio_tokens``): ``pooled``, one per latent (the audio block is L tokens),
or ``frames``, one per motion frame (the audio blocks are L * rate tokens; needs ``tmrope``).
Attention mask: the prefix (text, audio, partner) attends
within the prefix; history token j (the clean latent j) attends to the prefix and history
<= j; noisy token i (latent i at noise level tau_i) attends to the prefix, history < i and
itself. So the velocity at position i depends only on the conditions, the latents before i and
its own noisy input: training computes every position in parallel (teacher forcing), sampling
fills positions one by one, and both see exactly the same function.

Partner streams (GDPO-Listener): the partner's audio features (the same frozen audio encoder)
and the frozen VAE's latents of the partner's normalised motion (standardised like the actor's
latents). Their tokens are masked out of attention (no token attends to them) where there is
no partner (``partner_heard`` False: every partner token of the row) or where a latent's
partner face is not mostly tracked (``partner_seen`` False: that partner-motion token), and
their inputs are replaced by zeros there, so whatever those rows hold cannot reach the output.

Condition dropout replaces the text token and/or all audio tokens by learned null
embeddings and masks the partner tokens as if there were no partner (per sample, seeded);
classifier-free guidance mixes the velocities with and without conditions (the unconditional
pass drops text, audio and partner): ``v = v_uncond + s * (v_cond - v_uncond)``, where ``s``
is one number or one weight per latent (:func:`role_guidance`: omega_speak on the frames where
the actor speaks, omega_listen on the others, averaged over the latent's frames).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from pipelines.schema.conversation import actor_speaks
from training.config import FlowConfig
from training.layers import RotaryTransformer, seeded, sinusoid, transformer

TAU_SALT, NOISE_SALT, DROP_SALT, PARTNER_DROP_SALT = 21, 22, 23, 24
TEXT, AUDIO, HISTORY, NOISY = range(4)  # rows of token_type
PARTNER_AUDIO, PARTNER_MOTION = range(2)  # rows of partner_token_type
# A latent is "mostly" something when more than this share of its frames is: a partner face
# mostly tracked (its motion token is attended), a latent mostly listening (RL's listener_only).
MOSTLY = 0.5


def latent_share(frames: torch.Tensor, rate: int) -> torch.Tensor:
    """(B, T) bool per frame -> (B, T // rate) float: the share of each latent's ``rate`` frames that are True."""
    latents = frames.shape[1] // rate
    return frames[:, :latents * rate].reshape(frames.shape[0], latents, rate).float().mean(-1)


def role_guidance(roles: torch.Tensor, rate: int, speak: float, listen: float) -> torch.Tensor:
    """CFG weight per latent (B, T // rate) from role codes (B, T): the mean over the latent's frames
    of ``speak`` where the actor speaks (SPEAKING, BOTH) and ``listen`` elsewhere (LISTENING, SILENT)."""
    share = latent_share(actor_speaks(roles), rate)
    return speak * share + listen * (1 - share)


@dataclass
class Conditions:
    """What a window is conditioned on, one row per sample. Per-latent fields have L columns."""

    # (B, L, Da) the actor's audio features per latent (pooled), or (B, L, rate, Da) per frame of each latent
    audio: torch.Tensor
    text: torch.Tensor  # (B, Dt) caption embedding
    partner_audio: torch.Tensor | None = None  # the partner's audio features, shaped as ``audio``
    partner_motion: torch.Tensor | None = None  # (B, L, D) VAE latents (means) of the normalised partner motion
    partner_heard: torch.Tensor | None = None  # (B,) bool: the sample has a partner
    partner_seen: torch.Tensor | None = None  # (B, L) bool: the latent's partner face is mostly tracked

    PER_LATENT = ("audio", "partner_audio", "partner_motion", "partner_seen")

    def _map(self, function, names=None) -> Conditions:
        fields = [f.name for f in dataclasses.fields(self) if names is None or f.name in names]
        return dataclasses.replace(self, **{name: function(getattr(self, name)) for name in fields
                                            if getattr(self, name) is not None})

    def rows(self, index) -> Conditions:
        return self._map(lambda t: t[index])

    def repeat(self, times: int) -> Conditions:
        """Each row ``times`` times in a row (a group of rollouts per condition)."""
        return self._map(lambda t: t.repeat_interleave(times, 0))

    def latents(self, start: int, end: int) -> Conditions:
        """Latents [start, end) of the per-latent fields (a sliding window)."""
        return self._map(lambda t: t[:, start:end], self.PER_LATENT)


def attention_mask(length: int, device: torch.device | None = None, partner: bool = False,
                   audio_per_latent: int = 1) -> torch.Tensor:
    """Boolean (S, S) mask, True where attention is NOT allowed (layout above); the prefix holds
    1 + A (+ A + L with partner) tokens, A = L * ``audio_per_latent`` audio tokens."""
    audio = length * audio_per_latent
    prefix = 1 + (2 * audio + length if partner else audio)
    size = prefix + 2 * length
    allowed = torch.zeros(size, size, dtype=torch.bool, device=device)
    allowed[:prefix, :prefix] = True
    hist = slice(prefix, prefix + length)
    noisy = slice(prefix + length, size)
    allowed[hist, :prefix] = True
    allowed[hist, hist] = torch.tril(torch.ones(length, length, dtype=torch.bool, device=device))
    allowed[noisy, :prefix] = True
    allowed[noisy, hist] = torch.tril(torch.ones(length, length, dtype=torch.bool, device=device), diagonal=-1)
    allowed[noisy, noisy] = torch.eye(length, dtype=torch.bool, device=device)
    return ~allowed


def _no_guidance(scale: float | torch.Tensor) -> bool:
    return bool((scale == 1.0).all()) if isinstance(scale, torch.Tensor) else scale == 1.0


class MotionFlow(nn.Module):
    def __init__(self, latent_dim: int, audio_dim: int, text_dim: int, length: int, config: FlowConfig,
                 rate: int = 1) -> None:
        """``rate``: frames per latent (the VAE's), the time unit of ``tmrope`` and the audio
        tokens per latent with ``audio_tokens: frames``."""
        super().__init__()
        width = config.width
        self.latent_dim, self.length, self.width, self.rate = latent_dim, length, width, rate
        self.audio_drop, self.text_drop, self.partner_drop = config.audio_drop, config.text_drop, config.partner_drop
        self.partner = config.partner_streams
        self.rotary = config.positions == "tmrope"
        self.audio_per_latent = rate if config.audio_tokens == "frames" else 1
        self.audio_proj = nn.Linear(audio_dim, width)
        self.text_proj = nn.Linear(text_dim, width)
        self.null_audio = nn.Parameter(torch.randn(width) * 0.02)
        self.null_text = nn.Parameter(torch.randn(width) * 0.02)
        self.history_proj = nn.Linear(latent_dim, width)
        self.noisy_proj = nn.Linear(latent_dim, width)
        self.time_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        if not self.rotary:
            self.position = nn.Parameter(torch.randn(length, width) * 0.02)
        self.token_type = nn.Parameter(torch.randn(4, width) * 0.02)
        self.blocks = RotaryTransformer(width, config.layers, config.heads, config.dropout) if self.rotary else \
            transformer(width, config.layers, config.heads, config.dropout)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, latent_dim)
        if self.partner:
            # Parameters of their own, made last: without partner streams the model is the speaking-only
            # one parameter for parameter, initialised alike (checkpoints from before the partner streams load).
            self.partner_audio_proj = nn.Linear(audio_dim, width)
            self.partner_motion_proj = nn.Linear(latent_dim, width)
            self.partner_token_type = nn.Parameter(torch.randn(2, width) * 0.02)
        # Latent standardisation (per-channel mean, one scale), set once from the first training batch.
        self.register_buffer("latent_mean", torch.zeros(latent_dim))
        self.register_buffer("latent_std", torch.ones(latent_dim))
        self.register_buffer("mask", attention_mask(length, partner=self.partner,
                                                    audio_per_latent=self.audio_per_latent), persistent=False)

    def forward(self, method: str, *args):
        # Losses and replayed velocities go through forward so that DDP synchronises gradients.
        return getattr(self, method)(*args)

    def _audio_tokens(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, L, Da) or (B, L, rate, Da) -> (B, A, Da): one row per audio token, in time order."""
        per_frame = self.audio_per_latent > 1
        if audio.dim() != (4 if per_frame else 3) or (per_frame and audio.shape[2] != self.rate):
            expected = f"(B, L, {self.rate}, Da): one per frame" if per_frame else "(B, L, Da): one per latent"
            raise ValueError(f"audio features of shape {tuple(audio.shape)}; the model takes {expected}")
        return audio.flatten(1, 2) if per_frame else audio

    def token_times(self, n: int, device: torch.device) -> torch.Tensor:
        """(S,) time of every token in frames (``tmrope``; layout in the module docstring)."""
        latent = torch.arange(n, device=device) * self.rate + self.rate // 2
        audio = torch.arange(n * self.rate, device=device) if self.audio_per_latent > 1 else latent
        blocks = [torch.zeros(1, dtype=latent.dtype, device=device), audio]
        blocks += [audio, latent] if self.partner else []
        return torch.cat(blocks + [latent, latent])

    def _positions(self, n: int) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """Added to (latent tokens, audio tokens): the learned table, or nothing under rotary positions."""
        if self.rotary:
            return 0.0, 0.0
        return self.position[:n], self.position[:n]

    def _partner_tokens(self, cond: Conditions, drop: torch.Tensor, pos: torch.Tensor | float,
                        audio_pos: torch.Tensor | float,
                        like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(partner audio tokens, partner motion tokens, (B, A + n) True where a token is masked out)."""
        batch, n = like.shape[0], like.shape[1]
        tokens = n * self.audio_per_latent
        heard = torch.zeros(batch, dtype=torch.bool, device=like.device) if cond.partner_heard is None else \
            cond.partner_heard & ~drop
        seen = torch.zeros(batch, n, dtype=torch.bool, device=like.device) if cond.partner_seen is None else \
            cond.partner_seen & heard[:, None]
        zeros_audio = like.new_zeros(batch, tokens, self.partner_audio_proj.in_features)
        audio = zeros_audio if cond.partner_audio is None else torch.where(
            heard[:, None, None], self._audio_tokens(cond.partner_audio), zeros_audio)
        zeros_motion = like.new_zeros(batch, n, self.latent_dim)
        motion = zeros_motion if cond.partner_motion is None else torch.where(
            seen[..., None], self.standardise(cond.partner_motion), zeros_motion)
        a = self.partner_audio_proj(audio) + audio_pos + self.partner_token_type[PARTNER_AUDIO]
        m = self.partner_motion_proj(motion) + pos + self.partner_token_type[PARTNER_MOTION]
        return a, m, torch.cat([~heard[:, None].expand(batch, tokens), ~seen], dim=1)

    def velocity(self, noisy: torch.Tensor, tau: torch.Tensor, history: torch.Tensor, cond: Conditions,
                 drop_audio: torch.Tensor, drop_text: torch.Tensor,
                 drop_partner: torch.Tensor | None = None) -> torch.Tensor:
        """Velocity (B, L, D) for noisy latents (B, L, D) at levels tau (B, L).

        history (B, L, D): clean latents (only those before each position are seen); ``cond``:
        the conditions of the window's latents; drop_* (B,) bools (drop_partner None: none dropped).
        """
        batch, n = noisy.shape[0], noisy.shape[1]
        pos, audio_pos = self._positions(n)
        a = self.audio_proj(self._audio_tokens(cond.audio))
        a = torch.where(drop_audio[:, None, None], self.null_audio.expand_as(a), a) + audio_pos + self.token_type[AUDIO]
        t = self.text_proj(cond.text)
        t = torch.where(drop_text[:, None], self.null_text.expand_as(t), t) + self.token_type[TEXT]
        h = self.history_proj(history) + pos + self.token_type[HISTORY]
        x = (self.noisy_proj(noisy) + self.time_mlp(sinusoid(tau * 1000.0, self.width).to(noisy.dtype))
             + pos + self.token_type[NOISY])
        masked = None
        if self.partner:
            drop = drop_partner if drop_partner is not None else torch.zeros_like(drop_audio)
            pa, pm, partner_masked = self._partner_tokens(cond, drop, pos, audio_pos, noisy)
            tokens = torch.cat([t[:, None], a, pa, pm, h, x], dim=1)
            masked = torch.zeros(batch, tokens.shape[1], dtype=torch.bool, device=noisy.device)
            masked[:, 1 + a.shape[1]:1 + a.shape[1] + partner_masked.shape[1]] = partner_masked
        else:
            tokens = torch.cat([t[:, None], a, h, x], dim=1)
        mask = self.mask if n == self.length else attention_mask(n, noisy.device, self.partner, self.audio_per_latent)
        if self.rotary:
            out = self.blocks(tokens, self.token_times(n, noisy.device), mask=mask, src_key_padding_mask=masked)
        else:
            out = self.blocks(tokens, mask=mask, src_key_padding_mask=masked)
        return self.out(self.norm(out[:, -n:]))

    def guided_velocity(self, noisy: torch.Tensor, tau: torch.Tensor, history: torch.Tensor, cond: Conditions,
                        scale: float | torch.Tensor) -> torch.Tensor:
        """CFG velocity; ``scale`` one number or (B, L) weights per latent (:func:`role_guidance`)."""
        keep = torch.zeros(noisy.shape[0], dtype=torch.bool, device=noisy.device)
        conditional = self.velocity(noisy, tau, history, cond, keep, keep, keep)
        if _no_guidance(scale):
            return conditional
        unconditional = self.velocity(noisy, tau, history, cond, ~keep, ~keep, ~keep)
        weight = scale[..., None].to(noisy.dtype) if isinstance(scale, torch.Tensor) else scale
        return unconditional + weight * (conditional - unconditional)

    def standardise(self, latents: torch.Tensor) -> torch.Tensor:
        return (latents - self.latent_mean) / self.latent_std

    def unstandardise(self, latents: torch.Tensor) -> torch.Tensor:
        return latents * self.latent_std + self.latent_mean

    def loss(self, latents: torch.Tensor, cond: Conditions, seeds: torch.Tensor) -> dict[str, torch.Tensor]:
        """Flow-matching loss on standardised latents (B, L, D); draws are seeded per sample."""
        x0 = self.standardise(latents)
        shape = tuple(x0.shape[1:])
        tau = seeded(seeds, TAU_SALT, shape[:1], kind="uniform").to(x0)
        noise = seeded(seeds, NOISE_SALT, shape).to(x0)
        drops = seeded(seeds, DROP_SALT, (2,), kind="uniform").to(x0.device)
        drop_partner = None
        if self.partner:  # a salt of its own: the audio and text draws stay what they were
            partner_draw = seeded(seeds, PARTNER_DROP_SALT, (1,), kind="uniform").to(x0.device)[:, 0]
            drop_partner = partner_draw < self.partner_drop
        noisy = (1 - tau[..., None]) * x0 + tau[..., None] * noise
        pred = self.velocity(noisy, tau, x0, cond, drops[:, 0] < self.audio_drop, drops[:, 1] < self.text_drop,
                             drop_partner)
        return {"loss": (pred - (noise - x0)).pow(2).mean()}


def tau_grid(steps: int, device: torch.device | None = None) -> torch.Tensor:
    """steps + 1 noise levels from 1 to 0 (uniform)."""
    return torch.linspace(1.0, 0.0, steps + 1, device=device)


@torch.no_grad()
def sample_window(model: MotionFlow, cond: Conditions, steps: int, scale: float | torch.Tensor,
                  generator: torch.Generator | None = None, history: torch.Tensor | None = None,
                  start: int = 0) -> torch.Tensor:
    """Fill latents ``start..L-1`` of one window by Euler ODE sampling, one latent at a time.

    ``scale``: CFG scale, one number or (B, L) weights; history (B, L, D) holds standardised
    latents already fixed before ``start`` (sliding windows); returns the standardised latents (B, L, D).
    """
    audio = cond.audio
    batch, length = audio.shape[0], audio.shape[1]
    out = torch.zeros(batch, length, model.latent_dim, device=audio.device) if history is None else history.clone()
    grid = tau_grid(steps, audio.device)
    for i in range(start, length):
        x = torch.randn(batch, model.latent_dim, generator=generator).to(audio.device)
        for k in range(steps):
            noisy = out.clone()
            noisy[:, i] = x
            tau = torch.full((batch, length), float(grid[k]), device=audio.device)
            v = model.guided_velocity(noisy, tau, out, cond, scale)[:, i]
            x = x + (grid[k + 1] - grid[k]) * v
        out[:, i] = x
    return out


@torch.no_grad()
def sample_long(model: MotionFlow, cond: Conditions, steps: int, scale: float | torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Any number N of latents (conditions of N latents) by a sliding window of the model's length.

    The first window is sampled whole; each later latent is sampled with the previous L-1
    latents as history and the conditions of the window ending at it (``scale``: one number
    or (B, N) weights). Returns (B, N, D) standardised.
    """
    length = model.length
    total = cond.audio.shape[1]

    def part(s: int, e: int):
        return cond.latents(s, e), scale[:, s:e] if isinstance(scale, torch.Tensor) else scale

    first_cond, first_scale = part(0, min(length, total))
    first = sample_window(model, first_cond, steps, first_scale, generator)
    if total <= length:
        return first
    out = torch.cat([first, torch.zeros(cond.audio.shape[0], total - length, model.latent_dim,
                                        device=cond.audio.device)], 1)
    for i in range(length, total):
        s = i - length + 1
        window_cond, window_scale = part(s, i + 1)
        window = sample_window(model, window_cond, steps, window_scale, generator, history=out[:, s:i + 1],
                               start=length - 1)
        out[:, i] = window[:, -1]
    return out
