"""The FLAME stage for one source: per-frame FLAME parameters of every candidate clip.

It reads the clip's 384 px, 24 fps frames (never the source), cuts a head crop per frame
from the face boxes, runs SHeaP, maps its outputs to the six motion groups, smooths them
over time, and writes ``<key>.flame.npz`` (float32 arrays of shape (frames, dims), raw and
smoothed, plus per-clip shape and camera translation) as an extra entry of the sample.
Without the SHeaP weights every clip is kept and flagged "model not installed".
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from pipelines.atomic import atomic_path
from pipelines.config import PipelineConfig
from pipelines.faces.crop import boxes_in_crop
from pipelines.media import iter_video_frames
from pipelines.models import ModelStore
from pipelines.records import ACCEPTED, SourceRecord, SourceRef
from pipelines.sources import source_dir, source_lock
from pipelines.stages import candidate_segments, write_stage_result

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


CROP_CHUNK_FRAMES = 240  # 10 s of 224 px head crops (36 MB) per SHeaP call


def flame_for_clip(folder: Path, segment: dict, backend, config: PipelineConfig) -> tuple[dict, dict]:
    """(arrays for the npz, payload) of one clip."""
    from pipelines.flame.headcrop import head_crop_224
    from pipelines.flame.smoothing import savgol_groups

    boxes = boxes_in_crop(np.load(folder / segment["files"]["boxes.npy"]), config.crops.size_px)
    # Streamed in chunks: head crops of a long clip never sit in memory all at once.
    outputs: dict[str, list[np.ndarray]] = {}
    chunk: list[np.ndarray] = []
    n = 0

    def flush() -> None:
        for name, value in backend.predict(np.stack(chunk)).items():
            outputs.setdefault(name, []).append(value)
        chunk.clear()

    for j, frame in zip(range(len(boxes)), iter_video_frames(folder / segment["files"]["mp4"])):
        chunk.append(head_crop_224(frame, tuple(boxes[j])))
        n += 1
        if len(chunk) == CROP_CHUNK_FRAMES:
            flush()
    if chunk:
        flush()
    if n == 0:
        raise ValueError(f"{segment['files']['mp4']}: no frames decoded")
    motion, metadata = backend.to_groups({name: np.concatenate(parts) for name, parts in outputs.items()})
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


def build_backend(config: PipelineConfig):
    """The SHeaP backend, or None when its weights are not in the model directory."""
    store = ModelStore(config.paths.model_dir)
    if store.status(config.flame.model).state not in ("ok", "unpinned"):
        return None
    from pipelines.flame.sheap import SheapBackend

    return SheapBackend(store.path(config.flame.model), device=config.flame.device, batch_size=config.flame.batch_size)


def run_flame_stage(source: SourceRef, record: SourceRecord, config: PipelineConfig, backend) -> dict:
    """FLAME arrays for every candidate clip and ``flame.json``, holding the source's lock."""
    with source_lock(config, source.source_id):
        return _flame_clips(source, record, config, backend)


def _flame_clips(source: SourceRef, record: SourceRecord, config: PipelineConfig, backend) -> dict:
    folder = source_dir(config, source.source_id)
    decisions = {}
    missing = None if backend is not None else ModelStore(config.paths.model_dir).status(config.flame.model).detail
    if record.status == ACCEPTED:
        for segment in candidate_segments(record, config, STAGE):
            key = segment["key"]
            if backend is None:
                decisions[key] = {"decision": ACCEPTED, "reason": None, "numbers": {"status": NOT_INSTALLED},
                                  "flags": ["flame_model_not_installed"],
                                  "payload": {"status": "model not installed", "detail": missing}}
                continue
            arrays, payload = flame_for_clip(folder, segment, backend, config)
            name = f"{key}.flame.npz"
            save_npz(folder / name, arrays)
            decisions[key] = {"decision": ACCEPTED, "reason": None, "numbers": {"status": "ok", "frames": payload["frames"]},
                              "flags": [], "payload": payload, "files": {"flame.npz": name}}
    result = {"stage": STAGE, "model": config.flame.model, "installed": backend is not None, "segments": decisions}
    write_stage_result(config, source.source_id, STAGE, result)
    return result
