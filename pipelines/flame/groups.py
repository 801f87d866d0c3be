"""The ONE mapping from SHeaP's output names to our FLAME parameter groups.

Design (GDPO-Listener): motion groups expression, jaw, neck, eyelids, eye pose (left 3 +
right 3), global head rotation (3); shape (300) and camera translation (3) are per-clip /
per-frame metadata, not motion.

SHeaP has no output named "global". Its FLAME variant has a torso joint at the root of the
kinematic chain (torso -> neck -> head with jaw and eyes), and its ``torso`` pose is that
root rotation, i.e. FLAME's usual "global_pose". We therefore map global head rotation to
``torso`` and keep ``neck`` as its own group (composing torso with neck would count the
neck rotation twice). The choice is the single constant ``GLOBAL_ROTATION_SOURCE``: change
it there if a checkpoint names its root pose differently (e.g. "global_pose", "pose").
"""

from __future__ import annotations

from typing import Union

SourceNames = Union[str, tuple[str, ...]]

# SHeaP output whose rotation we store as the global head rotation (see module docstring).
GLOBAL_ROTATION_SOURCE = "torso"

# group -> (SHeaP output name, or names concatenated in order along the last axis; dims)
MOTION_GROUPS: dict[str, tuple[SourceNames, int]] = {
    "expression": ("expr", 100),
    "jaw": ("jaw", 3),
    "neck": ("neck", 3),
    "eyelids": ("eyelids", 2),
    "eye_pose": (("eye_l", "eye_r"), 6),  # left eye axis-angle (3) then right eye (3)
    "global_rotation": (GLOBAL_ROTATION_SOURCE, 3),
}

# Groups stored as axis-angle rotations (3 columns per rotation; eye_pose holds two).
ROTATION_GROUPS: frozenset[str] = frozenset({"jaw", "neck", "eye_pose", "global_rotation"})

# metadata key -> (SHeaP output name, dims). shape is averaged over frames (one identity per
# clip); cam_trans stays per frame (N,3).
SHAPE_KEY = "shape"
CAM_TRANS_KEY = "cam_trans"
METADATA: dict[str, tuple[str, int]] = {
    SHAPE_KEY: ("shape", 300),
    CAM_TRANS_KEY: ("cam_trans", 3),
}


def source_names(group: str) -> tuple[str, ...]:
    """SHeaP output names that make up ``group``, in column order."""
    src = MOTION_GROUPS[group][0]
    return (src,) if isinstance(src, str) else tuple(src)


def sheap_output_dims() -> dict[str, int]:
    """Every SHeaP output we read, with its per-frame width."""
    dims: dict[str, int] = {}
    for group, (_, width) in MOTION_GROUPS.items():
        names = source_names(group)
        for name in names:
            dims[name] = width // len(names)
    for name, width in METADATA.values():
        dims[name] = width
    return dims
