"""Held-out metrics of generated motion against the ground truth.

Dynamic deviation (FLAME parameter space), per region R with columns c in R:
    velocity v_t = x_{t+1} - x_t (frame to frame, per column);
    DD_R = mean over windows of mean over c in R of |std_t(v_pred[:, c]) - std_t(v_true[:, c])|,
with population std (ddof=0) over the T-1 velocities of a window. Regions: upper face =
``expression``, jaw = ``jaw``, head pose = ``global_rotation`` (the FDD/PDD/JDD-like figures).
Lower is better.

These dynamic deviations live in FLAME parameter space (radians for jaw and head pose,
expression coefficients for the upper face); the report says so under ``dd_space``.

Vertex metrics need a FLAME model file (``metrics.flame_model``; format, skinning and the
converter from FLAME 2020's pickle in training/flame_model.py). Per frame, three meshes of each
of pred and truth: the *face* (expression, jaw and eyes posed; root and neck at rest: the face
in its own frame), the *head* (every joint posed) and the *pose* (neutral expression; only root
and neck posed: head motion alone). Then
    LVE = mean over frames of the max over lip vertices of the L2 error of the face meshes;
    MHD = mean over frames of the mean over head vertices of the L2 error of the head meshes;
    FDD, JDD, PDD (vertex space, CodeTalker's upper-face dynamics deviation): per vertex of the
          region, the motion magnitude m_t = |x_t - template|^2 over the window's frames; a
          window's figure is |mean_v std_t(m_pred) - mean_v std_t(m_true)| (population std);
          FDD on the upper-face vertices of the face meshes, JDD on the lower-face vertices of
          the face meshes, PDD on the head vertices of the pose meshes; averaged over windows.
CodeTalker reports the signed gt - pred; the absolute value keeps a window's too-lively and
too-still errors from cancelling, as the parameter-space figures do. Units: the model's (metres
for FLAME). Without a model file they are skipped with the reason recorded.

By role (conversations, GDPO-Listener), from the role codes of every frame:
- ``speaking``: frames where the actor speaks (SPEAKING, BOTH): LVE and MHD (mean over those
  frames of every window) and the dynamic deviations (parameter and vertex space);
- ``listening``: frames where the actor only listens (LISTENING): the dynamic deviations only
  (distribution matching: listening motion has no ground truth to follow frame by frame).
Silent frames belong to neither (they count in the all-frames figures). A velocity counts for
a role only between two consecutive frames of that role; a window's std is over its counted
velocities, windows with fewer than :data:`MIN_VELOCITIES` are left out, and the windows'
deviations are averaged weighted by their counted velocities (with every frame counted this is
the all-frames DD_R). Vertex-space deviations of a role take the std over the role's frames
(windows with fewer than :data:`MIN_FRAMES` of them left out), weighted by those frames.

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

import torch

from pipelines.schema.conversation import actor_listens, actor_speaks
from training.flame_model import FlameModel

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


# The three meshes of each frame (module docstring): joints posed in each (training/flame_model.py order).
FACE_JOINTS, HEAD_JOINTS, POSE_JOINTS = (2, 3, 4), (0, 1, 2, 3, 4), (0, 1)
# Vertex-space deviations: name -> (region, mesh).
VERTEX_DEVIATIONS = {"fdd": ("upper_face_vertices", "face"), "jdd": ("lower_face_vertices", "face"),
                     "pdd": ("head_vertices", "pose")}
MIN_FRAMES = 2  # one frame has std 0 in any motion: it would read as a perfect match
PARAMETER_SPACE = ("FLAME parameters: dd_upper_face (expression), dd_jaw and dd_head_pose (axis-angle radians) "
                   "are FDD, JDD and PDD in parameter space")


def _meshes(face: FlameModel, motion: torch.Tensor, slices: dict[str, slice]) -> dict[str, torch.Tensor]:
    """(T, C) motion of one window -> its face, head and pose meshes, each (T, V, 3)."""
    expression = motion[:, slices["expression"]] if "expression" in slices else None
    poses = {group: motion[:, columns] for group, columns in slices.items() if group != "expression"}
    if not poses:
        poses = {"global_rotation": motion.new_zeros(len(motion), 3)}  # every joint at rest
    return {"face": face.vertices(expression, poses, FACE_JOINTS),
            "head": face.vertices(expression, poses, HEAD_JOINTS),
            "pose": face.vertices(None, poses, POSE_JOINTS)}


def _magnitude_std(mesh: torch.Tensor, template: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """mean over vertices of the population std over ``frames`` (T,) bool of |x_t - template|^2; mesh (T, Vr, 3)."""
    magnitude = (mesh[frames] - template).pow(2).sum(-1)  # (t, Vr)
    return magnitude.std(0, unbiased=False).mean()


class VertexFigures:
    """Per-window vertex figures of N windows (N, T, C), ready for any subset of windows.

    ``frame_sets``: name -> (N, T) bool frames (all frames, each role). Per window and set it
    keeps the vertex-space deviations and their frame counts; per frame, the LVE and MHD terms.
    """

    def __init__(self, face: FlameModel, pred: torch.Tensor, true: torch.Tensor, slices: dict[str, slice],
                 frame_sets: dict[str, torch.Tensor]) -> None:
        self.frame_sets = frame_sets
        count = len(pred)
        self.lip, self.head = torch.zeros(pred.shape[:2]), torch.zeros(pred.shape[:2])
        self.deviations = {name: {metric: torch.full((count,), math.nan) for metric in VERTEX_DEVIATIONS}
                           for name in frame_sets}
        regions = face.regions
        for window in range(count):
            mine, theirs = _meshes(face, pred[window], slices), _meshes(face, true[window], slices)
            lips = regions["lip_vertices"]
            self.lip[window] = (mine["face"][:, lips] - theirs["face"][:, lips]).norm(dim=-1).amax(-1)
            heads = regions["head_vertices"]
            self.head[window] = (mine["head"][:, heads] - theirs["head"][:, heads]).norm(dim=-1).mean(-1)
            for name, frames in frame_sets.items():
                chosen = frames[window]
                if int(chosen.sum()) < MIN_FRAMES:
                    continue
                for metric, (region, mesh) in VERTEX_DEVIATIONS.items():
                    vertices, template = regions[region], face.template[regions[region]]
                    self.deviations[name][metric][window] = (
                        _magnitude_std(mine[mesh][:, vertices], template, chosen)
                        - _magnitude_std(theirs[mesh][:, vertices], template, chosen)).abs()

    def summary(self, frame_set: str, windows: torch.Tensor | None = None, errors: bool = True) -> dict:
        """Vertex figures over ``windows`` (indices; None: all) and the frames of ``frame_set``:
        the deviations (weighted by counted frames) and, with ``errors``, LVE and MHD."""
        chosen = torch.arange(len(self.lip)) if windows is None else windows
        frames = self.frame_sets[frame_set][chosen]
        out: dict = {}
        if errors and frames.any():
            out["lve"], out["mhd"] = float(self.lip[chosen][frames].mean()), float(self.head[chosen][frames].mean())
        weights = frames.sum(1).float()
        for metric in VERTEX_DEVIATIONS:
            values = self.deviations[frame_set][metric][chosen]
            kept = ~values.isnan()
            out[metric] = float((values[kept] * weights[kept]).sum() / weights[kept].sum()) if kept.any() else (
                f"skipped: no window with {MIN_FRAMES} {frame_set} frames")
        return out


def _face(face_model: str | None) -> tuple[FlameModel | None, str | None]:
    """The face model, or None and the reason the vertex metrics are skipped."""
    if face_model is None:
        return None, "skipped: metrics.flame_model is not set (vertex-space LVE, MHD, FDD, PDD, JDD need a FLAME model)"
    if not Path(face_model).is_file():
        return None, f"skipped: {face_model} does not exist"
    return FlameModel(face_model), None


def vertex_figures(face: FlameModel, pred: torch.Tensor, true: torch.Tensor, roles: torch.Tensor,
                   slices: dict[str, slice]) -> VertexFigures:
    """The figures of windows (N, T, C) for all frames and each role of ``roles`` (N, T)."""
    sets = {"all": torch.ones(roles.shape, dtype=torch.bool),
            **{role: of_role(roles) for role, of_role in ROLES.items()}}
    return VertexFigures(face, pred, true, slices, sets)


def motion_metrics(pred: torch.Tensor, true: torch.Tensor, slices: dict[str, slice],
                   vertex: VertexFigures | str, windows: torch.Tensor | None = None) -> dict:
    """Every all-frames metric for windows (N, T, C): the parameter-space deviations and, given
    the vertex figures of the same windows (or the reason there are none), the vertex metrics;
    ``windows`` picks the windows of ``vertex`` that ``pred`` and ``true`` are."""
    out: dict = region_deviations(pred, true, slices)
    if isinstance(vertex, str):
        out["vertex_metrics"] = vertex
    else:
        out.update(vertex.summary("all", windows))
    return out


def role_metrics(pred: torch.Tensor, true: torch.Tensor, roles: torch.Tensor, slices: dict[str, slice],
                 vertex: VertexFigures | None, windows: torch.Tensor | None = None) -> dict[str, dict]:
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
        if vertex is not None:
            part.update(vertex.summary(role, windows, errors=role == "speaking"))
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
    face, reason = _face(face_model)
    vertex = vertex_figures(face, pred, true, roles, slices) if face is not None else None
    out = {"dd_space": PARAMETER_SPACE + ("; fdd, jdd and pdd are the vertex-space figures" if face is not None
                                          else "; no FLAME model (metrics.flame_model), so no vertex-space ones"),
           **motion_metrics(pred, true, slices, vertex if vertex is not None else reason),
           **role_metrics(pred, true, roles, slices, vertex)}
    chosen = expressive_windows(true, channel_std, expressive_share)
    out["expressive"] = {"share": expressive_share, "windows": len(chosen),
                         **motion_metrics(pred[chosen], true[chosen], slices,
                                          vertex if vertex is not None else reason, chosen),
                         **role_metrics(pred[chosen], true[chosen], roles[chosen], slices, vertex, chosen)}
    return out
