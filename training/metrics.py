"""Held-out metrics of generated motion against the ground truth.

Dynamic deviation (FLAME parameter space), per region R with columns c in R:
    velocity v_t = x_{t+1} - x_t (frame to frame, per column);
    DD_R = mean over windows of mean over c in R of |std_t(v_pred[:, c]) - std_t(v_true[:, c])|,
with population std (ddof=0) over the T-1 velocities of a window. Regions: upper face =
``expression``, jaw = ``jaw``, head pose = ``global_rotation``. Lower is better.

Vertex errors need a linear blendshape face model file (``metrics.flame_model``), an .npz with
    v_template (V, 3); expr_dirs (V, 3, E) acting on the first E expression coefficients;
    jaw_dirs (V, 3, 3) acting linearly on the jaw axis-angle; lip_vertices (int indices);
    upper_face_vertices (int indices).
Vertices per frame: v_template + expr_dirs . expr + jaw_dirs . jaw (a linearised FLAME; a
real FLAME model is converted to this form around the neutral pose). Then
    LVE = mean over frames of the max over lip vertices of the L2 vertex error;
    MHD = mean over frames of the max over upper-face vertices of the L2 norm of the motion
          deviation (pred - template) - (true - template),
both averaged over windows. Without a model file they are skipped with the reason recorded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

REGIONS = {"upper_face": "expression", "jaw": "jaw", "head_pose": "global_rotation"}


def dynamic_deviation(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Per window (N,): mean over columns of |std_t(diff pred) - std_t(diff true)|; inputs (N, T, C)."""
    return (pred.diff(dim=1).std(1, unbiased=False) - true.diff(dim=1).std(1, unbiased=False)).abs().mean(-1)


def region_deviations(pred: torch.Tensor, true: torch.Tensor, slices: dict[str, slice]) -> dict[str, float]:
    return {f"dd_{region}": float(dynamic_deviation(pred[..., slices[group]], true[..., slices[group]]).mean())
            for region, group in REGIONS.items() if group in slices}


class BlendshapeFace:
    """The linear face model of the file format above."""

    def __init__(self, path: str | Path) -> None:
        with np.load(path) as data:
            self.template = torch.as_tensor(data["v_template"], dtype=torch.float32)
            self.expr_dirs = torch.as_tensor(data["expr_dirs"], dtype=torch.float32)
            self.jaw_dirs = torch.as_tensor(data["jaw_dirs"], dtype=torch.float32)
            self.lips = torch.as_tensor(data["lip_vertices"], dtype=torch.long)
            self.upper = torch.as_tensor(data["upper_face_vertices"], dtype=torch.long)

    def vertices(self, expr: torch.Tensor, jaw: torch.Tensor) -> torch.Tensor:
        """(..., E') expression and (..., 3) jaw -> (..., V, 3); extra expression columns are ignored."""
        e = self.expr_dirs.shape[-1]
        return (self.template + torch.einsum("vde,...e->...vd", self.expr_dirs, expr[..., :e].float())
                + torch.einsum("vdj,...j->...vd", self.jaw_dirs, jaw.float()))


def vertex_errors(face: BlendshapeFace, pred: torch.Tensor, true: torch.Tensor,
                  slices: dict[str, slice]) -> dict[str, float]:
    vp = face.vertices(pred[..., slices["expression"]], pred[..., slices["jaw"]])
    vt = face.vertices(true[..., slices["expression"]], true[..., slices["jaw"]])
    lve = (vp[..., face.lips, :] - vt[..., face.lips, :]).norm(dim=-1).amax(-1).mean()
    deviation = (vp - face.template) - (vt - face.template)
    mhd = deviation[..., face.upper, :].norm(dim=-1).amax(-1).mean()
    return {"lve": float(lve), "mhd": float(mhd)}


def motion_metrics(pred: torch.Tensor, true: torch.Tensor, slices: dict[str, slice],
                   face_model: str | None) -> dict:
    """Every metric for windows (N, T, C) in FLAME parameter space."""
    out: dict = region_deviations(pred, true, slices)
    if face_model is None:
        out["vertex_metrics"] = "skipped: metrics.flame_model is not set"
    elif not Path(face_model).is_file():
        out["vertex_metrics"] = f"skipped: {face_model} does not exist"
    else:
        out.update(vertex_errors(BlendshapeFace(face_model), pred, true, slices))
    return out
