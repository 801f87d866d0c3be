"""Shard reading: webdataset pipelines of fixed-length motion windows with aligned audio and caption.

Members used (as written by pipelines/shards.py): ``flame.npz`` (``smooth/<group>`` or
``raw/<group>``, float32 (frames, dims)), ``wav`` (16 kHz mono PCM), ``json`` (the sample
record; captions under ``captions.windows[*]``). Samples without ``flame.npz`` (FLAME model
not installed) or shorter than one window are skipped.

Training streams resample shards with a seeded RNG (``ResampledShards``, deterministic; the
worker seed mixes in the node rank and worker id, so nodes and workers draw different
streams), shuffle with a seeded buffer and draw random windows with a seeded RNG (both
seeded per loader worker too, or workers reading the same shard would yield the same
windows): the stream is a pure function of (seed, rank, worker), so resuming = rebuilding it
and skipping the consumed batches. Evaluation splits shards by node and worker; statistics
read every shard on every node (each rank must normalise identically).

Frame rate and sample rate come from the data, not from constants: each sample's record states
them (``video.fps``, ``audio.sample_rate``). A run expects one pair (``data.fps`` /
``data.sample_rate`` when the config states them, else the first usable sample's, see
``resolve_rates``) and skips, with a logged reason, every sample at other rates: its windows
would cut audio of the wrong length or time span.
"""

from __future__ import annotations

import glob
import importlib
import io
import logging
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import webdataset as wds

from pipelines.media.wav import read_wav_float
from pipelines.schema.index import INDEX_FILE, ShardIndex, is_url
from pipelines.schema.sample import SampleRecord
from training.config import DataConfig

FLAME_MEMBER = "flame.npz"

log = logging.getLogger(__name__)


def _gopen_fsspec(url: str, mode: str = "rb", bufsize: int = 8192):
    import fsspec

    return fsspec.open(url, mode).open()


def _remote_shard_urls(spec: str) -> list[str]:
    """Shard URLs from ``<url>/index.json`` on object storage (see pipelines/publish.py)."""
    scheme = spec.split("://", 1)[0]
    # webdataset opens file/pipe/http/gs itself; other schemes (s3, memory, ...) go through fsspec.
    importlib.import_module("webdataset.gopen").gopen_schemes.setdefault(scheme, _gopen_fsspec)
    base = spec.rstrip("/")
    if base.endswith(".tar"):
        return [base]
    return ShardIndex.load(base).locations()


def shard_urls(spec: str) -> list[str]:
    """Tar paths from a shard folder (its index.json), a glob, a single tar, or an object-store
    URL holding published shards (``s3://bucket/prefix``: its index.json)."""
    if is_url(spec):
        return _remote_shard_urls(spec)
    spec = spec.removeprefix("file://")
    path = Path(spec)
    if path.is_dir():
        if (path / INDEX_FILE).exists():
            return ShardIndex.load(path).locations()
        return sorted(str(p) for p in path.glob("*.tar"))
    urls = sorted(glob.glob(spec))
    if not urls:
        raise FileNotFoundError(f"no shards match {spec}")
    return urls


def motion_array(npz_bytes: bytes, config: DataConfig) -> np.ndarray:
    """(frames, dims) float32: the configured groups concatenated in config order."""
    with np.load(io.BytesIO(npz_bytes)) as arrays:
        parts = [arrays[f"{config.array_prefix}/{group}"] for group in config.groups]
    frames = min(len(p) for p in parts)
    return np.concatenate([p[:frames] for p in parts], axis=1).astype(np.float32)


def group_slices(groups: tuple[str, ...], dims: dict[str, int]) -> dict[str, slice]:
    """Column range of each group in the concatenated motion array."""
    out, start = {}, 0
    for group in groups:
        out[group] = slice(start, start + dims[group])
        start += dims[group]
    return out


def group_dims(npz_bytes: bytes, config: DataConfig) -> dict[str, int]:
    with np.load(io.BytesIO(npz_bytes)) as arrays:
        return {group: int(arrays[f"{config.array_prefix}/{group}"].shape[1]) for group in config.groups}


def caption_for(captions: dict | None, start: int, end: int) -> str:
    """The caption (of a record's ``captions`` payload) whose window overlaps frames [start, end)
    most; "" when there is none."""
    windows = (captions or {}).get("windows") or []
    best, overlap = "", 0
    for window in windows:
        shared = min(end, window["end"]) - max(start, window["start"])
        if shared > overlap and window.get("caption"):
            best, overlap = window["caption"], shared
    return best


@dataclass
class Clip:
    key: str
    motion: np.ndarray  # (frames, dims)
    audio: np.ndarray  # (samples,)
    record: SampleRecord


def _rates_differ(record: SampleRecord, config: DataConfig) -> str | None:
    """Why the sample's rates are not the run's, or None when they are."""
    if not math.isclose(record.video.fps, config.fps, rel_tol=1e-9):
        return f"video at {record.video.fps:g} fps, the run expects {config.fps:g} (data.fps)"
    if record.audio.sample_rate != config.sample_rate:
        return f"audio at {record.audio.sample_rate} Hz, the run expects {config.sample_rate} (data.sample_rate)"
    return None


def decode_clip(sample: dict, config: DataConfig) -> Clip | None:
    """The sample as a clip, or None (logged when it is a rate mismatch) when the run cannot use it."""
    if FLAME_MEMBER not in sample:
        return None
    key = sample["__key__"]
    record = SampleRecord.load(sample["json"])
    mismatch = _rates_differ(record, config)
    if mismatch is not None:
        log.warning("%s: skipped: %s", key, mismatch)
        return None
    # The WAV header must agree with the record: read_wav_float raises otherwise.
    audio = read_wav_float(sample["wav"], config.sample_rate, name=f"{key}.wav")
    return Clip(key, motion_array(sample[FLAME_MEMBER], config), audio, record)


def cut_window(clip: Clip, start: int, config: DataConfig) -> dict:
    """Frames [start, start + window) with the audio of the same time span (zero-padded)."""
    frames = config.window_frames
    per_frame = config.sample_rate / config.fps
    a0 = round(start * per_frame)
    a1 = a0 + round(frames * per_frame)  # same length for every start (rounding must not vary it)
    audio = np.zeros(a1 - a0, dtype=np.float32)
    piece = clip.audio[a0:a1]
    audio[: len(piece)] = piece
    return {"key": clip.key, "start": start, "motion": clip.motion[start:start + frames], "audio": audio,
            "caption": caption_for(clip.record.captions, start, start + frames)}


def _clips(samples: Iterator[dict], config: DataConfig) -> Iterator[Clip]:
    for sample in samples:
        clip = decode_clip(sample, config)
        if clip is not None and len(clip.motion) >= config.window_frames:
            yield clip


def resolve_rates(config: DataConfig, spec: str | None = None) -> DataConfig:
    """``config`` with ``fps`` and ``sample_rate`` set: as stated, else those of the first sample
    with FLAME arrays in ``spec`` (default ``config.shards``), in shard order, so every rank and
    worker resolves the same pair."""
    if config.fps is not None and config.sample_rate is not None:
        return config
    samples = wds.DataPipeline(wds.SimpleShardList(shard_urls(spec or config.shards)), wds.tarfile_to_samples())
    first = next((s for s in samples if FLAME_MEMBER in s), None)
    if first is None:
        raise ValueError(f"no sample with FLAME arrays in {spec or config.shards}: cannot tell the frame rate")
    record = SampleRecord.load(first["json"])
    return config.model_copy(update={"fps": config.fps if config.fps is not None else record.video.fps,
                                     "sample_rate": config.sample_rate or record.audio.sample_rate})


def inherit_rates(config: DataConfig, source: DataConfig, source_name: str) -> DataConfig:
    """``config`` expecting the rates ``source`` was trained on (a flow run its VAE's, RL its SFT
    run's); ValueError when ``config`` states other ones."""
    update = {}
    for field in ("fps", "sample_rate"):
        mine, theirs = getattr(config, field), getattr(source, field)
        if mine is not None and theirs is not None and mine != theirs:
            raise ValueError(f"data.{field} is {mine} but {source_name} was trained at {theirs}")
        update[field] = mine if mine is not None else theirs
    return config.model_copy(update=update)


def _worker_id() -> int:
    info = torch.utils.data.get_worker_info()
    return info.id if info is not None else 0


def _shuffled(size: int, seed: int):
    # The RNG is made when iteration starts, i.e. inside the loader worker, so each worker gets its own.
    def stage(samples: Iterator[dict]) -> Iterator[dict]:
        yield from wds.shuffle(size, initial=size, rng=random.Random(f"shuffle-{seed}-{_worker_id()}"))(samples)
    return stage


def _random_windows(config: DataConfig, seed: int):
    def stage(samples: Iterator[dict]) -> Iterator[dict]:
        worker = _worker_id()
        rng = random.Random(f"windows-{seed}-{worker}")
        for number, clip in enumerate(_clips(samples, config)):
            for repeat in range(config.windows_per_clip):
                window = cut_window(clip, rng.randint(0, len(clip.motion) - config.window_frames), config)
                # Per-window seed for noise, timesteps and condition dropout: the same window gets
                # the same draws whatever the batch size or accumulation (see training/flow.py).
                window["seed"] = hash((seed, worker, number, repeat)) & 0x7FFFFFFF
                yield window
    return stage


def _tiled_windows(config: DataConfig):
    def stage(samples: Iterator[dict]) -> Iterator[dict]:
        for number, clip in enumerate(_clips(samples, config)):
            for start in range(0, len(clip.motion) - config.window_frames + 1, config.window_frames):
                window = cut_window(clip, start, config)
                window["seed"] = hash((number, start)) & 0x7FFFFFFF
                yield window
    return stage


def train_pipeline(config: DataConfig, seed: int) -> wds.DataPipeline:
    """Endless, seeded stream of random windows (resampled shards, shuffled samples)."""
    config = resolve_rates(config)
    return wds.DataPipeline(
        wds.ResampledShards(shard_urls(config.shards), seed=seed, deterministic=True),
        wds.tarfile_to_samples(),
        _shuffled(config.shuffle_buffer, seed),
        _random_windows(config, seed),
    )


def finite_clips(spec: str, config: DataConfig, per_node: bool = True) -> Iterator[Clip]:
    """Every usable clip once: this node's and worker's share of the shards, or with
    ``per_node=False`` every node's (the worker split still applies)."""
    config = resolve_rates(config, spec)
    splits = [wds.split_by_node] if per_node else []
    pipeline = wds.DataPipeline(wds.SimpleShardList(shard_urls(spec)), *splits, wds.split_by_worker,
                                wds.tarfile_to_samples())
    return _clips(iter(pipeline), config)


def eval_pipeline(spec: str, config: DataConfig) -> wds.DataPipeline:
    """Non-overlapping windows from the start of every clip, in shard order."""
    config = resolve_rates(config, spec)
    return wds.DataPipeline(wds.SimpleShardList(shard_urls(spec)), wds.split_by_node, wds.split_by_worker,
                            wds.tarfile_to_samples(), _tiled_windows(config))


def collate(windows: list[dict]) -> dict:
    return {"key": [w["key"] for w in windows], "start": torch.tensor([w["start"] for w in windows]),
            "motion": torch.from_numpy(np.stack([w["motion"] for w in windows])),
            "audio": torch.from_numpy(np.stack([w["audio"] for w in windows])),
            "caption": [w["caption"] for w in windows],
            "seed": torch.tensor([w["seed"] for w in windows], dtype=torch.int64)}


def batches(pipeline, config: DataConfig, skip: int = 0, keep_last: bool = False) -> Iterator[dict]:
    """Batches of ``config.batch_size`` windows, after skipping ``skip`` batches (resume).

    ``keep_last``: also yield a final short batch (finite passes)."""
    if config.num_workers:
        loader = torch.utils.data.DataLoader(pipeline, batch_size=config.batch_size, collate_fn=collate,
                                             num_workers=config.num_workers, drop_last=not keep_last)
        stream = iter(loader)
    else:
        stream = (collate(chunk) for chunk in _chunks(iter(pipeline), config.batch_size, keep_last))
    for number, batch in enumerate(stream):
        if number >= skip:
            yield batch


def _chunks(items: Iterator[dict], size: int, keep_last: bool) -> Iterator[list[dict]]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk and keep_last:
        yield chunk
