"""Head crop for SHeaP: a 224x224 RGB square around the head, from the SCRFD face box.

SHeaP's rule (github.com/nlml/SHeaP @cfddf49, ``sheap/landmark_utils.py``
``landmarks_2_face_bounding_box`` lines 112-130, via ``sheap/fa_landmark_utils.py``
``detect_face_and_crop``): around the 68 face-alignment landmarks, with E their larger extent
and c the centre of their bounding rectangle, a square of half-side (1 + margin) * E / 2
centred at (c_x, c_y - shift * E / 2), clamped to the image and resized to 224x224 with
antialiasing. ``detect_face_and_crop`` defaults to margin 0.6 / shift 0.2; ``video_demo.py``
(line 176) uses margin 0.9 / shift 0.5 and smooths the box with an EMA of alpha 0.3
(lines 115, 200-218). We process video, so we follow the video demo.

Our frames carry only the SCRFD box, so the rule is rewritten in box units (S = the box's
longer side, b = its centre) from measured r = E / S and d = (c - b) / S:

    head side            = (1 + margin) * r * S          -> flame.head_scale    = (1 + margin) * r
    centre above b_y     = (shift * r / 2 - d_y) * S     -> flame.head_shift_up = shift * r / 2 - d_y
    centre x             = b_x                           (measured d_x is -0.005: none)

Measured with ``.venv/bin/python bench/measure_head_crop.py`` (SCRFD-500M through
pipelines/faces/detectors.py; dlib's 68-point iBUG 300-W predictor, the convention of the
face-alignment FAN the authors use, seeded by dlib's HOG detector; every 5th frame of the 6
GRID clips in ../shared/media/grid, 90 frames, all with both a box and landmarks):

    r   = E / S                           0.753  (sd 0.015, p5-p95 0.732-0.782; per clip 0.737-0.778)
    d_y = (landmark - box centre)_y / S  +0.127  (sd 0.006; the box reaches 0.25 S above the brows,
                                                  its bottom is at the chin)
    d_x                                  -0.005  (sd 0.003)

Video demo (margin 0.9, shift 0.5): head_scale = 1.9 x 0.753 = 1.43, head_shift_up =
0.5 x 0.753 / 2 - 0.127 = 0.06 (per-frame spread of the scale: sd 0.03). The image-demo defaults
(margin 0.6, shift 0.2) would give 1.21 and -0.05. These are the defaults of ``flame.head_scale`` / ``flame.head_shift_up`` in
pipelines/config.py; another detector (faces.backend: mediapipe) boxes the face differently
and needs its own measurement.

Smoothing: SCRFD boxes are per-frame detections, so the head square (centre and side) is
averaged over a centred window of ``flame.head_smoothing_window_s`` (0.2 s = 5 frames at
24 fps). The authors' causal EMA with alpha 0.3 lowers white-noise variance by
alpha / (2 - alpha) = 0.18, as a 5.7-frame mean does; the centred 5-frame mean gives about the
same reduction without the EMA's (1 - alpha) / alpha = 2.3-frame lag.

Two deliberate differences from the authors' code: (1) where the square leaves the frame we
keep it square and fill the outside by edge replication (the authors clamp the box to the image,
which makes it non-square and stretches the face when resized to 224x224; our 384 px clips are
1.5 x the smoothed face box, and the head square's top edge lies about 0.03 S above them); (2) on non-square images the
authors measure the x extent in units of the image width (normalised landmarks, then divided by
the aspect ratio), which equals the plain pixel rule on our square clip frames.
The square is resized with INTER_AREA when shrinking (antialiased) and INTER_CUBIC when enlarging.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from pipelines.faces.crop import smooth_params

CROP_SIZE = 224


def head_square(face_box: Sequence[float], scale: float, shift_up: float) -> tuple[float, float, float]:
    """(centre x, centre y, side) of the head square for ``face_box`` (x1, y1, x2, y2).

    side = scale x the box's longer side; the centre is the box centre moved up by
    shift_up x the box's longer side.
    """
    x1, y1, x2, y2 = (float(v) for v in face_box)
    w, h = x2 - x1, y2 - y1
    if not (w > 0 and h > 0):
        raise ValueError(f"face box must have positive width and height, got {tuple(face_box)}")
    longer = max(w, h)
    return 0.5 * (x1 + x2), 0.5 * (y1 + y2) - shift_up * longer, scale * longer


def head_squares(boxes: np.ndarray, scale: float, shift_up: float, smoothing_radius: int) -> np.ndarray:
    """(N, 3) head squares (centre x, centre y, side) of a clip's (N, 4) face boxes, averaged over
    a centred window of 2 * smoothing_radius + 1 frames (edges padded by repetition)."""
    squares = np.array([head_square(box, scale, shift_up) for box in np.asarray(boxes, dtype=np.float64)])
    return smooth_params(squares.reshape(-1, 3), smoothing_radius)


def crop_square(frame_rgb: np.ndarray, square: Sequence[float], size: int = CROP_SIZE) -> np.ndarray:
    """Cut ``square`` (centre x, centre y, side) from ``frame_rgb`` (H,W,3), replicate edges
    outside the frame, and resize to (size, size, 3) uint8."""
    frame = np.asarray(frame_rgb)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an (H,W,3) frame, got {frame.shape}")
    if frame.dtype != np.uint8:
        frame = np.clip(frame, 0, 255).astype(np.uint8)
    cx, cy, side_f = (float(v) for v in square)
    side = max(1, int(round(side_f)))
    x0, y0 = int(round(cx - side / 2.0)), int(round(cy - side / 2.0))
    x1, y1 = x0 + side, y0 + side
    h, w = frame.shape[:2]
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if ix0 >= ix1 or iy0 >= iy1:
        raise ValueError(f"head square at ({x0}, {y0}) with side {side} lies outside the {w}x{h} frame")
    patch = frame[iy0:iy1, ix0:ix1]
    pad = (iy0 - y0, y1 - iy1, ix0 - x0, x1 - ix1)
    if any(pad):
        patch = cv2.copyMakeBorder(patch, *pad, borderType=cv2.BORDER_REPLICATE)
    interp = cv2.INTER_AREA if side >= size else cv2.INTER_CUBIC
    out = cv2.resize(np.ascontiguousarray(patch), (size, size), interpolation=interp)
    return np.ascontiguousarray(out, dtype=np.uint8)
