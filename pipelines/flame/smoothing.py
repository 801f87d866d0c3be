"""Savitzky-Golay smoothing of FLAME parameter groups over time.

``savgol_groups`` filters every group along time (axis 0) with ``scipy.signal.savgol_filter``
(``mode="interp"``: the edges are fitted by the same local polynomial, so they stay finite
and unbiased for polynomial motion).

Window: ``window_s * fps`` frames rounded to the nearest odd number, and at least the
smallest odd number >= ``polyorder + 2``. A clip shorter than that window uses the largest
odd window <= its length that is still > ``polyorder``; if no such window exists (e.g. 2
frames with polyorder 2) the data is returned unchanged (a copy).

Rotation groups (``groups.ROTATION_GROUPS``, axis-angle, 3 columns per rotation) are not
filtered component-wise: axis-angle jumps where the angle crosses pi (a vector of length pi
becomes the opposite vector), and filtering across that jump tears the rotation. Each rotation
is turned into a unit quaternion, the sequence is made sign-continuous (q_t is flipped where
dot(q_t, q_{t-1}) < 0), the 4 components are filtered and renormalised, and converted back
to axis-angle. Of the two axis-angle vectors for the result (angle theta about u, or
theta - 2 pi about u) the one closer to the input frame is returned, so the smoothed values
stay on the same branch as the input and a stored sequence has no spurious +-2 pi jumps.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Optional

import numpy as np
from scipy.signal import savgol_filter

from pipelines.flame.groups import ROTATION_GROUPS

_EPS = 1e-8


def savgol_window(n_frames: int, window_s: float, polyorder: int, fps: float) -> Optional[int]:
    """Window length in frames for a clip of ``n_frames``, or None when the clip is too short to filter."""
    if polyorder < 0:
        raise ValueError(f"polyorder must be >= 0, got {polyorder}")
    if not (fps > 0 and window_s > 0):
        raise ValueError(f"window_s and fps must be positive, got {window_s}, {fps}")
    target = window_s * fps
    window = 2 * int(np.floor((target - 1) / 2.0 + 0.5)) + 1  # nearest odd number
    minimum = polyorder + 2 + (polyorder + 1) % 2  # smallest odd >= polyorder + 2
    window = max(window, minimum)
    if n_frames < window:
        window = n_frames if n_frames % 2 == 1 else n_frames - 1
        if window <= polyorder:
            return None
    return window


# ---------------------------------------------------------------- rotations (numpy)

def axis_angle_to_quat(rotvec: np.ndarray) -> np.ndarray:
    """(...,3) axis-angle -> (...,4) unit quaternion (w, x, y, z)."""
    v = np.asarray(rotvec, dtype=np.float64)
    angle = np.linalg.norm(v, axis=-1, keepdims=True)
    half = 0.5 * angle
    small = angle < 1e-6
    # sin(angle/2)/angle, with its Taylor series near zero
    safe = np.where(small, 1.0, angle)
    k = np.where(small, 0.5 - angle ** 2 / 48.0, np.sin(half) / safe)
    return np.concatenate([np.cos(half), v * k], axis=-1)


def quat_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """(...,4) quaternion (w, x, y, z), any norm -> (...,3) axis-angle with angle in [0, pi]."""
    q = np.asarray(quat, dtype=np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), _EPS)
    q = np.where(q[..., :1] < 0, -q, q)  # w >= 0: angle in [0, pi]
    w, xyz = q[..., :1], q[..., 1:]
    s = np.linalg.norm(xyz, axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(s, w)
    small = s < 1e-7
    k = np.where(small, 2.0 / np.maximum(w, _EPS), angle / np.where(small, 1.0, s))
    return xyz * k


def geodesic_angle(rotvec_a: np.ndarray, rotvec_b: np.ndarray) -> np.ndarray:
    """Angle (radians, in [0, pi]) of the relative rotation between two axis-angle arrays (...,3)."""
    qa, qb = axis_angle_to_quat(rotvec_a), axis_angle_to_quat(rotvec_b)
    dot = np.abs(np.sum(qa * qb, axis=-1))
    return 2.0 * np.arccos(np.clip(dot, 0.0, 1.0))


def make_sign_continuous(quat: np.ndarray) -> np.ndarray:
    """Flip quaternions along axis 0 so that consecutive ones have a non-negative dot product."""
    q = np.array(quat, dtype=np.float64, copy=True)
    for t in range(1, q.shape[0]):
        if np.dot(q[t], q[t - 1]) < 0:
            q[t] = -q[t]
    return q


def _nearest_branch(rotvec: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per row, rotvec or its equivalent theta - 2 pi about the same axis, whichever is closer to reference."""
    angle = np.linalg.norm(rotvec, axis=-1, keepdims=True)
    axis = rotvec / np.maximum(angle, _EPS)
    alt = rotvec - 2.0 * np.pi * axis
    use_alt = (np.linalg.norm(alt - reference, axis=-1) < np.linalg.norm(rotvec - reference, axis=-1))
    use_alt &= angle[..., 0] > _EPS
    return np.where(use_alt[..., None], alt, rotvec)


def smooth_rotations(rotvecs: np.ndarray, window: int, polyorder: int) -> np.ndarray:
    """Smooth (N, 3k) axis-angle columns (k rotations) through sign-continuous quaternions."""
    data = np.asarray(rotvecs, dtype=np.float64)
    if data.ndim != 2 or data.shape[1] % 3:
        raise ValueError(f"rotation group must be (N, 3k), got {data.shape}")
    out = np.empty_like(data)
    for c in range(0, data.shape[1], 3):
        rv = data[:, c:c + 3]
        q = make_sign_continuous(axis_angle_to_quat(rv))
        qs = savgol_filter(q, window, polyorder, axis=0, mode="interp")
        qs /= np.maximum(np.linalg.norm(qs, axis=-1, keepdims=True), _EPS)
        out[:, c:c + 3] = _nearest_branch(quat_to_axis_angle(qs), rv)
    return out


# ---------------------------------------------------------------- groups

def savgol_groups(motion: Mapping[str, np.ndarray], window_s: float, polyorder: int, fps: float,
                  rotation_groups: Iterable[str] = ROTATION_GROUPS) -> dict[str, np.ndarray]:
    """Savitzky-Golay filter each group of ``motion`` ((N, dims) arrays) along time; returns new arrays.

    Output dtype follows the input (float32 from SHeaP). Groups named in ``rotation_groups``
    are smoothed as rotations (see module docstring).
    """
    rotation_groups = frozenset(rotation_groups)
    result: dict[str, np.ndarray] = {}
    for group, values in motion.items():
        arr = np.asarray(values)
        dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.float32
        n = arr.shape[0] if arr.ndim else 0
        window = savgol_window(n, window_s, polyorder, fps) if n else None
        if window is None:
            result[group] = np.array(arr, dtype=dtype, copy=True)
            continue
        if group in rotation_groups:
            flat = arr.reshape(n, -1)
            smoothed = smooth_rotations(flat, window, polyorder).reshape(arr.shape)
        else:
            smoothed = savgol_filter(arr.astype(np.float64), window, polyorder, axis=0, mode="interp")
        result[group] = smoothed.astype(dtype, copy=False)
    return result
