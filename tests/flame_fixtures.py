"""Test helper for the FLAME stage: a tiny TorchScript stand-in with the published SHeaP interface.

The interface is written out here from the authors' release (github.com/nlml/SHeaP @cfddf49),
NOT imported from pipelines/flame/groups.py, so that a wrong mapping there fails the tests:

- ``sheap/load_model.py`` lines 58-85: the checkpoints (``model_paper.pt``,
  ``model_expressive.pt``) are TorchScript (a JIT trace) loaded with ``torch.jit.load``;
- ``README.md`` lines 37-49: input (N,3,224,224) RGB in [0,1], the call returns a dict;
- ``demo.py`` lines 71-77, ``video_demo.py`` lines 329-335: keys ``shape_from_facenet``,
  ``expr``, ``eyelids``, ``cam_trans`` and the pose keys read by ``pose_components_to_rotmats``;
- ``sheap/tiny_flame.py`` lines 56-63 and 149-168: shape (N,300), expression (N,100),
  eyelids (N,2), translation (N,3), ``torso_pose`` / ``neck_pose`` / ``jaw_pose`` /
  ``eye_l_pose`` / ``eye_r_pose`` (N,3) axis-angle each, torso being the global rotation.

``build_scripted_sheap(path)`` traces (``torch.jit.trace``, as the release is a trace) a small
seeded network (strided conv, pooling, one linear layer split into the outputs) and saves it
with ``torch.jit.save``; ``SheapBackend`` loads it through its real ``torch.jit.load`` path.
Outputs are float32, differ per image and per output, and do not depend on batching.
``extra_outputs`` adds keys (the pipeline must ignore them); ``drop`` leaves keys out and
``rename`` renames them and ``widths`` changes a per-frame width (the pipeline must reject
each with a clear error).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Mapping

import torch
from torch import nn

# The published output dict: name -> per-frame width (see the module docstring).
PUBLISHED_SHEAP_OUTPUTS: Dict[str, int] = {
    "expr": 100,
    "shape_from_facenet": 300,
    "torso_pose": 3,
    "neck_pose": 3,
    "jaw_pose": 3,
    "eye_l_pose": 3,
    "eye_r_pose": 3,
    "eyelids": 2,
    "cam_trans": 3,
}

# The names this project read before it followed the release (no SHeaP checkpoint has them).
OLD_PROJECT_NAMES: Dict[str, str] = {
    "shape_from_facenet": "shape", "torso_pose": "torso", "neck_pose": "neck",
    "jaw_pose": "jaw", "eye_l_pose": "eye_l", "eye_r_pose": "eye_r",
}


class TinySheap(nn.Module):
    def __init__(self, outputs: Mapping[str, int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, kernel_size=8, stride=8)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.names: List[str] = list(outputs)
        self.widths: List[int] = [int(w) for w in outputs.values()]
        self.head = nn.Linear(128, sum(self.widths))

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        features = torch.flatten(self.pool(torch.relu(self.conv(x))), 1)
        values = torch.split(self.head(features), self.widths, dim=1)
        return {name: value for name, value in zip(self.names, values)}


def standin_outputs(extra_outputs: Mapping[str, int] | None = None, drop: Iterable[str] = (),
                    rename: Mapping[str, str] | None = None,
                    widths: Mapping[str, int] | None = None) -> Dict[str, int]:
    """The stand-in's output names and widths: the published ones, then the requested changes."""
    dropped = set(drop)
    unknown = (dropped | set(rename or {}) | set(widths or {})) - set(PUBLISHED_SHEAP_OUTPUTS)
    if unknown:
        raise ValueError(f"not published SHeaP outputs: {sorted(unknown)}")
    outputs = {(rename or {}).get(name, name): (widths or {}).get(name, width)
               for name, width in PUBLISHED_SHEAP_OUTPUTS.items() if name not in dropped}
    outputs.update(extra_outputs or {})
    return outputs


def build_scripted_sheap(path: str | Path, seed: int = 0, extra_outputs: Mapping[str, int] | None = None,
                         drop: Iterable[str] = (), rename: Mapping[str, str] | None = None,
                         widths: Mapping[str, int] | None = None) -> Path:
    """Write the traced SHeaP stand-in to ``path`` (parents created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    module = TinySheap(standin_outputs(extra_outputs, drop, rename, widths)).eval()
    example = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        traced = torch.jit.trace(module, example, strict=False)
    torch.jit.save(traced, str(path))
    return path
