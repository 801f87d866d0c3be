"""A FLAME head model for the metrics: the npz file they read, its skinning, and the converter
from the FLAME 2020 pickle.

File (``metrics.flame_model``, written by :func:`convert_flame_pickle`), float32 unless noted:
    v_template (V, 3)      the neutral head (shape coefficients 0);
    expr_dirs (V, 3, E)    expression blendshapes (FLAME's shapedirs after the shape components);
    pose_dirs (V, 3, 9(J-1)) pose correctives on the flattened (R_j - I) of joints 1..J-1;
    j_regressor (J, V)     joint locations from the shaped vertices;
    parents (J,) int64     kinematic parent of each joint, -1 for the root;
    skin_weights (V, J)    linear blend skinning weights;
    lip_vertices, upper_face_vertices, lower_face_vertices, head_vertices: int64 vertex indices
                           of the regions the metrics score (see training/metrics.py).

Joints are FLAME's five: root (our ``global_rotation``, SHeaP's torso pose), neck, jaw, left and
right eye (our ``eye_pose`` columns 0-2 and 3-5), the order of pipelines/flame/groups.py. Eyelids
have no basis in FLAME 2020 and are not posed. Vertices of a frame, with shape fixed at 0
(standard FLAME linear blend skinning):
    shaped = v_template + expr_dirs . expression;  J = j_regressor . shaped;
    posed = shaped + pose_dirs . flatten(R_1 - I, ..., R_{J-1} - I)   (R_j = Rodrigues(pose_j));
    G_0 = [R_0 | J_0], G_j = G_parent(j) [R_j | J_j - J_parent(j)];
    v = sum_j w_vj (G_j . posed_v - R^G_j J_j)   (R^G_j: the rotation of G_j).

Converter: ``talkinghead train convert-flame --flame generic_model.pkl --masks FLAME_masks.pkl
--out flame.npz`` (training/cli.py). The pickle (FLAME 2020 layout: v_template, shapedirs (V, 3, 300 + 100),
posedirs, J_regressor (scipy sparse), weights, kintree_table, f) is read without chumpy: its
chumpy arrays unpickle as plain arrays. Regions come from FLAME's mask pickle (vertex indices
per region name): lips -> lip_vertices; forehead + eye_region -> upper_face_vertices; face minus
forehead, eye region and nose -> lower_face_vertices; every vertex but the eyeballs ->
head_vertices. Neither FLAME file may be redistributed: tests use a synthetic pickle of the
same layout.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

# (motion group, first column) of the axis-angle each FLAME joint takes, in joint order.
JOINT_POSES = (("global_rotation", 0), ("neck", 0), ("jaw", 0), ("eye_pose", 0), ("eye_pose", 3))
REGIONS = ("lip_vertices", "upper_face_vertices", "lower_face_vertices", "head_vertices")
ARRAYS = ("v_template", "expr_dirs", "pose_dirs", "j_regressor", "parents", "skin_weights", *REGIONS)
FLAME_SHAPE_COMPONENTS = 300  # FLAME 2020's shapedirs: 300 identity components, then 100 expression
PICKLE_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table")


def rodrigues(axis_angle: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle -> (..., 3, 3) rotation matrices: I + sin(a) K + (1 - cos(a)) K^2."""
    angle = axis_angle.norm(dim=-1, keepdim=True)
    axis = axis_angle / angle.clamp(min=1e-12)  # a zero rotation gives K = 0, R = I
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*axis.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    sin, cos = angle.sin()[..., None], angle.cos()[..., None]
    return eye + sin * k + (1 - cos) * (k @ k)


class FlameModel:
    """The head model of the file format above, posed per frame."""

    def __init__(self, path: str | Path) -> None:
        with np.load(path) as data:
            missing = [name for name in ARRAYS if name not in data]
            if missing:
                raise ValueError(f"{path}: not a FLAME model file for the metrics, no {missing} "
                                 "(convert FLAME's pickle with: talkinghead train convert-flame)")
            arrays = {name: data[name] for name in ARRAYS}
        as_float = {name: torch.as_tensor(arrays[name], dtype=torch.float32)
                    for name in ("v_template", "expr_dirs", "pose_dirs", "j_regressor", "skin_weights")}
        self.template, self.expr_dirs, self.pose_dirs = as_float["v_template"], as_float["expr_dirs"], \
            as_float["pose_dirs"]
        self.j_regressor, self.weights = as_float["j_regressor"], as_float["skin_weights"]
        self.parents = [int(p) for p in arrays["parents"]]
        if len(self.parents) != len(JOINT_POSES) or self.parents[0] != -1:
            raise ValueError(f"{path}: {len(self.parents)} joints rooted at {self.parents[:1]}; the metrics pose "
                             f"FLAME's {len(JOINT_POSES)} joints (root, neck, jaw, eyes)")
        self.regions = {name: torch.as_tensor(arrays[name], dtype=torch.long) for name in REGIONS}

    @property
    def expression_count(self) -> int:
        return int(self.expr_dirs.shape[-1])

    def vertices(self, expression: torch.Tensor | None, poses: dict[str, torch.Tensor],
                 joints: tuple[int, ...] = tuple(range(len(JOINT_POSES)))) -> torch.Tensor:
        """(F, V, 3) vertices of F frames.

        ``expression`` (F, E') or None (neutral): columns past the model's E are ignored, missing
        ones are 0; ``poses``: group -> (F, width) axis-angles as in the motion arrays; only
        ``joints`` are posed, the others keep the rest pose (e.g. the face without head motion).
        """
        frames = next(iter(poses.values())).shape[0] if expression is None else expression.shape[0]
        shaped = self.template.expand(frames, -1, -1)
        if expression is not None:
            count = min(self.expression_count, expression.shape[-1])
            shaped = shaped + torch.einsum("vde,fe->fvd", self.expr_dirs[..., :count], expression[:, :count].float())
        axis_angles = torch.zeros(frames, len(JOINT_POSES), 3)
        for joint in joints:
            group, first = JOINT_POSES[joint]
            if group in poses:
                axis_angles[:, joint] = poses[group][:, first:first + 3].float()
        rotations = rodrigues(axis_angles)  # (F, J, 3, 3)
        located = torch.einsum("jv,fvd->fjd", self.j_regressor, shaped)
        correctives = (rotations[:, 1:] - torch.eye(3)).reshape(frames, -1)
        posed = shaped + torch.einsum("vdp,fp->fvd", self.pose_dirs, correctives)
        world_rotation, world_origin = [], []
        for joint, parent in enumerate(self.parents):
            if parent < 0:
                world_rotation.append(rotations[:, joint])
                world_origin.append(located[:, joint])
            else:
                offset = located[:, joint] - located[:, parent]
                world_rotation.append(world_rotation[parent] @ rotations[:, joint])
                world_origin.append(world_origin[parent] + (world_rotation[parent] @ offset[..., None])[..., 0])
        rotation = torch.stack(world_rotation, 1)  # (F, J, 3, 3)
        # Each joint's transform applied to rest-pose points: R^G (x - J) + origin.
        translation = torch.stack(world_origin, 1) - (rotation @ located[..., None])[..., 0]
        blended_rotation = torch.einsum("vj,fjab->fvab", self.weights, rotation)
        blended_translation = torch.einsum("vj,fja->fva", self.weights, translation)
        return (blended_rotation @ posed[..., None])[..., 0] + blended_translation


class _ChumpyArray:
    """Stands in for a pickled chumpy object. A plain ``Ch`` pickles its ``__dict__`` less two caches,
    with the array under ``x`` (mattloper/chumpy @ceebb48, chumpy/ch.py ``Ch.__getstate__``)."""

    def __setstate__(self, state: dict) -> None:
        self.state = state


class _FlameUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module.split(".")[0] == "chumpy":
            return _ChumpyArray
        return super().find_class(module, name)


def _plain(value) -> np.ndarray:
    """A pickled array (numpy, scipy sparse or chumpy) as a dense numpy array."""
    if isinstance(value, _ChumpyArray):
        if "x" not in value.state:
            raise ValueError("a chumpy object without its array ('x'): not a FLAME model array")
        value = value.state["x"]
    return np.asarray(value.toarray() if hasattr(value, "toarray") else value)


def read_flame_pickle(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a FLAME 2020 ``generic_model.pkl`` (dense numpy), without chumpy installed."""
    with open(path, "rb") as handle:
        raw = _FlameUnpickler(handle, encoding="latin1").load()
    missing = [key for key in PICKLE_KEYS if key not in raw]
    if missing:
        raise ValueError(f"{path}: no {missing}; expected FLAME's generic_model.pkl layout ({', '.join(PICKLE_KEYS)})")
    return {key: _plain(raw[key]) for key in PICKLE_KEYS}


def _indices(masks: dict, *names: str) -> np.ndarray:
    missing = [name for name in names if name not in masks]
    if missing:
        raise ValueError(f"the FLAME masks have no region {missing} (expected FLAME_masks.pkl's names)")
    return np.unique(np.concatenate([np.asarray(masks[name], dtype=np.int64).ravel() for name in names]))


def convert_flame_pickle(flame: str | Path, masks: str | Path, out: str | Path,
                         expression: int = 100, shape_components: int = FLAME_SHAPE_COMPONENTS) -> Path:
    """Write the metrics' FLAME model file (module docstring) from FLAME's model and mask pickles."""
    model = read_flame_pickle(flame)
    with open(masks, "rb") as handle:
        regions = pickle.load(handle, encoding="latin1")
    template = model["v_template"].astype(np.float32)
    vertex_count = len(template)
    shapedirs = model["shapedirs"]
    if shapedirs.shape[-1] < shape_components + expression:
        raise ValueError(f"{flame}: shapedirs has {shapedirs.shape[-1]} components, fewer than {shape_components} "
                         f"shape + {expression} expression")
    parents = model["kintree_table"][0].astype(np.int64)
    parents[0] = -1  # the root's parent is stored as the largest uint32
    joints = len(parents)
    posedirs = model["posedirs"].reshape(vertex_count, 3, -1)
    if posedirs.shape[-1] != 9 * (joints - 1):
        raise ValueError(f"{flame}: posedirs has {posedirs.shape[-1]} components; {joints} joints need "
                         f"{9 * (joints - 1)}")
    upper = _indices(regions, "forehead", "eye_region")
    lower = np.setdiff1d(_indices(regions, "face"), _indices(regions, "forehead", "eye_region", "nose"))
    head = np.setdiff1d(np.arange(vertex_count), _indices(regions, "left_eyeball", "right_eyeball"))
    out = Path(out)
    np.savez(out, v_template=template,
             expr_dirs=shapedirs[..., shape_components:shape_components + expression].astype(np.float32),
             pose_dirs=posedirs.astype(np.float32), j_regressor=model["J_regressor"].astype(np.float32),
             parents=parents, skin_weights=model["weights"].astype(np.float32),
             lip_vertices=_indices(regions, "lips"), upper_face_vertices=upper, lower_face_vertices=lower,
             head_vertices=head)
    return out
