"""The FLAME stage for one source: per-frame FLAME parameters of every candidate clip.

It reads the clip's 384 px, 24 fps frames (never the source), cuts a head crop per frame
from the face boxes, runs SHeaP, maps its outputs to the six motion groups, smooths them
over time, and writes ``<key>.flame.npz`` (float32 arrays of shape (frames, dims), raw and
smoothed, plus per-clip shape and camera translation) as an extra entry of the sample.
Without the SHeaP weights every clip is kept and flagged "model not installed".
"""

from __future__ import annotations

import io
import itertools
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from pipelines.atomic import atomic_path
from pipelines.config import PipelineConfig
from pipelines.flame.orientation import flame_orientation
from pipelines.faces.crop import boxes_in_crop
from pipelines.media.decode import iter_video_frames
from pipelines.models import ModelStore
from pipelines.schema.records import ACCEPTED, Segment, StageDecision, StageResult
from pipelines.stage_spec import StageContext, StageSpec

STAGE = "flame"
NOT_INSTALLED = "model_not_installed"


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An .npz with fixed member order and timestamps, so the same arrays give the same bytes.

    Written under a temporary name and renamed, so a reader never sees a partial archive.
    """
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            buffer = io.BytesIO()
            np.save(buffer, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            archive.writestr(info, buffer.getvalue())


def head_crops(folder: Path, segment: Segment, config: PipelineConfig) -> Iterator[np.ndarray]:
    """The 224 px head crop of each frame of a clip, streamed from its mp4 (rule and smoothing:
    pipelines/flame/headcrop.py)."""
    from pipelines.flame.headcrop import crop_square, head_squares

    flame = config.flame
    boxes = boxes_in_crop(np.load(folder / segment.files["boxes.npy"]), config.crops.size_px)
    radius = int(round(flame.head_smoothing_window_s * config.crops.fps / 2))
    squares = head_squares(boxes, flame.head_scale, flame.head_shift_up, radius)
    for j, frame in zip(range(len(squares)), iter_video_frames(folder / segment.files["mp4"])):
        yield crop_square(frame, squares[j])


def predict_clips(clips: Iterable[tuple[str, Iterable[np.ndarray]]], backend,
                  batch_frames: int) -> Iterator[tuple[str, dict[str, np.ndarray] | None]]:
    """SHeaP over the head crops of many clips in batches that span clip boundaries, so the
    short clips ASD leaves (often about 2 s) still fill each forward pass on a GPU.

    Yields ``(key, outputs)`` in input order once every frame of that clip is predicted
    (``None`` for a clip without frames). At most ``batch_frames`` crops are held at a time.
    """
    buffer: list[np.ndarray] = []
    owners: list[str] = []
    parts: dict[str, dict[str, list[np.ndarray]]] = {}
    complete: list[str] = []  # every crop pushed; predicted after the next flush

    def flush() -> None:
        if not buffer:
            return
        outputs = backend.predict(np.stack(buffer))
        start = 0
        for key, group in itertools.groupby(owners):
            count = len(list(group))
            for name, value in outputs.items():
                parts.setdefault(key, {}).setdefault(name, []).append(value[start:start + count])
            start += count
        buffer.clear()
        owners.clear()

    def drain() -> Iterator[tuple[str, dict[str, np.ndarray] | None]]:
        for key in complete:
            chunks = parts.pop(key, None)
            yield key, None if chunks is None else {name: np.concatenate(v) for name, v in chunks.items()}
        complete.clear()

    for key, crops in clips:
        for crop in crops:
            buffer.append(crop)
            owners.append(key)
            if len(buffer) == batch_frames:
                flush()
                yield from drain()
        complete.append(key)
        if not buffer:  # its last frame closed a batch: nothing of it is waiting
            yield from drain()
    flush()
    yield from drain()


def clip_arrays(outputs: dict[str, np.ndarray], backend, config: PipelineConfig) -> tuple[dict, dict]:
    """(arrays for the npz, payload) of one clip from its per-frame SHeaP outputs."""
    from pipelines.flame.smoothing import savgol_groups

    motion, metadata = backend.to_groups(outputs)
    n = len(next(iter(motion.values())))
    smooth = savgol_groups(motion, config.flame.savgol_window_s, config.flame.savgol_polyorder, config.crops.fps)
    arrays = {**{f"raw/{g}": a.astype(np.float32) for g, a in motion.items()},
              **{f"smooth/{g}": a.astype(np.float32) for g, a in smooth.items()},
              **{f"meta/{k}": np.asarray(v, dtype=np.float32) for k, v in metadata.items()}}
    payload = {"status": "ok", "model": config.flame.model, "frames": n, "fps": config.crops.fps,
               "groups": {g: int(a.shape[1]) for g, a in motion.items()},
               "smoothing": {"filter": "savgol", "window_s": config.flame.savgol_window_s,
                             "polyorder": config.flame.savgol_polyorder,
                             "rotations": "unit quaternions, sign-continuous, renormalised"},
               "arrays": sorted(arrays)}
    return arrays, payload


def flame_for_clip(folder: Path, segment: Segment, backend, config: PipelineConfig) -> tuple[dict, dict]:
    """(arrays for the npz, payload) of one clip."""
    ((_, outputs),) = predict_clips([(segment.key, head_crops(folder, segment, config))], backend,
                                    config.flame.batch_size)
    if outputs is None:
        raise ValueError(f"{segment.files['mp4']}: no frames decoded")
    return clip_arrays(outputs, backend, config)


def build_backend(config: PipelineConfig):
    """The SHeaP backend, or None when its weights are not in the model directory."""
    store = ModelStore(config.paths.model_dir)
    if store.status(config.flame.model).state not in ("ok", "unpinned"):
        return None
    from pipelines.flame.sheap import SheapBackend

    from pipelines.devices import torch_device

    return SheapBackend(store.path(config.flame.model), device=torch_device(config.flame.device),
                        batch_size=config.flame.batch_size)


def run(ctx: StageContext) -> StageResult:
    """FLAME arrays (``<key>.flame.npz``) for every candidate clip; clips are kept and flagged
    when the SHeaP weights are not installed."""
    config, decisions = ctx.config, {}
    if ctx.backend is None:
        missing = ModelStore(config.paths.model_dir).status(config.flame.model).detail
        for segment in ctx.candidates:
            decisions[segment.key] = StageDecision(
                decision=ACCEPTED, numbers={"status": NOT_INSTALLED}, flags=["flame_model_not_installed"],
                payload={"status": "model not installed", "detail": missing})
    else:
        clips = ((segment.key, head_crops(ctx.folder, segment, config)) for segment in ctx.candidates)
        for key, outputs in predict_clips(clips, ctx.backend, config.flame.batch_size):
            if outputs is None:
                raise ValueError(f"{key}: no frames decoded from its clip")
            arrays, payload = clip_arrays(outputs, ctx.backend, config)
            name = f"{key}.flame.npz"
            save_npz(ctx.folder / name, arrays)
            numbers, orientation, flags = flame_orientation(arrays["raw/global_rotation"], config.quality)
            decisions[key] = StageDecision(decision=ACCEPTED,
                                           numbers={"status": "ok", "frames": payload["frames"], **numbers},
                                           payload={**payload, "orientation": orientation}, flags=flags,
                                           files={"flame.npz": name})
    return StageResult(stage=STAGE, segments=decisions,
                       details={"model": config.flame.model, "installed": ctx.backend is not None})


SPEC = StageSpec(
    name=STAGE, needs=("speech",), config_sections=("flame", "quality"), version="2", build_backend=build_backend, run=run,
    description="Per-frame FLAME parameters from SHeaP (six motion groups, raw and Savitzky-Golay smoothed).",
)
