"""SHeaP backend: a TorchScript checkpoint that maps 224x224 RGB head crops to FLAME parameters.

SHeaP (CC BY-NC 4.0) is not downloadable here and never downloaded by this code: it is read
from a path given by configuration. Interface of the published release (github.com/nlml/SHeaP
@cfddf49): ``sheap/load_model.py`` loads ``model_paper.pt`` / ``model_expressive.pt`` with
``torch.jit.load``; the README's example (lines 37-49) feeds (N,3,224,224) RGB in [0,1] and
gets a dict back; ``sheap/eval_utils.py`` ``inference_images_list`` (lines 109-115) iterates
that dict by key and skips values that are not tensors. The keys we read and their widths are
in ``pipelines/flame/groups.py``; any other key is ignored, a missing one or a wrong width is
a ``SheapOutputError`` naming the checkpoint, the key and the keys received.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from pipelines.flame.groups import (
    CAM_TRANS_KEY,
    METADATA,
    MOTION_GROUPS,
    SHAPE_KEY,
    SHEAP_OUTPUT_DIMS,
)

INPUT_SIZE = 224

OBTAIN_HINT = (
    "SHeaP is not bundled and never downloaded: get model_expressive.pt or model_paper.pt from the "
    "SHeaP release (github.com/nlml/SHeaP, v1.0.0, CC BY-NC 4.0) and put it at this path, or point the "
    "model directory (TALKINGHEAD_MODEL_DIR / config) at a folder holding it under sheap/"
)


class SheapOutputError(ValueError):
    """A checkpoint's outputs do not match the published SHeaP interface."""


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

    def _checked(self, out: Any, n: int) -> dict[str, np.ndarray]:
        """The outputs we read from one forward pass of ``n`` images, as float32 arrays."""
        import torch

        if not isinstance(out, Mapping):
            raise SheapOutputError(
                f"SHeaP checkpoint {self.model_path} returned {type(out).__name__}; the published SHeaP "
                f"models return a dict with keys {sorted(SHEAP_OUTPUT_DIMS)}")
        received = sorted(str(k) for k in out)
        missing = [k for k in SHEAP_OUTPUT_DIMS if not isinstance(out.get(k), torch.Tensor)]
        if missing:
            raise SheapOutputError(
                f"SHeaP checkpoint {self.model_path} lacks output(s) {missing} (tensors expected); "
                f"received keys {received}; the published SHeaP interface is {SHEAP_OUTPUT_DIMS}")
        result: dict[str, np.ndarray] = {}
        for name, width in SHEAP_OUTPUT_DIMS.items():
            value = out[name]
            if tuple(value.shape) != (n, width):
                raise SheapOutputError(
                    f"SHeaP checkpoint {self.model_path}: output {name!r} has shape {tuple(value.shape)} for "
                    f"{n} images, expected ({n}, {width}); received keys {received}")
            result[name] = value.detach().float().cpu().numpy()
        return result

    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Run SHeaP on ``images`` (N,224,224,3) uint8 RGB.

        Returns the published outputs we read (``groups.SHEAP_OUTPUT_DIMS``), float32 (N, width)
        arrays keyed by SHeaP's names.
        """
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
                for name, value in self._checked(module(x), len(batch)).items():
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


def _frames(name: str, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
    if name not in outputs:
        raise SheapOutputError(f"SHeaP output {name!r} missing; received keys {sorted(outputs)}")
    arr = np.asarray(outputs[name], dtype=np.float32)
    width = SHEAP_OUTPUT_DIMS[name]
    if arr.ndim != 2 or arr.shape[1] != width:
        raise SheapOutputError(f"SHeaP output {name!r} has shape {arr.shape}, expected (frames, {width})")
    return arr


def to_groups(outputs: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """See ``SheapBackend.to_groups``."""
    motion = {group: np.ascontiguousarray(np.concatenate([_frames(n, outputs) for n in names], axis=1))
              for group, names in MOTION_GROUPS.items()}
    metadata = {SHAPE_KEY: _frames(METADATA[SHAPE_KEY], outputs).mean(axis=0).astype(np.float32),
                CAM_TRANS_KEY: _frames(METADATA[CAM_TRANS_KEY], outputs)}
    lengths = {g: a.shape[0] for g, a in motion.items()} | {CAM_TRANS_KEY: metadata[CAM_TRANS_KEY].shape[0]}
    if len(set(lengths.values())) > 1:
        raise SheapOutputError(f"SHeaP outputs disagree on the number of frames: {lengths}")
    return motion, metadata
