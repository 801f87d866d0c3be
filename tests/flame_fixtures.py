"""Test helper for the FLAME stage: a tiny scripted stand-in for the SHeaP TorchScript checkpoint.

``build_scripted_sheap(path)`` writes, with no download, a TorchScript module with SHeaP's
interface: input (N,3,224,224) RGB in [0,1]; output a Dict[str, Tensor] with SHeaP's names and
shapes (expr 100, shape 300, jaw/neck/torso/eye_l/eye_r 3, eyelids 2, cam_trans 3). Outputs are
computed from the image (strided conv, pooling, linear heads), so they differ per image and
per-image results do not depend on batching. Weights are seeded: the file is the same model on
every run. ``as_tuple=True`` returns a tuple in ``pipelines.flame.sheap.SHEAP_OUTPUT_ORDER`` instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import torch
from torch import nn

from pipelines.flame.sheap import SHEAP_OUTPUT_ORDER

SHEAP_DIMS: Dict[str, int] = {
    "expr": 100, "shape": 300, "jaw": 3, "neck": 3, "torso": 3,
    "eye_l": 3, "eye_r": 3, "eyelids": 2, "cam_trans": 3,
}


class _TinySheapBody(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, kernel_size=8, stride=8)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.names: List[str] = list(SHEAP_OUTPUT_ORDER)
        self.heads = nn.ModuleDict({name: nn.Linear(128, SHEAP_DIMS[name]) for name in SHEAP_OUTPUT_ORDER})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(torch.relu(self.conv(x))), 1)


class TinySheapDict(_TinySheapBody):
    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        f = self.features(x)
        out: Dict[str, torch.Tensor] = {}
        for name, head in self.heads.items():
            out[name] = head(f)
        return out


class TinySheapTuple(_TinySheapBody):
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                torch.Tensor]:
        f = self.features(x)
        h = self.heads
        return (h["expr"](f), h["shape"](f), h["jaw"](f), h["neck"](f), h["torso"](f),
                h["eye_l"](f), h["eye_r"](f), h["eyelids"](f), h["cam_trans"](f))


def build_scripted_sheap(path: str | Path, seed: int = 0, as_tuple: bool = False) -> Path:
    """Write a tiny scripted SHeaP stand-in to ``path`` (parents created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    module = (TinySheapTuple() if as_tuple else TinySheapDict()).eval()
    torch.jit.save(torch.jit.script(module), str(path))
    return path
