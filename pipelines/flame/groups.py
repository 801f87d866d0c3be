"""The ONE table from SHeaP's published output names to our FLAME parameter groups.

The published SHeaP TorchScript checkpoints (``model_paper.pt``, ``model_expressive.pt``;
github.com/nlml/SHeaP @cfddf49, ``sheap/load_model.py`` lines 8-17 and 84) return a dict of
tensors. The names, widths and meanings below are those the authors' own code reads:

- ``demo.py`` lines 71-77 and ``video_demo.py`` lines 329-335 pass ``shape_from_facenet``,
  ``expr``, ``eyelids`` and ``cam_trans`` to ``TinyFlame``, and the pose through
  ``pose_components_to_rotmats``;
- ``sheap/tiny_flame.py`` ``TinyFlame.forward`` docstring (lines 56-63): shape (N,300),
  expression (N,100), eyelids (N,2), translation (N,3), pose = torso (global rotation), neck,
  jaw, left eye, right eye;
- ``sheap/tiny_flame.py`` ``pose_components_to_rotmats`` (lines 149-168) stacks
  ``torso_pose``, ``neck_pose``, ``jaw_pose``, ``eye_l_pose``, ``eye_r_pose``, each (N,3)
  axis-angle, in that order.

Motion groups (GDPO-Listener design): expression, jaw, neck, eyelids, eye pose (left 3 then
right 3), global head rotation. ``torso_pose`` is the root of SHeaP's kinematic chain, i.e.
FLAME's usual global rotation, so it is our ``global_rotation``; ``neck_pose`` stays its own
group (composing it into the global rotation would count it twice). Shape (300, averaged per
clip) and camera translation (per frame) are metadata, not motion.

Our group names (``raw/<group>``, ``smooth/<group>``, ``meta/shape``, ``meta/cam_trans`` in
``<key>.flame.npz``) are what training/ reads; only the SHeaP side of this table follows the
release. Other keys a checkpoint returns are ignored.
"""

from __future__ import annotations

# group -> SHeaP output names concatenated in this order along the last axis.
MOTION_GROUPS: dict[str, tuple[str, ...]] = {
    "expression": ("expr",),
    "jaw": ("jaw_pose",),
    "neck": ("neck_pose",),
    "eyelids": ("eyelids",),
    "eye_pose": ("eye_l_pose", "eye_r_pose"),
    "global_rotation": ("torso_pose",),
}

# Per-frame width of every SHeaP output we read (tiny_flame.py lines 57-63, 151-153).
SHEAP_OUTPUT_DIMS: dict[str, int] = {
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

# Groups stored as axis-angle rotations (3 columns per rotation; eye_pose holds two).
ROTATION_GROUPS: frozenset[str] = frozenset({"jaw", "neck", "eye_pose", "global_rotation"})

# metadata key -> SHeaP output name. shape is averaged over a clip's frames (one identity per
# clip); cam_trans stays per frame (N,3).
SHAPE_KEY = "shape"
CAM_TRANS_KEY = "cam_trans"
METADATA: dict[str, str] = {
    SHAPE_KEY: "shape_from_facenet",
    CAM_TRANS_KEY: "cam_trans",
}


def group_dims(group: str) -> int:
    """Columns of ``group`` in the npz arrays."""
    return sum(SHEAP_OUTPUT_DIMS[name] for name in MOTION_GROUPS[group])


def metadata_dims(key: str) -> int:
    """Per-frame width of the SHeaP output behind metadata ``key``."""
    return SHEAP_OUTPUT_DIMS[METADATA[key]]
