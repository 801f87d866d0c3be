"""Channel-wise normalisation statistics of the motion arrays, computed from the shards.

mean and std are over every frame of every usable clip (population std, ddof=0, in float64),
with std floored at ``DataConfig.stats_eps`` so constant channels stay finite. They are
saved as ``stats.json`` in the run directory and inside every checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from training.config import DataConfig
from training.data import EXPRESSION_GROUP, finite_clips

STATS_FILE = "stats.json"


@dataclass
class MotionStats:
    groups: tuple[str, ...]
    dims: dict[str, int]
    mean: np.ndarray  # (channels,)
    std: np.ndarray  # (channels,)
    frames: int

    def normalise(self, motion: torch.Tensor) -> torch.Tensor:
        return (motion - self._t(self.mean, motion)) / self._t(self.std, motion)

    def denormalise(self, motion: torch.Tensor) -> torch.Tensor:
        return motion * self._t(self.std, motion) + self._t(self.mean, motion)

    @staticmethod
    def _t(values: np.ndarray, like: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(values, dtype=like.dtype, device=like.device)

    def as_dict(self) -> dict:
        return {"groups": list(self.groups), "dims": self.dims, "mean": self.mean.tolist(),
                "std": self.std.tolist(), "frames": self.frames}

    @classmethod
    def from_dict(cls, data: dict) -> MotionStats:
        return cls(tuple(data["groups"]), dict(data["dims"]), np.asarray(data["mean"], np.float64),
                   np.asarray(data["std"], np.float64), int(data["frames"]))

    def save(self, folder: Path) -> Path:
        path = Path(folder) / STATS_FILE
        path.write_text(json.dumps(self.as_dict(), indent=1))
        return path

    @classmethod
    def load(cls, folder: Path) -> MotionStats:
        return cls.from_dict(json.loads((Path(folder) / STATS_FILE).read_text()))


def compute_stats(config: DataConfig, spec: str | None = None) -> MotionStats:
    total = squares = None
    frames = 0
    dims: dict[str, int] = {}
    for clip in finite_clips(spec or config.shards, config, per_node=False):
        values = clip.motion.astype(np.float64)
        if total is None:
            total, squares = np.zeros(values.shape[1]), np.zeros(values.shape[1])
            dims = _group_widths(clip.record.flame, config)
        total += values.sum(axis=0)
        squares += (values ** 2).sum(axis=0)
        frames += len(values)
    if not frames:
        raise ValueError(f"no clip with FLAME arrays and at least {config.window_frames} frames in {spec or config.shards}")
    mean = total / frames
    std = np.sqrt(np.maximum(squares / frames - mean ** 2, 0.0))
    return MotionStats(tuple(config.groups), dims, mean, np.maximum(std, config.stats_eps), frames)


def _group_widths(flame: dict | None, config: DataConfig) -> dict[str, int]:
    groups = (flame or {}).get("groups") or {}
    missing = [g for g in config.groups if g not in groups]
    if missing:
        raise ValueError(f"sample record lacks FLAME group widths for {missing}")
    widths = {g: int(groups[g]) for g in config.groups}
    keep = config.expression_coefficients
    if keep is not None and EXPRESSION_GROUP in widths:
        if widths[EXPRESSION_GROUP] < keep:
            raise ValueError(f"data.expression_coefficients {keep} > the {widths[EXPRESSION_GROUP]} expression "
                             "coefficients the shards store")
        widths[EXPRESSION_GROUP] = keep
    return widths
