"""Scale benchmark: every stage on the same talking-head content at 1x, 4x and 16x duration.

    python bench/bench_scale.py [--durations 1,4] [--append] [--base-clips N] [--out-dir DIR]
        [--model-dir DIR] [--keep DIR]

The 1x source is the GRID clips in ../shared/media/grid concatenated (H.264/AAC, 360x288,
25 fps; ``--base-clips`` of them, repeated in order when more are asked for than exist);
the Nx source is that file repeated N times (ffmpeg concat demuxer, stream copy), so
every scale holds the same content. For each scale, in a fresh data folder, each stage
runs in its own child process, in pipeline order (face_clips = probe + one decode +
faces + crops, asd, speech, flame, captions, shards), and the parent records:

- wall time of the stage's work (model loading excluded, reported apart) and its
  realtime factor (wall / source seconds), time inside the model calls, and the rest;
- source decodes (``pipelines.media.DECODE_COUNTS``, summed over the children);
- the child's peak memory: its own VmHWM (exact) and the peak of the summed RSS of its
  whole process tree (x264 encoders included), polled from /proc; the larger is "peak";
- the ffmpeg floor of bench_pipeline.py (one ffmpeg decoding the source and encoding as
  many 384 px 24 fps frames with the config's x264 settings) and non-model time over it;
- shard read throughput through the trainer's loader against a raw sequential read of
  the same tar files (bytes/s and samples/s).

FLAME and captions run with whatever models the model folder has; when SHeaP or Qwen-VL
is missing, the tiny stand-ins of pipelines/fixtures/sheap.py and pipelines/fixtures/qwen_vl.py
are built into a temporary model folder and the output says so. Results go to
``bench/results/scale.json`` and ``scale.md`` and are printed; ``--append`` merges the
scales measured now into an existing JSON (each command stays short).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/bench_scale.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(REPO))

from bench.bench_pipeline import (
    DEFAULT_MEDIA_DIR,
    DEFAULT_MODEL_DIR,
    TimedDetector,
    floor_crop_filter,
    time_crop_encode_floor,
    time_decode_only,
)
from pipelines import media
from pipelines.config import MODEL_DIR_ENV, PipelineConfig, load_config
from pipelines.schema.index import ShardIndex

STAGES = ("face_clips", "asd", "speech", "flame", "captions", "shards")
DEFAULT_DURATIONS = (1, 4, 16)
DEFAULT_BASE_CLIPS = 5  # 5 GRID clips of 3 s: 1x = 15 s, 16x = 4 min
# Peak memory counts as flat when the largest scale needs at most this much more than 1x.
FLAT_RATIO = 1.25
RESULTS_DIR = REPO / "bench" / "results"
JSON_NAME, MARKDOWN_NAME = "scale.json", "scale.md"
POLL_S = 0.1
MIB = 1024 * 1024
TINY_SHEAP = "tiny scripted SHeaP stand-in (pipelines/fixtures/sheap.py build_scripted_sheap), random weights"
TINY_QWEN = "tiny random Qwen2-VL (pipelines/fixtures/qwen_vl.py build_tiny_qwen2vl)"


# --------------------------------------------------------------------------- sources


def _ffmpeg(args: list[str]) -> None:
    from pipelines.fixtures.media import run_ffmpeg

    run_ffmpeg(args)


def make_base_source(clips: list[Path], out: Path) -> Path:
    """``clips`` joined end to end as one H.264/AAC mp4 (each clip's audio cut/padded to its video)."""
    from pipelines.fixtures.media import AUDIO_RATE, FPS, H264_AAC

    inputs, graph, labels = [], [], []
    for n, clip in enumerate(clips):
        inputs += ["-i", str(clip)]
        graph.append(f"[{n}:v]fps={FPS},format=yuv420p,setsar=1[v{n}];"
                     f"[{n}:a]aresample={AUDIO_RATE},aformat=sample_fmts=fltp:channel_layouts=stereo,"
                     f"apad,atrim=duration={media.probe(clip).duration_s:.6f}[a{n}]")
        labels.append(f"[v{n}][a{n}]")
    filters = ";".join(graph) + ";" + "".join(labels) + f"concat=n={len(clips)}:v=1:a=1[v][a]"
    _ffmpeg([*inputs, "-filter_complex", filters, "-map", "[v]", "-map", "[a]", *H264_AAC, str(out)])
    return out


def make_scaled_source(base: Path, times: int, out: Path) -> Path:
    """``base`` repeated ``times`` times, stream-copied (same content, ``times`` x the duration)."""
    listing = out.with_suffix(".txt")
    listing.write_text("".join(f"file '{base.resolve()}'\n" for _ in range(times)))
    _ffmpeg(["-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(out)])
    listing.unlink()
    return out


def base_clips(media_dir: Path, count: int) -> list[Path]:
    clips = sorted(media_dir.glob("*.mpg"))
    if not clips:
        raise SystemExit(f"error: no GRID clips (*.mpg) in {media_dir}")
    return [clips[n % len(clips)] for n in range(count)]


# --------------------------------------------------------------------------- models


class TimedCalls:
    """Proxy that adds the time spent in the named methods of ``inner``; all else passes through."""

    def __init__(self, inner: Any, methods: Iterable[str]):
        self._inner = inner
        self._methods = frozenset(methods)
        self.seconds = 0.0
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if name not in self._methods:
            return value

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return value(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1

        return timed


def prepare_model_dir(model_dir: Path, work: Path) -> tuple[Path, dict[str, str]]:
    """A model folder with every entry of ``model_dir`` plus tiny FLAME/caption stand-ins where
    the real ones are missing; returns (folder, what each of those two stages runs)."""
    from pipelines.models import ModelStore

    store = ModelStore(model_dir)
    have_flame = store.status("sheap").state in ("ok", "unpinned")
    have_qwen = store.status("qwen_vl").state in ("ok", "unpinned")
    used = {"flame": "SHeaP (real weights)" if have_flame else TINY_SHEAP,
            "captions": "Qwen-VL (real weights)" if have_qwen else TINY_QWEN}
    if have_flame and have_qwen:
        return model_dir, used
    out = work / "models"
    shutil.rmtree(out, ignore_errors=True)  # links and stand-ins only: rebuilt the same way each time
    out.mkdir(parents=True)
    for entry in model_dir.iterdir():  # links, never copies: weights stay where they are
        (out / entry.name).symlink_to(entry.resolve())
    if not have_flame:
        from pipelines.fixtures.sheap import build_scripted_sheap

        build_scripted_sheap(out / "sheap" / "sheap.pt")
    if not have_qwen:
        from pipelines.fixtures.qwen_vl import build_tiny_qwen2vl

        build_tiny_qwen2vl(out / "qwen-vl")
    return out, used


# --------------------------------------------------------------------------- one stage (child side)


@dataclass
class StageContext:
    config: PipelineConfig
    refs: list  # SourceRef
    records: list  # SourceRecord


def _context(config: PipelineConfig, scan: bool) -> StageContext:
    from pipelines.ingest import SourceRegistry
    from pipelines.sources import load_record

    registry = SourceRegistry(config.paths.registry_path)
    refs = registry.scan(config.paths.input_dir, config.ingest.extensions)
    records = [] if scan else [load_record(config, ref.source_id) for ref in refs]
    return StageContext(config, refs, records)


def _load_models(stage: str, config: PipelineConfig):
    """The stage's model(s), loaded now (lazy loaders forced), wrapped to time their calls."""
    from pipelines.models import ModelStore

    store = ModelStore(config.paths.model_dir)
    if stage == "face_clips":
        import numpy as np

        from pipelines.faces.detectors import build_detector

        detector = TimedDetector(build_detector(config.faces, store))
        detector.detect(np.zeros((288, 360, 3), np.uint8))  # session initialisation, not charged to the video
        return detector
    if stage == "asd":
        from pipelines.asd.score import ActiveSpeakerScorer

        return TimedCalls(ActiveSpeakerScorer(store.path(config.asd.model), device=config.asd.device,
                                              window_frames=config.asd.window_frames,
                                              overlap_frames=config.asd.overlap_frames), ["probabilities"])
    if stage == "speech":
        from pipelines.speech.stage import build_backends

        backends = build_backends(config)
        if backends.identifier is not None:
            backends.identifier.identify("warm up the language models with a sentence")  # lingua loads lazily
        timers = {"activity": TimedCalls(backends.activity, ["activity"])}
        backends.activity = timers["activity"]
        if backends.transcriber is not None:
            timers["transcriber"] = backends.transcriber = TimedCalls(backends.transcriber,
                                                                      ["transcribe", "detect_language"])
        if backends.identifier is not None:
            timers["identifier"] = backends.identifier = TimedCalls(backends.identifier, ["identify"])
        return backends, timers
    if stage == "flame":
        from pipelines.flame.stage import build_backend

        backend = build_backend(config)
        if backend is None:
            return None
        backend.module  # noqa: B018 -- the TorchScript file loads on first use
        return TimedCalls(backend, ["predict"])
    if stage == "captions":
        from pipelines.captions.stage import build_captioner

        captioner = build_captioner(config)
        if captioner is None:
            return None
        getattr(captioner, "_load", lambda: None)()
        return TimedCalls(captioner, ["caption"])
    return None


def _model_time(models: Any) -> tuple[float, int]:
    if models is None:
        return 0.0, 0
    if isinstance(models, tuple):  # speech: (backends, timers)
        timers = models[1].values()
        return sum(t.seconds for t in timers), sum(t.calls for t in timers)
    return models.seconds, models.calls


def _run_face_clips(ctx: StageContext, detector: TimedDetector) -> dict:
    import numpy as np

    from pipelines.sources import process_source, source_dir

    ctx.records = [process_source(ref, ctx.config, detector) for ref in ctx.refs]
    frames, sides, seconds = 0, [], 0.0
    for record in ctx.records:
        for seg in record.accepted_segments():
            sample = json.loads((source_dir(ctx.config, record.source_id) / seg["files"]["json"]).read_text())
            frames += int(sample["video"]["frames"])
            sides.append(float(seg["numbers"]["crop_side_px"]["mean"]))
            seconds += float(seg["numbers"]["duration_s"])
    segments = [seg for record in ctx.records for seg in record.segments]
    return {"sources": len(ctx.records), "segments": len(segments),
            "accepted_segments": sum(s["status"] == "accepted" for s in segments),
            "longest_segment_s": max((float(s["numbers"]["duration_s"]) for s in segments), default=0.0),
            "clip_seconds": round(seconds, 3), "output_frames": frames,
            "crop_side_px": float(np.mean(sides)) if sides else None,
            "statuses": [r.status for r in ctx.records]}


def _run_later_stage(stage: str, ctx: StageContext, models: Any) -> dict:
    config = ctx.config
    for ref, record in zip(ctx.refs, ctx.records):
        if stage == "asd":
            from pipelines.asd.stage import run_asd_stage

            run_asd_stage(ref, record, config, models)
        elif stage == "speech":
            from pipelines.speech.stage import run_speech_stage

            run_speech_stage(ref, record, config, models[0])
        elif stage == "flame":
            from pipelines.flame.stage import run_flame_stage

            run_flame_stage(ref, record, config, models)
        elif stage == "captions":
            from pipelines.captions.stage import run_caption_stage

            run_caption_stage(ref, record, config, models)
    return {}


def _run_shards(ctx: StageContext) -> dict:
    from pipelines.shards import write_shards

    summary = write_shards(ctx.records, ctx.config)
    return {"shards": len(summary.shards), "samples": sum(s["samples"] for s in summary.shards),
            "bytes": sum(s["bytes"] for s in summary.shards),
            "sha256": [s["sha256"] for s in summary.shards]}


def run_stage(stage: str, config: PipelineConfig) -> dict:
    """Run one stage over every source of ``config``'s input folder; its timings and facts.

    The face stage registers the sources; later stages read the records and stage files
    the earlier ones left in the data folder.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; one of {STAGES}")
    media.DECODE_COUNTS.clear()
    start = time.perf_counter()
    ctx = _context(config, scan=stage == "face_clips")
    models = _load_models(stage, config)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    try:
        if stage == "face_clips":
            facts = _run_face_clips(ctx, models)
        elif stage == "shards":
            facts = _run_shards(ctx)
        else:
            facts = _run_later_stage(stage, ctx, models)
    finally:
        if stage == "face_clips":
            models.close()
    wall = time.perf_counter() - start
    model_s, calls = _model_time(models)
    return {"stage": stage, "wall_s": wall, "load_s": load_s, "model_s": model_s, "model_calls": calls,
            "non_model_s": wall - model_s, "decodes": sum(media.DECODE_COUNTS.values()),
            "model_installed": stage in ("face_clips", "shards") or models is not None, **facts}


# --------------------------------------------------------------------------- one stage (parent side)


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
        [sys.executable, str(Path(__file__).resolve()), "--worker", stage, "--config", str(config_path),
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
        import wave

        with wave.open(io.BytesIO(value)) as wav:
            return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
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


def measure_shard_read(shards_dir: Path, repeat: int = 3) -> dict:
    """Best-of-``repeat`` raw sequential read vs the trainer's loader over the same tar files, page
    cache warm; plus one pass of a webdataset pipeline that decodes every member (video included)."""
    index = ShardIndex.load(shards_dir)
    paths = index.paths()
    samples = len(index.samples)
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


# --------------------------------------------------------------------------- one scale


def scale_config(base: PipelineConfig, root: Path) -> PipelineConfig:
    return PipelineConfig.model_validate({**base.model_dump(), "paths": {
        **base.paths.model_dump(), "input_dir": root / "input", "data_dir": root / "data"}})


def write_config(config: PipelineConfig, path: Path) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=True))
    return path


def bench_scale(scale: int, base_source: Path, config: PipelineConfig, root: Path,
                stages: Iterable[str] = STAGES, in_process: bool = False) -> dict:
    """The ``stages`` on ``base_source`` repeated ``scale`` times, in the data folder under ``root``.

    Running face_clips starts from a fresh data folder; later stages alone reuse the one a
    previous invocation left there (``--keep``), so a long scale can be split over commands.
    ``in_process`` runs the stages in this process (no memory figures): for tests.
    """
    root.mkdir(parents=True, exist_ok=True)
    cfg = scale_config(config, root)
    stages = list(stages)
    if "face_clips" in stages:
        shutil.rmtree(cfg.paths.data_dir, ignore_errors=True)
    cfg.paths.input_dir.mkdir(parents=True, exist_ok=True)
    source = cfg.paths.input_dir / f"talk-x{scale}.mp4"
    if not source.exists():
        if scale > 1:
            make_scaled_source(base_source, scale, source)
        else:
            shutil.copy(base_source, source)
    info = media.probe(source)
    config_path = write_config(cfg, root / "config.yaml")
    results: dict[str, dict] = {}
    for stage in stages:
        if in_process:
            results[stage] = run_stage(stage, cfg)
        else:
            results[stage] = run_stage_in_child(stage, config_path, root / f"{stage}.result.json")
        results[stage]["rtf"] = results[stage]["wall_s"] / info.duration_s
        results[stage]["loadavg_1m"] = os.getloadavg()[0]
        print(f"  x{scale} {stage}: {results[stage]['wall_s']:.2f} s (RTF {results[stage]['rtf']:.3f})"
              + (f", peak {results[stage]['peak_mib']:.0f} MiB" if not in_process else ""), flush=True)
    run: dict[str, Any] = {"scale": scale, "source": {"duration_s": info.duration_s, "width": info.width,
                                                      "height": info.height, "fps": info.frame_rate,
                                                      "bytes": info.size_bytes},
                           "stages": results}
    if "face_clips" in results:
        run["floor"] = measure_floor(source, cfg, results["face_clips"])
    if "shards" in results:
        run["shard_read"] = measure_shard_read(cfg.paths.shards_dir)
    return derive(run)


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


def derive(run: dict) -> dict:
    """``run`` with its totals and non-model / floor ratios (re)computed from its stages."""
    results, duration = run["stages"], run["source"]["duration_s"]
    wall = sum(r["wall_s"] for r in results.values())
    model = sum(r["model_s"] for r in results.values())
    sources = results["face_clips"]["sources"] if "face_clips" in results else 1
    run["totals"] = {"stages": [s for s in STAGES if s in results], "wall_s": wall, "rtf": wall / duration,
                     "model_s": model, "non_model_s": wall - model,
                     "decodes_per_source": sum(r["decodes"] for r in results.values()) / max(sources, 1)}
    floor = (run.get("floor") or {}).get("crop_encode_floor_s")
    if floor:
        run["non_model_over_floor"] = {"face_clips": results["face_clips"]["non_model_s"] / floor,
                                       "all_stages": (wall - model) / floor}
    return run


# --------------------------------------------------------------------------- summary and report


def machine_info() -> dict:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or platform.machine())
    return {"cores": os.cpu_count(), "cpu_model": cpu, "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform(),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "memory_total_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 ** 3, 1)}


def git_state() -> str:
    """The commit measured, with '+dirty' when the working tree has changes (others' work in progress)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def memory_summary(runs: dict[str, dict]) -> dict:
    """Peak memory per scale and stage, the largest scale over the smallest, and which stages grow.

    A scale's peak is the largest stage peak over the stages measured at every scale, so a
    scale measured in parts is compared like for like; ``complete`` says whether all ran.
    """
    scales = sorted(int(s) for s in runs)
    if not scales or any("peak_mib" not in r for s in scales for r in runs[str(s)]["stages"].values()):
        return {}
    common = [stage for stage in STAGES if all(stage in runs[str(s)]["stages"] for s in scales)]
    per_stage = {stage: {str(s): runs[str(s)]["stages"][stage]["peak_mib"] for s in scales
                         if stage in runs[str(s)]["stages"]} for stage in STAGES}
    peak = {str(s): max((runs[str(s)]["stages"][stage]["peak_mib"] for stage in common), default=0.0)
            for s in scales}
    lo, hi = str(scales[0]), str(scales[-1])
    ratios = {stage: values[hi] / values[lo] for stage, values in per_stage.items() if lo in values and hi in values}
    ratio = peak[hi] / peak[lo] if peak[lo] else math.nan
    several = len(scales) > 1 and bool(common)
    return {"metric": "per stage, the larger of the Python process's VmHWM and the polled summed RSS of its "
                      "process tree (MiB); per scale, the largest stage", "scales": scales,
            "stages_compared": common, "complete": common == list(STAGES),
            "peak_mib": peak, "per_stage_peak_mib": per_stage,
            f"ratio_{hi}x_over_{lo}x": ratio, "per_stage_ratio": ratios, "flat_threshold": FLAT_RATIO,
            "flat": bool(ratio <= FLAT_RATIO) if several else None,
            "growing_stages": sorted(s for s, r in ratios.items() if r > FLAT_RATIO) if several else []}


def markdown(payload: dict) -> str:
    m = payload["machine"]
    lines = [f"# Scale benchmark ({m['date']})", "",
             (f"{m['cores']} cores ({m['cpu_model']}), {m['memory_total_gib']} GiB, Python {m['python']}, "
             f"torch {m['torch']}. {payload['contention_note']}"), "",
             "Models: " + ", ".join(f"{k}: {v}" for k, v in payload["models"].items()) + ".", "",
             ("| scale | source s | stage | wall s | RTF | model s | non-model s | decodes | peak MiB "
             "| process VmHWM MiB | tree RSS MiB (polled) | load avg 1m |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for scale in sorted(payload["runs"], key=int):
        run = payload["runs"][scale]
        for stage in [name for name in STAGES if name in run["stages"]]:  # JSON keys come back sorted
            r = run["stages"][stage]
            lines.append(f"| {scale}x | {run['source']['duration_s']:.1f} | {stage} | {r['wall_s']:.2f} | "
                         f"{r['rtf']:.3f} | {r['model_s']:.2f} | {r['non_model_s']:.2f} | {r['decodes']} | "
                         f"{r.get('peak_mib', math.nan):.0f} | {r.get('peak_process_rss_mib', math.nan):.0f} | "
                         f"{r.get('peak_tree_rss_mib', math.nan):.0f} "
                         f"| {r.get('loadavg_1m', float('nan')):.2f} |")
        t = run["totals"]
        lines.append(f"| {scale}x | {run['source']['duration_s']:.1f} | **all** | {t['wall_s']:.2f} | {t['rtf']:.3f} | "
                     f"{t['model_s']:.2f} | {t['non_model_s']:.2f} | {t['decodes_per_source']:g}/source | | | | |")
    lines += ["", ("| scale | ffmpeg decode s | ffmpeg floor s | face non-model / floor | all non-model / floor "
              "| raw read MB/s | loader MB/s | raw samples/s | loader samples/s | loader / raw |"),
              "|---|---|---|---|---|---|---|---|---|---|"]
    for scale in sorted(payload["runs"], key=int):
        run = payload["runs"][scale]
        floor, ratio, read = run.get("floor", {}), run.get("non_model_over_floor", {}), run.get("shard_read") or {}
        lines.append(f"| {scale}x | {floor.get('decode_only_s', float('nan')):.2f} | "
                     f"{floor.get('crop_encode_floor_s', float('nan')):.2f} | {ratio.get('face_clips', float('nan')):.2f} | "
                     f"{ratio.get('all_stages', float('nan')):.2f} | {read.get('raw_bytes_per_s', math.nan) / 1e6:.0f} | "
                     f"{read.get('loader_bytes_per_s', math.nan) / 1e6:.1f} | {read.get('raw_samples_per_s', math.nan):.0f} | "
                     f"{read.get('loader_samples_per_s', math.nan):.2f} | {read.get('loader_over_raw', math.nan):.4f} |")
    mem = payload.get("memory") or {}
    if mem:
        key = next(k for k in mem if k.startswith("ratio_"))
        lines += ["", f"Peak memory ({mem['metric']}): " + ", ".join(f"{s}x {v:.0f}" for s, v in mem["peak_mib"].items())
                  + f"; {key.removeprefix('ratio_').replace('_over_', ' / ')} = {mem[key]:.2f} -> "
                  + ("flat" if mem["flat"] else "NOT flat" if mem["flat"] is False else "one scale only")
                  + ("" if mem.get("complete") else f" (stages compared: {', '.join(mem.get('stages_compared', []))})")
                  + f" (threshold {FLAT_RATIO}). Per stage: "
                  + ", ".join(f"{s} {mem['per_stage_ratio'][s]:.2f}" for s in STAGES if s in mem["per_stage_ratio"]) + "."]
        if mem.get("growing_stages"):
            lines.append(f"Growing: {', '.join(mem['growing_stages'])}.")
    loader = next((r["shard_read"]["loader"] for r in payload["runs"].values() if r.get("shard_read")), None)
    lines += ["", ("RTF = stage wall (model loading excluded) / source seconds. Floor = one ffmpeg decoding the source "
              "and encoding as many 384x384 24 fps frames with the config's x264 settings (bench_pipeline.py). "
              f"Shard loader: {loader}.")]
    if payload.get("findings"):
        lines += ["", "## Findings", "", *[f"- {f}" for f in payload["findings"]]]
    return "\n".join(lines) + "\n"


def merge(previous: dict | None, payload: dict) -> dict:
    """``payload`` plus what ``previous`` measured and it did not (for ``--append``): other
    scales whole, and for a scale measured in parts, the stages (and floor, shard read) of each part."""
    if previous is None:
        return payload
    runs = dict(previous.get("runs", {}))
    for scale, run in payload["runs"].items():
        old = runs.get(scale)
        if old is None or "face_clips" in run["stages"]:
            runs[scale] = run
            continue
        merged = {**old, **{k: v for k, v in run.items() if k != "stages"},
                  "stages": {**old["stages"], **run["stages"]}}
        merged["stages"] = {s: merged["stages"][s] for s in STAGES if s in merged["stages"]}
        runs[scale] = derive(merged)
    history = previous.get("invocations", []) + payload["invocations"]
    return {**payload, "runs": runs, "invocations": history, "findings": previous.get("findings", [])}


# --------------------------------------------------------------------------- CLI


def worker_main(stage: str, config_path: Path, out: Path) -> int:
    result = run_stage(stage, load_config(config_path))
    out.write_text(json.dumps({**result, "peak_process_rss_mib": process_peak_rss_bytes() / MIB}))
    return 0


def parse_durations(text: str) -> list[int]:
    values = sorted({int(v) for v in text.split(",") if v.strip()})
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError("durations are positive integers, e.g. 1,4,16")
    return values


def parse_stages(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = sorted(set(names) - set(STAGES))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"stages are among {', '.join(STAGES)}; got {text!r}")
    return [s for s in STAGES if s in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--durations", type=parse_durations, default=list(DEFAULT_DURATIONS),
                        help="multiples of the 1x source to run (default: 1,4,16)")
    parser.add_argument("--append", action="store_true", help="merge into the existing JSON instead of replacing it")
    parser.add_argument("--base-clips", type=int, default=DEFAULT_BASE_CLIPS, help="GRID clips joined into 1x")
    parser.add_argument("--media-dir", type=Path, default=DEFAULT_MEDIA_DIR)
    parser.add_argument("--model-dir", type=Path, default=Path(os.environ.get(MODEL_DIR_ENV) or DEFAULT_MODEL_DIR))
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--stages", type=parse_stages, default=list(STAGES),
                        help="comma-separated stages to run (default: all); later stages alone need --keep "
                             "with the folder of an earlier invocation that ran the stages before them")
    parser.add_argument("--keep", type=Path, help="keep the work folders here (default: a temporary folder)")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: re-render the markdown from the existing JSON (with --findings)")
    parser.add_argument("--findings", type=Path, help="text file, one finding per line, stored in the JSON and table")
    parser.add_argument("--worker", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args.worker, args.config, args.worker_out)
    json_path, md_path = args.out_dir / JSON_NAME, args.out_dir / MARKDOWN_NAME
    if args.report_only:
        if not json_path.exists():
            parser.error(f"--report-only: {json_path} does not exist")
        return write_results(json.loads(json_path.read_text()), args.findings, json_path, md_path)
    if shutil.which("ffmpeg") is None:
        parser.error("ffmpeg is not on PATH")

    work = Path(tempfile.mkdtemp(prefix="bench-scale-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    try:
        payload = run_benchmark(args, work)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    previous = json.loads(json_path.read_text()) if args.append and json_path.exists() else None
    return write_results(merge(previous, payload), args.findings, json_path, md_path)


def write_results(payload: dict, findings: Path | None, json_path: Path, md_path: Path) -> int:
    payload["memory"] = memory_summary(payload["runs"])
    if findings is not None:
        payload["findings"] = [line.strip() for line in findings.read_text().splitlines() if line.strip()]
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(payload, indent=1, sort_keys=True))
    text = markdown(payload)
    md_path.write_text(text)
    print(text)
    print(f"wrote {json_path} and {md_path}")
    return 0


def run_benchmark(args: argparse.Namespace, work: Path) -> dict:
    model_dir, used = prepare_model_dir(args.model_dir.resolve(), work)
    config = load_config(paths={"model_dir": model_dir})
    clips = base_clips(args.media_dir, args.base_clips)
    base = work / f"base-{args.base_clips}.mp4"
    if not base.exists():
        make_base_source(clips, base)
    load_start = os.getloadavg()
    runs = {}
    for scale in args.durations:
        print(f"scale x{scale}: {', '.join(args.stages)}", flush=True)
        runs[str(scale)] = bench_scale(scale, base, config, work / f"x{scale}", args.stages)
    invocation = {"durations": args.durations, "stages": args.stages, "loadavg_start": list(load_start)}
    return build_payload(runs, config, used, clips, base, invocation)


def build_payload(runs: dict[str, dict], config: PipelineConfig, used: dict[str, str], clips: list[Path],
                  base: Path, invocation: dict) -> dict:
    """The JSON document for ``runs`` (scale -> bench_scale result), with machine and model facts."""
    from pipelines.models import ModelStore

    store = ModelStore(config.paths.model_dir)
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return {
        "benchmark": "bench/bench_scale.py",
        "machine": machine_info(),
        "contention_note": "Measured on a machine shared with other agents' jobs (see the load averages): absolute "
                           "timings are inflated and noisy; compare ratios taken within one run.",
        "invocations": [{**invocation, "git": git_state(), "date": now, "loadavg_end": list(os.getloadavg())}],
        "base_source": {"clips": [p.name for p in clips], "duration_s": media.probe(base).duration_s},
        "config": {"hash": config.content_hash(), "encode": config.encode.model_dump(),
                   "crops": config.crops.model_dump(), "faces_backend": config.faces.backend},
        "models": {"faces": f"{config.faces.backend} ({store.status('scrfd_500m').state})",
                   "asd": f"{config.asd.model} ({store.status(config.asd.model).state})",
                   "speech": f"{config.speech.activity_backend} + {config.speech.transcription_backend} + "
                             f"{config.speech.language_identifier}", **used},
        "runs": runs,
        "memory": memory_summary(runs),
    }


if __name__ == "__main__":
    sys.exit(main())
