"""Caption windows: 200-frame spans of a clip and the frames sampled from each.

Rules:

- Windows start at 0, window, 2*window, ... and are ``window`` frames long.
- A clip shorter than (or equal to) one window is a single window over the whole clip.
- A remainder at the end shorter than half a window is merged into the previous window
  (which then runs to the end of the clip); a remainder of at least half a window is a
  window of its own (shorter than ``window``).
- ``samples`` frame indices are taken uniformly within each window: the centres of
  ``samples`` equal bins, ``start + floor((i + 0.5) * length / samples)``. A window shorter
  than ``samples`` frames repeats indices (the captioner still gets ``samples`` frames).

Windows are half-open: ``(start, end)`` covers frames ``start <= i < end``.
"""

from __future__ import annotations

import math

WINDOW = 200
SAMPLES = 8


def sample_indices(start: int, end: int, samples: int = SAMPLES) -> list[int]:
    length = end - start
    if length <= 0:
        raise ValueError(f"empty window [{start}, {end})")
    return [start + min(length - 1, math.floor((i + 0.5) * length / samples)) for i in range(samples)]


def caption_windows(n_frames: int, window: int = WINDOW, samples: int = SAMPLES) -> list[tuple[int, int, list[int]]]:
    """``[(start, end, frame_indices), ...]`` covering ``range(n_frames)``; empty for no frames."""
    if window <= 0 or samples <= 0:
        raise ValueError("window and samples must be positive")
    if n_frames <= 0:
        return []
    spans: list[list[int]] = []
    for start in range(0, n_frames, window):
        end = min(start + window, n_frames)
        if spans and end - start < window / 2:
            spans[-1][1] = end  # short remainder: merge into the previous window
        else:
            spans.append([start, end])
    return [(s, e, sample_indices(s, e, samples)) for s, e in spans]
