"""Head orientation from SHeaP's global rotation, replacing the five-keypoint estimate where FLAME ran.

The face stage estimates yaw/pitch/roll from the detector's five landmarks
(:mod:`pipelines.faces.quality`), which is all there is before FLAME. Once SHeaP has fitted a
full head, its global rotation (``torso_pose``, the root of FLAME's kinematic chain; see
:mod:`pipelines.flame.groups`) is the better estimate, so the FLAME stage records the
orientation from it. SHeaP predicts the head in the camera's view (a fixed camera, the head's
translation in ``cam_trans``), so the rotation is relative to the line of sight.

FLAME's frame has y up and z toward the camera; the decomposition ``R = Ry(a) Rx(b) Rz(c)``
(yaw about the vertical axis, pitch about the horizontal, roll about the line of sight) is the
same as in :func:`pipelines.faces.quality.angles_from_matrix`. Changing between FLAME's frame
and the image frame (y down, z away) flips the signs of yaw and pitch, not their sizes, and
the labels depend only on the sizes.
"""

from __future__ import annotations

from collections import Counter

import cv2
import numpy as np

from pipelines.config import QualityConfig
from pipelines.faces.quality import orientation_label


def angles_from_axis_angle(axis_angle: np.ndarray) -> np.ndarray:
    """(N, 3) axis-angle rotations -> (N, 3) yaw, pitch, roll in degrees (FLAME's frame)."""
    out = np.empty((len(axis_angle), 3), dtype=np.float64)
    for row, vector in enumerate(np.asarray(axis_angle, dtype=np.float64).reshape(-1, 3)):
        r, _ = cv2.Rodrigues(vector)
        pitch = np.arcsin(np.clip(-r[1, 2], -1.0, 1.0))
        yaw = np.arctan2(r[0, 2], r[2, 2])
        roll = np.arctan2(r[1, 0], r[1, 1])
        out[row] = np.degrees([yaw, pitch, roll])
    return out


def flame_orientation(global_rotation: np.ndarray, config: QualityConfig) -> tuple[dict, dict, list[str]]:
    """(decision numbers, payload, flags) of a clip from its per-frame global rotation (N, 3).

    Flag ``head_orientation_outside_allowed`` when the clip's majority label is not in
    ``config.allowed_orientations``: the gate itself runs before FLAME (on the keypoint
    estimate), and a clip that reaches FLAME is kept; the flag says the better estimate
    disagrees.
    """
    angles = angles_from_axis_angle(global_rotation)
    labels = [orientation_label(yaw, pitch, config) for yaw, pitch, _ in angles]
    counts = Counter(labels)
    majority = max(sorted(counts), key=lambda label: counts[label])
    medians = np.median(angles, axis=0)
    numbers = {"orientation": majority, "yaw_deg_median": round(float(medians[0]), 2),
               "pitch_deg_median": round(float(medians[1]), 2)}
    payload = {"source": "flame_global_rotation", "labels": dict(sorted(counts.items())),
               "yaw_deg": [round(float(v), 2) for v in angles[:, 0]],
               "pitch_deg": [round(float(v), 2) for v in angles[:, 1]],
               "roll_deg": [round(float(v), 2) for v in angles[:, 2]]}
    flags = [] if majority in config.allowed_orientations else ["head_orientation_outside_allowed"]
    return numbers, payload, flags
