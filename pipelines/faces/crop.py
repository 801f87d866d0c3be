"""The square crop rule and its temporal smoothing.

Rule (DESIGN.md): a square centred on the face whose side is the box's longer side times
``scale`` (a 224x168 box gives 224, then 336). Where the square leaves the frame it is
shifted back inside; only when it is larger than the frame's shorter side is it shrunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SquareCrop:
    x: int
    y: int
    side: int

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        return rgb[self.y: self.y + self.side, self.x: self.x + self.side]


def square_params(box: tuple[float, float, float, float], scale: float) -> tuple[float, float, float]:
    """(centre x, centre y, side) of the enlarged square, before fitting to the frame."""
    x1, y1, x2, y2 = box
    return (x1 + x2) / 2.0, (y1 + y2) / 2.0, max(x2 - x1, y2 - y1) * scale


def fit_square(cx: float, cy: float, side: float, frame_w: int, frame_h: int) -> SquareCrop:
    """Integer square of (about) ``side`` centred at (cx, cy), shrunk/shifted to lie inside the frame."""
    side_px = int(round(min(side, frame_w, frame_h)))
    side_px = max(1, side_px)
    x = int(round(cx - side_px / 2.0))
    y = int(round(cy - side_px / 2.0))
    x = min(max(x, 0), frame_w - side_px)
    y = min(max(y, 0), frame_h - side_px)
    return SquareCrop(x, y, side_px)


def square_crop(box: tuple[float, float, float, float], frame_w: int, frame_h: int, scale: float) -> SquareCrop:
    return fit_square(*square_params(box, scale), frame_w, frame_h)


def window_mean(params: np.ndarray, i: int, radius: int) -> np.ndarray:
    """Centred moving average of row ``i`` of (N, 3) square parameters, edges padded by repetition.

    Only rows up to ``i + radius`` are read, which is what lets the streaming cropper
    emit a frame as soon as its look-ahead is known.
    """
    idx = np.clip(np.arange(i - radius, i + radius + 1), 0, len(params) - 1)
    return params[idx].mean(axis=0)


def smooth_params(params: np.ndarray, radius: int) -> np.ndarray:
    """The whole (N, 3) series smoothed with :func:`window_mean`."""
    params = np.asarray(params, dtype=np.float64)
    if radius <= 0 or len(params) < 2:
        return params.copy()
    return np.stack([window_mean(params, i, radius) for i in range(len(params))])


def boxes_in_crop(table: np.ndarray, size_px: int) -> np.ndarray:
    """Face boxes in a clip's crop pixels from a ``boxes.npy`` table (source-pixel boxes in
    columns 1-4, the crop square x, y, side in columns 6-8)."""
    x1, y1, x2, y2 = table[:, 1], table[:, 2], table[:, 3], table[:, 4]
    cx, cy, side = table[:, 6], table[:, 7], table[:, 8]
    scale = size_px / side
    return np.stack([(x1 - cx) * scale, (y1 - cy) * scale, (x2 - cx) * scale, (y2 - cy) * scale], axis=1)
