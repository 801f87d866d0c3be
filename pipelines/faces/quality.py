"""Per-face quality measures taken in the face stage's decode loop: size, sharpness, head pose.

:func:`measure_face` is called once per detection, so it only touches the face's own box
(a 1080p frame is never converted or filtered as a whole). The quality stage
(:mod:`pipelines.quality.stage`) turns the per-frame measures into pass/fail gates.

Head pose conventions (degrees, camera frame: x to image-right, y down, z away from camera):

* ``yaw`` > 0: the face turns so its nose moves toward the image's right.
* ``pitch`` > 0: the face tips up (chin up, nose moves toward the top of the image).
* ``roll`` > 0: the face rotates clockwise as the image shows it (its image-right eye lower).

The rotation of the head is ``R = Ry(-yaw) @ Rx(-pitch) @ Rz(roll)`` applied to the model
points below (see :func:`rotation_matrix`); :func:`head_pose` fits it with ``cv2.solvePnP``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from pipelines.config import QualityConfig
from pipelines.faces.detectors import Detection
from pipelines.media.decode import Frame, area_shrunk

Orientation = Literal["frontal", "side", "profile"]

# Generic 3D face, in the point order SCRFD gives (image-left eye, image-right eye, nose tip,
# image-left mouth corner, image-right mouth corner), in the camera-like frame above.
# Nose tip, mouth corners and depths are the generic model of S. Mallick, "Head Pose
# Estimation using OpenCV and Dlib", LearnOpenCV 2016 (nose (0,0,0), eye outer corners
# (+-225, 170, -135), mouth corners (+-150, -150, -125), y up, z toward the camera; here y and
# z are flipped). SCRFD's eye points are eye centres, not outer corners: x is scaled by the
# adult interpupillary / outer-canthal width ratio, about 63 mm / 90 mm (Farkas, Anthropometry
# of the Head and Face, 1994), to +-157.5.
MODEL_POINTS = np.array([
    [-157.5, -170.0, 135.0],
    [157.5, -170.0, 135.0],
    [0.0, 0.0, 0.0],
    [-150.0, 150.0, 125.0],
    [150.0, 150.0, 125.0],
], dtype=np.float64)
# MediaPipe's mouth "corners" are both the mouth centre: fit that one point instead.
MOUTH_CENTRE = np.array([0.0, 150.0, 125.0])
_MOUTH_CENTRE_MODEL = np.vstack([MODEL_POINTS[:3], MOUTH_CENTRE])
# The camera is unknown: assume the subject stands about 12 eye-to-mouth distances away
# (~0.8 m for a 65 mm eye-mouth distance). Under weak perspective the angles barely depend on it.
FOCAL_PER_FACE = 12.0

# Sharpness is measured on the face box at native resolution, downscaled (never upscaled) so
# its longer side is at most this. Never upscaling keeps the sharpness gate independent of
# the size gate: a small face with sharp source pixels measures sharp, and its enlargement is
# the size gate's business. Downscaling a large face to about the size a face has in the
# 384 px training crop measures blur as training sees it (sigma 2 px on a 600 px face is
# invisible after the crop shrinks it 3x) and bounds the cost.
# Measured (bench/measure_face_quality.py, 150 GRID frames): as recorded 82-183 (median 139);
# ffmpeg gblur sigma 2: 14-31, sigma 4: 8-16, sigma 8: 5-9. GRID scaled 2x (a 325 px face,
# soft from the interpolation) measures 45-92, scaled 0.35x (52 px, sharp pixels) 560-1020.
SHARPNESS_MAX_SIDE_PX = 160


@dataclass(frozen=True)
class FaceMeasure:
    face_px: float  # longer box side in source pixels
    sharpness: float  # variance of the Laplacian of the grey face box (see SHARPNESS_MAX_SIDE_PX)
    yaw_deg: float  # NaN when the detection has no keypoints
    pitch_deg: float
    roll_deg: float


def _rx(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float64)


def _ry(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.float64)


def _rz(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)


def rotation_matrix(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """The head rotation for these angles (module docstring conventions)."""
    return _ry(-math.radians(yaw_deg)) @ _rx(-math.radians(pitch_deg)) @ _rz(math.radians(roll_deg))


def angles_from_matrix(r: np.ndarray) -> tuple[float, float, float]:
    """Inverse of :func:`rotation_matrix`: (yaw, pitch, roll) in degrees.

    For R = Ry(a) Rx(b) Rz(c): R[1,2] = -sin b, R[0,2]/R[2,2] = tan a, R[1,0]/R[1,1] = tan c.
    """
    b = math.asin(max(-1.0, min(1.0, -float(r[1, 2]))))
    a = math.atan2(float(r[0, 2]), float(r[2, 2]))
    c = math.atan2(float(r[1, 0]), float(r[1, 1]))
    return -math.degrees(a), -math.degrees(b), math.degrees(c)


def head_pose(keypoints) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from five 2D landmarks in SCRFD's order.

    A PnP fit (SQPnP: a global solver, so no starting guess can leave it in a mirrored
    minimum) of :data:`MODEL_POINTS` with an assumed pinhole camera centred on the landmarks,
    so the angles are relative to the line of sight to the face, which is what the image shows
    (a face off to the side looking at the camera is frontal). Coinciding mouth corners
    (MediaPipe) are fitted as the one mouth centre. Errors on projected model rotations
    (bench/measure_face_quality.py): about 1 deg mean, 2.3 deg worst for yaw up to 60 deg at
    a distance of ~8 face heights; 2 deg mean, 6 deg worst at ~3 face heights (strong
    perspective, unlike the assumed camera).
    """
    image = np.asarray(keypoints, dtype=np.float64).reshape(5, 2)
    model = MODEL_POINTS
    # np.allclose(image[3], image[4], atol=1e-3), without its per-call overhead (called per frame).
    if (np.abs(image[3] - image[4]) <= 1e-3 + 1e-5 * np.abs(image[4])).all():
        image = np.vstack([image[:3], image[3:4]])
        model = _MOUTH_CENTRE_MODEL
    eyes = (image[0] + image[1]) / 2
    mouth_px = image[3:].mean(axis=0)
    scale = max(math.hypot(*(image[1] - image[0])), math.hypot(*(mouth_px - eyes)), 1.0)
    focal = FOCAL_PER_FACE * scale
    centre = image.mean(axis=0)
    camera = np.array([[focal, 0, centre[0]], [0, focal, centre[1]], [0, 0, 1]], dtype=np.float64)
    ok, rvec, _ = cv2.solvePnP(model, image, camera, None, flags=cv2.SOLVEPNP_SQPNP)
    if not ok:
        return math.nan, math.nan, math.nan
    return angles_from_matrix(cv2.Rodrigues(rvec)[0])


def orientation_label(yaw_deg: float, pitch_deg: float, config: QualityConfig) -> Orientation:
    """frontal within ``frontal_max_yaw_deg`` (and ``max_pitch_deg``), side up to
    ``side_max_yaw_deg`` (a head tipped past ``max_pitch_deg`` is side at best), else profile."""
    if not (math.isfinite(yaw_deg) and math.isfinite(pitch_deg)):
        raise ValueError(f"no orientation for a non-finite pose (yaw {yaw_deg}, pitch {pitch_deg})")
    yaw, pitch = abs(yaw_deg), abs(pitch_deg)
    if yaw <= config.frontal_max_yaw_deg and pitch <= config.max_pitch_deg:
        return "frontal"
    if yaw <= config.side_max_yaw_deg:
        return "side"
    return "profile"


def _sharpness_box(box: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    """The face box grown to whole pixels and clipped to the frame."""
    return (max(int(math.floor(box[0])), 0), max(int(math.floor(box[1])), 0),
            min(int(math.ceil(box[2])), width), min(int(math.ceil(box[3])), height))


def _reduction(width: int, height: int) -> int:
    """The integer area reduction a face box gets first (see SHARPNESS_MAX_SIDE_PX); 1: none."""
    longer = max(width, height)
    return longer // SHARPNESS_MAX_SIDE_PX if longer > SHARPNESS_MAX_SIDE_PX else 1


def _grey_sharpness(grey: np.ndarray, width: int, height: int) -> float:
    """The measure on a width x height face box's grey pixels, already area-reduced by
    :func:`_reduction` (an integer factor: OpenCV's fast path; a fractional INTER_AREA on a 500 px
    face costs ~1 ms): the small remainder to the exact size, then the Laplacian's variance."""
    longer = max(width, height)
    if longer > SHARPNESS_MAX_SIDE_PX:
        factor = SHARPNESS_MAX_SIDE_PX / longer
        size = (max(3, round(width * factor)), max(3, round(height * factor)))
        # At most a 2x reduction is left: bilinear is close to area here and ~4x cheaper.
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_LINEAR)
    # meanStdDev on the int16 Laplacian: numpy's .var() on a float copy costs more than the filter.
    std = cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_16S, ksize=1))[1]
    return float(std[0, 0]) ** 2


def _box_sharpness(face_rgb: np.ndarray) -> float:
    """Variance of the Laplacian of the grey face box pixels (see SHARPNESS_MAX_SIDE_PX)."""
    height, width = face_rgb.shape[:2]
    if width < 3 or height < 3:
        return 0.0
    grey = cv2.cvtColor(np.ascontiguousarray(face_rgb), cv2.COLOR_RGB2GRAY)
    return _grey_sharpness(area_shrunk(grey, _reduction(width, height)), width, height)


def face_sharpness(rgb: np.ndarray, box: tuple[float, float, float, float]) -> float:
    """Variance of the Laplacian (Pech-Pacheco et al., ICPR 2000) of the grey face box."""
    x1, y1, x2, y2 = _sharpness_box(box, rgb.shape[1], rgb.shape[0])
    return _box_sharpness(rgb[max(y1, 0): max(y2, y1), max(x1, 0): max(x2, x1)])


def frame_face_sharpness(frame: Frame, box: tuple[float, float, float, float]) -> float:
    """:func:`face_sharpness` on a decoded frame, from the face box's grey pixels at full resolution
    (the measure is calibrated on source pixels, quality.min_sharpness): read from the luma plane
    where the frame's colours allow, area-reduced there before the grey mapping
    (:meth:`Frame.region_grey`), no RGB conversion."""
    x1, y1, x2, y2 = _sharpness_box(box, frame.width, frame.height)
    width, height = x2 - x1, y2 - y1
    if width < 3 or height < 3:
        return 0.0
    return _grey_sharpness(frame.region_grey(x1, y1, x2, y2, shrink=_reduction(width, height)), width, height)


def measure_face(rgb: np.ndarray, detection: Detection) -> FaceMeasure:
    """Size, sharpness and head pose of one detected face in an RGB frame."""
    pose = head_pose(detection.keypoints) if detection.keypoints is not None else (math.nan,) * 3
    return FaceMeasure(face_px=float(detection.longer_side), sharpness=face_sharpness(rgb, detection.box),
                       yaw_deg=pose[0], pitch_deg=pose[1], roll_deg=pose[2])


def measure_frame_face(frame: Frame, detection: Detection) -> FaceMeasure:
    """:func:`measure_face` on a decoded frame (source-pixel detection): the pose needs only the
    keypoints, the sharpness reads the face box at full resolution."""
    pose = head_pose(detection.keypoints) if detection.keypoints is not None else (math.nan,) * 3
    return FaceMeasure(face_px=float(detection.longer_side), sharpness=frame_face_sharpness(frame, detection.box),
                       yaw_deg=pose[0], pitch_deg=pose[1], roll_deg=pose[2])
