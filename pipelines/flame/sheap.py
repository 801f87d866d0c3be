"""SHeaP backend: a TorchScript checkpoint that maps 224x224 RGB head crops to FLAME parameters.

SHeaP (CC BY-NC 4.0, about 350 MB) is not downloadable here and never downloaded by this
code: it is read from a path given by configuration. Input (N,3,224,224) RGB float in [0,1];
outputs (per frame) expr (100), shape (300), jaw / neck / torso / eye_l / eye_r poses (3 each,
axis-angle), eyelids (2), cam_trans (3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from pipelines.flame.groups import (
    CAM_TRANS_KEY,
    METADATA,
    MOTION_GROUPS,
    SHAPE_KEY,
    source_names,
)

# Order of the outputs when a module returns a tuple/list instead of a dict. A module returning
# a dict (SHeaP's export does) is read by name and this order is not used.
SHEAP_OUTPUT_ORDER: tuple[str, ...] = (
    "expr", "shape", "jaw", "neck", "torso", "eye_l", "eye_r", "eyelids", "cam_trans",
)

INPUT_SIZE = 224

OBTAIN_HINT = (
    "SHeaP is not bundled and never downloaded: get the TorchScript checkpoint from the SHeaP "
    "authors (github.com/nlml/sheap, CC BY-NC 4.0, about 350 MB) and put it at this path, or "
    "point the model directory (TALKINGHEAD_MODEL_DIR / config) at a folder holding sheap/sheap.pt"
)


class SheapBackend:
    """Lazily loaded SHeaP TorchScript model with batched inference."""

    def __init__(self, model_path: str | Path, device: str = "cpu", batch_size: int = 32) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_path = Path(model_path).expanduser()
        self.device = device
        self.batch_size = int(batch_size)
        self._module: Optional[Any] = None

    @property
    def module(self) -> Any:
        if self._module is None:
            self._module = self._load()
        return self._module

    def _load(self) -> Any:
        import torch

        if not self.model_path.is_file():
            raise FileNotFoundError(f"SHeaP checkpoint not found: {self.model_path}. {OBTAIN_HINT}")
        module = torch.jit.load(str(self.model_path), map_location=self.device)
        module.eval()
        return module

    @staticmethod
    def _to_numpy_dict(out: Any) -> dict[str, np.ndarray]:
        if isinstance(out, Mapping):
            items = list(out.items())
        elif isinstance(out, Sequence) and not isinstance(out, (str, bytes)):
            if len(out) < len(SHEAP_OUTPUT_ORDER):
                raise ValueError(
                    f"SHeaP module returned {len(out)} outputs; expected at least "
                    f"{len(SHEAP_OUTPUT_ORDER)} in the order {SHEAP_OUTPUT_ORDER}")
            items = list(zip(SHEAP_OUTPUT_ORDER, out))
        else:
            raise TypeError(f"SHeaP module returned {type(out).__name__}; expected a dict or tuple of tensors")
        result: dict[str, np.ndarray] = {}
        for name, value in items:
            if hasattr(value, "detach"):
                result[str(name)] = value.detach().float().cpu().numpy()
        return result

    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Run SHeaP on ``images`` (N,224,224,3) uint8 RGB; returns float32 arrays keyed by SHeaP's names."""
        import torch

        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
            raise ValueError(f"expected images of shape (N,{INPUT_SIZE},{INPUT_SIZE},3), got {images.shape}")
        if images.dtype != np.uint8:
            raise ValueError(f"expected uint8 RGB images, got {images.dtype}")
        n = images.shape[0]
        if n == 0:
            raise ValueError("predict needs at least one image")
        module = self.module
        chunks: dict[str, list[np.ndarray]] = {}
        with torch.no_grad():
            for start in range(0, n, self.batch_size):
                batch = np.ascontiguousarray(images[start:start + self.batch_size].transpose(0, 3, 1, 2))
                x = torch.from_numpy(batch).to(self.device).float().div_(255.0)
                for name, value in self._to_numpy_dict(module(x)).items():
                    chunks.setdefault(name, []).append(value)
        out: dict[str, np.ndarray] = {}
        for name, parts in chunks.items():
            out[name] = np.concatenate(parts, axis=0).astype(np.float32, copy=False)
        return out

    @staticmethod
    def to_groups(outputs: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Split SHeaP outputs into motion groups (N,dims) and metadata.

        Metadata: ``shape`` (300,) is the mean over frames (one identity per clip);
        ``cam_trans`` (N,3) stays per frame.
        """
        return to_groups(outputs)


def _frames(name: str, outputs: Mapping[str, np.ndarray], width: int) -> np.ndarray:
    if name not in outputs:
        raise KeyError(f"SHeaP output {name!r} missing; got {sorted(outputs)}")
    arr = np.asarray(outputs[name], dtype=np.float32)
    arr = arr.reshape(arr.shape[0], -1)
    if arr.shape[1] != width:
        raise ValueError(f"SHeaP output {name!r} has {arr.shape[1]} values per frame, expected {width}")
    return arr


def to_groups(outputs: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """See ``SheapBackend.to_groups``."""
    motion: dict[str, np.ndarray] = {}
    for group, (_, dims) in MOTION_GROUPS.items():
        names = source_names(group)
        parts = [_frames(name, outputs, dims // len(names)) for name in names]
        motion[group] = np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)
    lengths = {g: a.shape[0] for g, a in motion.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"SHeaP outputs disagree on the number of frames: {lengths}")
    shape_name, shape_dims = METADATA[SHAPE_KEY]
    cam_name, cam_dims = METADATA[CAM_TRANS_KEY]
    metadata = {
        SHAPE_KEY: _frames(shape_name, outputs, shape_dims).mean(axis=0).astype(np.float32),
        CAM_TRANS_KEY: _frames(cam_name, outputs, cam_dims),
    }
    return motion, metadata
