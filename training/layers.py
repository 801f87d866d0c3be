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
