"""Head crop for SHeaP: a 224x224 RGB square around the whole head, from a face box.

Face detectors (SCRFD / BlazeFace) box roughly brows to chin and ear to ear. SHeaP was
trained on head crops that also hold the forehead, hair and some neck, so the box is grown:

- side   = HEAD_SCALE (1.6) x the longer side of the face box: leaves about 30% of the box
  size on each side, enough for hair, ears and chin under moderate head rotation, while
  the face still fills most of the crop (SHeaP needs the face large to read expression);
- centre = box centre shifted up by HEAD_SHIFT_UP (0.1) x side: the face box sits low on
  the head (it stops at the brows), so shifting toward the forehead centres the head.

Pixels outside the frame are filled by edge replication (BORDER_REPLICATE keeps the crop
free of hard black borders that a regressor may read as image content). The square is
resized to 224 with INTER_AREA when shrinking and INTER_CUBIC when enlarging.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

CROP_SIZE = 224
HEAD_SCALE = 1.6
HEAD_SHIFT_UP = 0.1


def head_square(face_box: Sequence[float], scale: float = HEAD_SCALE,
                shift_up: float = HEAD_SHIFT_UP) -> tuple[int, int, int]:
    """Integer square (x0, y0, side) of the head crop for ``face_box`` (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = (float(v) for v in face_box)
    w, h = x2 - x1, y2 - y1
    if not (w > 0 and h > 0):
        raise ValueError(f"face box must have positive width and height, got {tuple(face_box)}")
    side = max(1, int(round(scale * max(w, h))))
    cx = 0.5 * (x1 + x2)
    cy = 0.5 * (y1 + y2) - shift_up * side
    x0 = int(round(cx - side / 2.0))
    y0 = int(round(cy - side / 2.0))
    return x0, y0, side


def head_crop_224(frame_rgb: np.ndarray, face_box: Sequence[float], size: int = CROP_SIZE,
                  scale: float = HEAD_SCALE, shift_up: float = HEAD_SHIFT_UP) -> np.ndarray:
    """Cut the head square around ``face_box`` from ``frame_rgb`` (H,W,3) and resize to (size,size,3) uint8."""
    frame = np.asarray(frame_rgb)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an (H,W,3) frame, got {frame.shape}")
    if frame.dtype != np.uint8:
        frame = np.clip(frame, 0, 255).astype(np.uint8)
    h, w = frame.shape[:2]
    x0, y0, side = head_square(face_box, scale, shift_up)
    x1, y1 = x0 + side, y0 + side
    # Part of the square inside the frame, then replicate edges for the rest.
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if ix0 >= ix1 or iy0 >= iy1:
        raise ValueError(f"head square {(x0, y0, side)} lies outside the {w}x{h} frame")
    patch = frame[iy0:iy1, ix0:ix1]
    pad = (iy0 - y0, y1 - iy1, ix0 - x0, x1 - ix1)
    if any(pad):
        patch = cv2.copyMakeBorder(patch, *pad, borderType=cv2.BORDER_REPLICATE)
    interp = cv2.INTER_AREA if side >= size else cv2.INTER_CUBIC
    out = cv2.resize(np.ascontiguousarray(patch), (size, size), interpolation=interp)
    return np.ascontiguousarray(out, dtype=np.uint8)
