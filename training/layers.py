"""Small shared pieces: transformer stacks, sinusoidal embeddings, per-sample seeded noise."""

from __future__ import annotations

import math

import torch
from torch import nn


def transformer(width: int, layers: int, heads: int, dropout: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout, activation="gelu", batch_first=True,
                                       norm_first=True)
    # Nested-tensor fast paths change numerics between masked/unmasked calls: keep one path.
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


def sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """(..., dim) sin/cos features of real-valued ``positions``."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    angles = positions.float()[..., None] * freqs
    out = torch.cat([angles.sin(), angles.cos()], dim=-1)
    return nn.functional.pad(out, (0, dim - 2 * half))


def seeded(seeds: torch.Tensor, salt: int, shape: tuple[int, ...], kind: str = "normal") -> torch.Tensor:
    """One draw of ``shape`` per sample from a generator seeded by (sample seed, salt), on CPU.

    Draws depend only on the sample, never on the batch it sits in: accumulation over
    micro-batches and one large batch see identical noise, and a resumed run the same noise.
    """
    out = []
    for seed in seeds.tolist():
        gen = torch.Generator().manual_seed((int(seed) * 1_000_003 + salt) % (2 ** 63))
        out.append(torch.randn(shape, generator=gen) if kind == "normal" else torch.rand(shape, generator=gen))
    return torch.stack(out)


ROPE_BASE = 10000.0  # the rotary frequency base of RoFormer and Qwen2.5-Omni's TMRoPE


def rotary(x: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (i, i + d/2) of x (..., S, d) by angle times[s] * ROPE_BASE^(-2i/d).

    Query-key dot products then depend on time differences only: a token at t attends to one
    at t' through t - t'.
    """
    half = x.shape[-1] // 2
    freqs = torch.exp(-math.log(ROPE_BASE) * torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = times.float()[:, None] * freqs  # (S, d/2)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    first, second = x[..., :half], x[..., half:]
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)


class RotaryLayer(nn.Module):
    """One pre-norm transformer layer (as ``nn.TransformerEncoderLayer(norm_first=True, gelu)``)
    whose self-attention rotates queries and keys by each token's time (:func:`rotary`)."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        if width % heads or (width // heads) % 2:
            raise ValueError(f"width {width} must split into {heads} heads of an even size (rotary pairs)")
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(4 * width, width))
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, times: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        batch, size, width = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(batch, size, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        attended = nn.functional.scaled_dot_product_attention(
            rotary(q, times), rotary(k, times), v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop1(self.proj(attended.transpose(1, 2).reshape(batch, size, width)))
        return x + self.drop2(self.mlp(self.norm2(x)))


class RotaryTransformer(nn.Module):
    """A stack of :class:`RotaryLayer`; masks follow ``nn.TransformerEncoder``'s convention (True: not allowed)."""

    def __init__(self, width: int, layers: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(RotaryLayer(width, heads, dropout) for _ in range(layers))

    def forward(self, x: torch.Tensor, times: torch.Tensor, mask: torch.Tensor | None = None,
                src_key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        size = x.shape[1]
        allowed = torch.ones(size, size, dtype=torch.bool, device=x.device) if mask is None else ~mask
        allowed = allowed[None, None]
        if src_key_padding_mask is not None:
            allowed = allowed & ~src_key_padding_mask[:, None, None, :]
        for layer in self.layers:
            x = layer(x, times, allowed)
        return x
