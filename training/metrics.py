"""Held-out metrics of generated motion against the ground truth.

Dynamic deviation (FLAME parameter space), per region R with columns c in R:
    velocity v_t = x_{t+1} - x_t (frame to frame, per column);
    DD_R = mean over windows of mean over c in R of |std_t(v_pred[:, c]) - std_t(v_true[:, c])|,
with population std (ddof=0) over the T-1 velocities of a window. Regions: upper face =
``expression``, jaw = ``jaw``, head pose = ``global_rotation`` (the FDD/PDD/JDD-like figures).
Lower is better.

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

By role (conversations, GDPO-Listener), from the role codes of every frame:
- ``speaking``: frames where the actor speaks (SPEAKING, BOTH): LVE and MHD (mean over those
  frames of every window) and the dynamic deviations;
- ``listening``: frames where the actor only listens (LISTENING): the dynamic deviations only
  (distribution matching: listening motion has no ground truth to follow frame by frame).
Silent frames belong to neither (they count in the all-frames figures). A velocity counts for
a role only between two consecutive frames of that role; a window's std is over its counted
velocities, windows with fewer than :data:`MIN_VELOCITIES` are left out, and the windows'
deviations are averaged weighted by their counted velocities (with every frame counted this is
the all-frames DD_R).

Expressive subset: a window's expressiveness is the mean over channels of the temporal variance
(ddof=0) of its ground-truth motion divided channel-wise by the run's motion std (so channels
in radians and in expression coefficients count alike); the subset is the ceil(share x N)
windows of highest expressiveness (at least one; ties in window order), share =
``metrics.expressive_share``. Its figures are all of the above on those windows only. The
default share 0.25 keeps 16 of the default 64 evaluation windows: few enough to be the clearly
expressive quarter, enough for a mean over windows that one window does not dominate.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from pipelines.schema.conversation import actor_listens, actor_speaks

REGIONS = {"upper_face": "expression", "jaw": "jaw", "head_pose": "global_rotation"}
ROLES = {"speaking": actor_speaks, "listening": actor_listens}
MIN_VELOCITIES = 2  # one velocity has std 0 in any motion: it would read as a perfect match


def dynamic_deviation(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Per window (N,): mean over columns of |std_t(diff pred) - std_t(diff true)|; inputs (N, T, C)."""
    return (pred.diff(dim=1).std(1, unbiased=False) - true.diff(dim=1).std(1, unbiased=False)).abs().mean(-1)


def region_deviations(pred: torch.Tensor, true: torch.Tensor, slices: dict[str, slice]) -> dict[str, float]:
    return {f"dd_{region}": float(dynamic_deviation(pred[..., slices[group]], true[..., slices[group]]).mean())
            for region, group in REGIONS.items() if group in slices}


def _velocity_std(x: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
    """(N, C) population std over the counted velocities (N, T-1) of (N, T, C)."""
    v = x.diff(dim=1)
    w = counted.to(v.dtype)[..., None]
    n = w.sum(1).clamp(min=1)
    mean = (v * w).sum(1) / n
    return (((v - mean[:, None]) ** 2 * w).sum(1) / n).sqrt()


def masked_deviation(pred: torch.Tensor, true: torch.Tensor, frames: torch.Tensor) -> float | None:
    """The dynamic deviation over the velocities between two consecutive ``frames`` (N, T) bool
    (rules in the module docstring); None when no window has MIN_VELOCITIES of them."""
    counted = frames[:, 1:] & frames[:, :-1]
    counts = counted.sum(1)
    kept = counts >= MIN_VELOCITIES
    if not kept.any():
        return None
    per_window = (_velocity_std(pred, counted) - _velocity_std(true, counted)).abs().mean(-1)
    weights = counts[kept].to(per_window.dtype)
    return float((per_window[kept] * weights).sum() / weights.sum())


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


def vertex_frame_errors(face: BlendshapeFace, pred: torch.Tensor, true: torch.Tensor,
                        slices: dict[str, slice]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per frame (N, T): the max lip-vertex error (LVE's term) and the max upper-face deviation (MHD's)."""
    vp = face.vertices(pred[..., slices["expression"]], pred[..., slices["jaw"]])
    vt = face.vertices(true[..., slices["expression"]], true[..., slices["jaw"]])
    lip = (vp[..., face.lips, :] - vt[..., face.lips, :]).norm(dim=-1).amax(-1)
    deviation = (vp - face.template) - (vt - face.template)
    return lip, deviation[..., face.upper, :].norm(dim=-1).amax(-1)


def vertex_errors(face: BlendshapeFace, pred: torch.Tensor, true: torch.Tensor,
                  slices: dict[str, slice]) -> dict[str, float]:
    lip, upper = vertex_frame_errors(face, pred, true, slices)
    return {"lve": float(lip.mean()), "mhd": float(upper.mean())}


def _face(face_model: str | None) -> tuple[BlendshapeFace | None, str | None]:
    """The face model, or None and the reason the vertex metrics are skipped."""
    if face_model is None:
        return None, "skipped: metrics.flame_model is not set"
    if not Path(face_model).is_file():
        return None, f"skipped: {face_model} does not exist"
    return BlendshapeFace(face_model), None


def motion_metrics(pred: torch.Tensor, true: torch.Tensor, slices: dict[str, slice],
                   face_model: str | None) -> dict:
    """Every all-frames metric for windows (N, T, C) in FLAME parameter space."""
    out: dict = region_deviations(pred, true, slices)
    face, reason = _face(face_model)
    if face is None:
        out["vertex_metrics"] = reason
    else:
        out.update(vertex_errors(face, pred, true, slices))
    return out


def role_metrics(pred: torch.Tensor, true: torch.Tensor, roles: torch.Tensor, slices: dict[str, slice],
                 face: BlendshapeFace | None) -> dict[str, dict]:
    """``speaking`` and ``listening`` figures (module docstring) for windows (N, T, C) with roles (N, T)."""
    out: dict[str, dict] = {}
    for role, of_role in ROLES.items():
        frames = of_role(roles)
        part: dict = {"frames": int(frames.sum())}
        if not part["frames"]:
            out[role] = {**part, "skipped": f"no {role} frame"}
            continue
        for region, group in REGIONS.items():
            if group in slices:
                value = masked_deviation(pred[..., slices[group]], true[..., slices[group]], frames)
                part[f"dd_{region}"] = value if value is not None else (
                    f"skipped: no window with {MIN_VELOCITIES} velocities between {role} frames")
        if role == "speaking" and face is not None:
            lip, upper = vertex_frame_errors(face, pred, true, slices)
            part["lve"], part["mhd"] = float(lip[frames].mean()), float(upper[frames].mean())
        out[role] = part
    return out


def expressive_windows(true: torch.Tensor, channel_std: torch.Tensor, share: float) -> torch.Tensor:
    """Indices of the ceil(share x N) windows (N, T, C) of highest expressiveness (module docstring)."""
    score = (true / channel_std).var(1, unbiased=False).mean(-1)
    count = max(1, math.ceil(share * len(true)))
    return torch.argsort(score, descending=True, stable=True)[:count]


def evaluation_metrics(pred: torch.Tensor, true: torch.Tensor, roles: torch.Tensor, slices: dict[str, slice],
                       face_model: str | None, channel_std: torch.Tensor, expressive_share: float) -> dict:
    """The report of an evaluation: all frames, by role, and the same on the expressive subset."""
    face, _ = _face(face_model)
    out = {**motion_metrics(pred, true, slices, face_model), **role_metrics(pred, true, roles, slices, face)}
    chosen = expressive_windows(true, channel_std, expressive_share)
    out["expressive"] = {"share": expressive_share, "windows": len(chosen),
                         **motion_metrics(pred[chosen], true[chosen], slices, face_model),
                         **role_metrics(pred[chosen], true[chosen], roles[chosen], slices, face)}
    return out
