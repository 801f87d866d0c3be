"""What the scale bench measures around the stages: child processes' peak memory, the ffmpeg
floor of bench_pipeline.py, and shard read throughput (trainer loader against a raw read).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench.bench_pipeline import floor_crop_filter, time_crop_encode_floor, time_decode_only
from pipelines.config import PipelineConfig
from pipelines.media import decode as media
from pipelines.media.wav import read_wav
from pipelines.schema.index import ShardIndex

POLL_S = 0.1
MIB = 1024 * 1024
WORKER_SCRIPT = Path(__file__).resolve().with_name("bench_scale.py")


def _children_of() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone while we looked
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def tree_rss_bytes(pid: int) -> int:
    """Summed resident memory of ``pid`` and all its descendants now (0 once they are gone)."""
    tree, total, todo, page = _children_of(), 0, [pid], os.sysconf("SC_PAGE_SIZE")
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/statm") as handle:
                total += int(handle.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            pass
        todo.extend(tree.get(current, []))
    return total


def run_child(command: list[str]) -> tuple[int, int, float]:
    """Run ``command``; (exit status, peak summed RSS of its process tree in bytes, wall s).

    The tree is polled every ``POLL_S``: the x264 encoders and ffmpeg muxers a stage starts
    count too. (``ru_maxrss`` of a child is no use here: Linux carries the parent's RSS at
    fork into it, and this parent holds torch.)
    """
    start = time.perf_counter()
    proc = subprocess.Popen(command)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss_bytes(proc.pid))
        time.sleep(POLL_S)
    return proc.returncode, peak, time.perf_counter() - start


def process_peak_rss_bytes() -> int:
    """This process's own high-water RSS (VmHWM: exact, and fresh since exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def run_stage_in_child(stage: str, config_path: Path, result_path: Path) -> dict:
    code, tree_peak, process_s = run_child(
        [sys.executable, str(WORKER_SCRIPT), "--worker", stage, "--config", str(config_path),
         "--worker-out", str(result_path)])
    if code != 0:
        raise RuntimeError(f"stage {stage} failed with exit status {code}")
    result = json.loads(result_path.read_text())
    tree = tree_peak / MIB
    return {**result, "process_s": process_s, "peak_tree_rss_mib": tree,
            "peak_mib": max(tree, result["peak_process_rss_mib"])}


# --------------------------------------------------------------------------- shard reading


def raw_read(paths: list[Path], chunk: int = 1 << 20) -> int:
    """Bytes read from ``paths`` in order, in ``chunk``-sized reads (the sequential floor)."""
    total = 0
    for path in paths:
        with open(path, "rb", buffering=0) as handle:
            while block := handle.read(chunk):
                total += len(block)
    return total


def _decode_member(key: str, value: bytes) -> Any:
    """What a trainer needs from each member: video frames, audio samples, arrays, metadata."""
    import io

    import numpy as np

    if key.endswith("mp4"):
        import av

        # Every frame is decoded to RGB, but only the count is kept: a trainer takes windows,
        # and holding a long clip's frames would measure memory, not reading.
        with av.open(io.BytesIO(value)) as container:
            return sum(frame.to_ndarray(format="rgb24").shape[0] > 0 for frame in container.decode(video=0))
    if key.endswith("wav"):
        return read_wav(value, name=key)[0]
    if key.endswith("npy"):
        return np.load(io.BytesIO(value))
    if key.endswith("npz"):
        return dict(np.load(io.BytesIO(value)))
    if key.endswith("json"):
        return json.loads(value)
    return value


def webdataset_decode_loader(paths: list[Path]) -> Iterable[dict]:
    """A plain webdataset pipeline that decodes every member (the fallback loader)."""
    import webdataset as wds

    dataset = wds.WebDataset([str(p) for p in paths], shardshuffle=False, empty_check=False)
    for sample in dataset:
        yield {k: (_decode_member(k, v) if isinstance(v, bytes) else v) for k, v in sample.items()}


def trainer_loader() -> tuple[str, Callable[[list[Path]], Iterable]]:
    """(name, function from shard paths to an iterable of samples): the trainer's finite pass when
    training/data.py can be imported, else a webdataset pipeline decoding every member."""
    try:
        from training.config import DataConfig
        from training.data import finite_clips
    except ImportError as error:
        return f"webdataset-decode (training/data.py absent: {error})", webdataset_decode_loader

    def load(paths: list[Path]) -> Iterable:
        folder = str(paths[0].parent)  # the shard folder: finite_clips reads its index.json
        # 2-frame windows: every clip is long enough, so every sample is decoded and counted.
        return finite_clips(folder, DataConfig(shards=folder, window_frames=2))

    return "training.data.finite_clips (flame.npz + wav + json decoded; window_frames=2)", load


def measure_shard_read(shards_dir: Path, repeat: int = 3) -> dict | None:
    """Best-of-``repeat`` raw sequential read vs the trainer's loader over the same tar files, page
    cache warm; plus one pass of a webdataset pipeline that decodes every member (video included).
    None when nothing was packed (a --stages list without FLAME and captions leaves clips pending)."""
    index = ShardIndex.load(shards_dir)
    paths = index.paths()
    samples = len(index.samples)
    if not samples:
        return None
    size = sum(p.stat().st_size for p in paths)
    name, loader = trainer_loader()
    raw_read(paths)  # warm the page cache so both read from memory
    raw_s = min(_timed(lambda: raw_read(paths)) for _ in range(repeat))
    counted: list[int] = []
    loader_s = min(_timed(lambda: counted.append(sum(1 for _ in loader(paths)))) for _ in range(repeat))
    if counted[-1] != samples:
        raise RuntimeError(f"{name} gave {counted[-1]} samples, the index lists {samples}")
    full_s = _timed(lambda: counted.append(sum(1 for _ in webdataset_decode_loader(paths))))
    return {"loader": name, "shards": len(paths), "samples": samples, "bytes": size,
            "raw_s": raw_s, "loader_s": loader_s,
            "raw_bytes_per_s": size / raw_s, "loader_bytes_per_s": size / loader_s,
            "raw_samples_per_s": samples / raw_s, "loader_samples_per_s": samples / loader_s,
            "loader_over_raw": raw_s / loader_s,
            "decode_all_members": {"loader": "webdataset, every member decoded (mp4 to RGB frames)",
                                   "s": full_s, "bytes_per_s": size / full_s, "samples_per_s": samples / full_s,
                                   "over_raw": raw_s / full_s}}


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure_floor(source: Path, config: PipelineConfig, face: dict) -> dict:
    """bench_pipeline.py's ffmpeg floor for the face stage's output of ``source``."""
    info = media.probe(source)
    frames = face["output_frames"]
    with tempfile.TemporaryDirectory(prefix="bench-scale-floor-") as tmp:
        decode_s = time_decode_only(source)
        floor_s = (time_crop_encode_floor(source, frames, floor_crop_filter(
            info.width, info.height, face["crop_side_px"], config.crops.size_px, config.crops.fps),
            config, Path(tmp) / "floor.mp4") if frames else decode_s)
    return {"decode_only_s": decode_s, "crop_encode_floor_s": floor_s, "frames": frames}
