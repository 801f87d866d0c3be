"""Benchmark the face-clip pipeline on real videos against an ffmpeg floor.

For each video, in a fresh temporary data dir per repetition, this runs
scan -> the face stage (through the stage runner) -> write_shards and reports the best wall time, the number of
source decodes (``pipelines.media.decode.DECODE_COUNTS``; goal: 1), the time spent inside the
face detector and everything else ("non-model" time). In the same run it times an
ffmpeg floor: one plain decode of the source, and one ffmpeg that decodes the source and
encodes a 384x384, 24 fps crop of as many frames as the pipeline wrote, with the
config's x264 settings.

    python bench/bench_pipeline.py [VIDEO_OR_DIR ...] [--model-dir DIR]
        [--backend scrfd|mediapipe] [--repeat N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/bench_pipeline.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from pipelines.media import decode as media  # noqa: E402
from pipelines.config import MODEL_DIR_ENV, PipelineConfig, load_config  # noqa: E402
from pipelines.ingest import SourceRegistry  # noqa: E402
from pipelines.runner import close_backends, run_sources  # noqa: E402
from pipelines.schema.records import ACCEPTED  # noqa: E402
from pipelines.shards import write_shards  # noqa: E402
from pipelines.workdir import source_dir  # noqa: E402

from bench.timed_backends import TimedBackends  # noqa: E402

DEFAULT_MEDIA_DIR = REPO.parent / "shared" / "media" / "grid"
DEFAULT_MODEL_DIR = REPO.parent / "shared" / "models"


# --------------------------------------------------------------------------- results


@dataclass
class PipelineRun:
    wall_s: float
    detector_s: float
    detector_calls: int
    decodes: int  # source decodes counted by pipelines.media.decode.DECODE_COUNTS
    sources: int
    accepted_segments: int
    output_frames: int
    crop_side_px: float | None  # mean crop side over accepted segments (for the floor's crop)

    @property
    def non_model_s(self) -> float:
        return self.wall_s - self.detector_s


@dataclass
class VideoResult:
    video: str
    duration_s: float
    width: int
    height: int
    runs: list[PipelineRun]
    decode_only_s: list[float] = field(default_factory=list)
    floor_s: list[float] = field(default_factory=list)
    floor_frames: int = 0

    @property
    def best(self) -> PipelineRun:
        return min(self.runs, key=lambda r: r.wall_s)

    def summary(self) -> dict:
        best = self.best
        floor = min(self.floor_s)
        return {
            "video": self.video,
            "duration_s": self.duration_s,
            "wall_s": best.wall_s,
            "realtime_factor": best.wall_s / self.duration_s,
            "decodes_per_source": best.decodes / max(best.sources, 1),
            "detector_s": best.detector_s,
            "detector_calls": best.detector_calls,
            "non_model_s": best.non_model_s,
            "decode_only_s": min(self.decode_only_s),
            "floor_s": floor,
            "floor_frames": self.floor_frames,
            "wall_over_floor": best.wall_s / floor,
            "non_model_over_floor": best.non_model_s / floor,
            "accepted_segments": best.accepted_segments,
            "output_frames": best.output_frames,
        }


# --------------------------------------------------------------------------- measurement


def run_pipeline_once(video: Path, config: PipelineConfig, backends: TimedBackends) -> PipelineRun:
    """scan + the face stage + write_shards on ``video`` alone, in a fresh data dir, timed."""
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        input_dir, data_dir = Path(tmp) / "input", Path(tmp) / "data"
        input_dir.mkdir()
        shutil.copyfile(video, input_dir / video.name)  # a link leaving the input folder would be skipped
        cfg = PipelineConfig.model_validate(
            {**config.model_dump(), "paths": {**config.paths.model_dump(), "input_dir": input_dir, "data_dir": data_dir}})
        media.DECODE_COUNTS.clear()
        backends.reset()
        start = time.perf_counter()
        refs = SourceRegistry(cfg.paths.registry_path).scan(cfg.paths.input_dir, cfg.ingest.extensions)
        records = run_sources(refs, cfg, backends=backends, stages=["faces"], progress=False).records
        write_shards(records, cfg)
        wall = time.perf_counter() - start
        for rec in records:
            if rec.status != ACCEPTED:
                print(f"warning: {video.name}: source {rec.status} ({rec.reason}: {rec.detail})", file=sys.stderr)
        segments = [seg for rec in records for seg in rec.accepted_segments()]
        frames, sides = 0, []
        for rec in records:
            for seg in rec.accepted_segments():
                sample = json.loads((source_dir(cfg, rec.source_id) / seg.files["json"]).read_text())
                frames += int(sample["video"]["frames"])
                sides.append(float(seg.numbers["crop_side_px"]["mean"]))
        detector_s, detector_calls = backends.model_time("faces")
        return PipelineRun(
            wall_s=wall,
            detector_s=detector_s,
            detector_calls=detector_calls,
            decodes=sum(media.DECODE_COUNTS.values()),
            sources=len(refs),
            accepted_segments=len(segments),
            output_frames=frames,
            crop_side_px=float(np.mean(sides)) if sides else None,
        )


def _time_ffmpeg(args: list[str]) -> float:
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-1000:]}")
    return elapsed


def time_decode_only(video: Path) -> float:
    """One full decode of the source (video and audio) with nothing written."""
    return _time_ffmpeg(["-i", str(video), "-f", "null", "-"])


def floor_crop_filter(width: int, height: int, side_px: float | None, size_px: int, fps: float) -> str:
    """A centred square crop of the pipeline's mean crop side, scaled and resampled like the pipeline's."""
    side = int(round(side_px)) if side_px else min(width, height)
    side = max(2, min(side, width, height))
    return (f"crop={side}:{side}:{(width - side) // 2}:{(height - side) // 2},"
            f"scale={size_px}:{size_px}:flags=area,fps={fps:g}")


def time_crop_encode_floor(video: Path, frames: int, crop_filter: str, config: PipelineConfig, out: Path) -> float:
    """One ffmpeg that decodes the source and encodes ``frames`` crop frames with the config's x264 settings."""
    enc = config.encode
    return _time_ffmpeg([
        "-i", str(video), "-an", "-vf", crop_filter, "-frames:v", str(frames),
        "-c:v", enc.video_codec, "-preset", enc.preset, "-crf", str(enc.crf), "-pix_fmt", "yuv420p",
        "-threads", str(enc.threads), "-x264-params", f"threads={enc.threads}", str(out),
    ])


def bench_video(video: Path, config: PipelineConfig, backends: TimedBackends, repeat: int) -> VideoResult:
    """Best-of-``repeat`` pipeline and floor timings; each repetition runs both, so they share the machine's load."""
    info = media.probe(video)
    result = VideoResult(str(video), info.duration_s, info.width, info.height, runs=[])
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        crop_filter = None
        for _ in range(repeat):
            run = run_pipeline_once(video, config, backends)
            result.runs.append(run)
            if crop_filter is None:  # the pipeline is deterministic: the first run fixes the floor's work
                result.floor_frames = run.output_frames
                crop_filter = floor_crop_filter(info.width, info.height, run.crop_side_px,
                                                config.crops.size_px, config.crops.fps)
            decode_s = time_decode_only(video)
            result.decode_only_s.append(decode_s)
            if result.floor_frames > 0:
                result.floor_s.append(time_crop_encode_floor(video, result.floor_frames, crop_filter, config,
                                                             Path(tmp) / "floor.mp4"))
            else:  # no clip written: there is nothing to encode, the floor is a plain decode
                result.floor_s.append(decode_s)
    return result


def totals(results: list[VideoResult]) -> dict:
    rows = [r.summary() for r in results]
    s = {key: sum(row[key] for row in rows) for key in
         ("duration_s", "wall_s", "detector_s", "non_model_s", "decode_only_s", "floor_s", "output_frames")}
    decodes = sum(r.best.decodes for r in results)
    sources = sum(r.best.sources for r in results)
    return {
        "video": f"TOTAL ({len(rows)} videos)",
        **s,
        "realtime_factor": s["wall_s"] / s["duration_s"],
        "decodes_per_source": decodes / max(sources, 1),
        "wall_over_floor": s["wall_s"] / s["floor_s"],
        "non_model_over_floor": s["non_model_s"] / s["floor_s"],
    }


# --------------------------------------------------------------------------- reporting

COLUMNS = (  # (header, key, format)
    ("video", "video", "{}"),
    ("dur s", "duration_s", "{:.2f}"),
    ("wall s", "wall_s", "{:.3f}"),
    ("RTF", "realtime_factor", "{:.3f}"),
    ("decodes/src", "decodes_per_source", "{:g}"),
    ("detector s", "detector_s", "{:.3f}"),
    ("non-model s", "non_model_s", "{:.3f}"),
    ("decode s", "decode_only_s", "{:.3f}"),
    ("floor s", "floor_s", "{:.3f}"),
    ("wall/floor", "wall_over_floor", "{:.2f}"),
    ("non-model/floor", "non_model_over_floor", "{:.2f}"),
)


def format_table(rows: list[dict]) -> str:
    cells = [[h for h, _, _ in COLUMNS]]
    for row in rows:
        cells.append([fmt.format(Path(row[k]).name if k == "video" and not row[k].startswith("TOTAL") else row[k])
                      for _, k, fmt in COLUMNS])
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
             for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if len(rows) > 1:
        lines.insert(len(lines) - 1, lines[1])
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI


def collect_videos(items: list[str], extensions: tuple[str, ...]) -> list[Path]:
    exts = {e.lower() for e in extensions}
    videos: list[Path] = []
    for item in items or [str(DEFAULT_MEDIA_DIR)]:
        path = Path(item)
        if path.is_dir():
            videos.extend(sorted(p for p in path.iterdir()
                                 if p.is_file() and p.suffix.lower() in exts and not p.name.startswith(".")))
        elif path.is_file():
            videos.append(path)
        else:
            raise SystemExit(f"error: {item} is neither a file nor a folder")
    if not videos:
        raise SystemExit("error: no videos found")
    return [v.resolve() for v in videos]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", nargs="*", metavar="VIDEO",
                        help=f"video files or folders (default: {DEFAULT_MEDIA_DIR})")
    parser.add_argument("--model-dir", type=Path,
                        default=Path(os.environ.get(MODEL_DIR_ENV) or DEFAULT_MODEL_DIR),
                        help=f"model weights folder (default: ${MODEL_DIR_ENV}, else {DEFAULT_MODEL_DIR})")
    parser.add_argument("--backend", choices=("scrfd", "mediapipe"), help="face detector (default: the config's)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions; the best is reported (default: 3)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write every measurement to this JSON file")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if shutil.which("ffmpeg") is None:
        parser.error("ffmpeg is not on PATH")

    overrides = {"faces": {"backend": args.backend}} if args.backend else {}
    # input/data dirs are replaced per run by temporary folders.
    # The face path is benchmarked here; later stages have bench/bench_speech.py and bench_asd.py.
    overrides.setdefault("speech", {"enabled": False})
    overrides.setdefault("asd", {"enabled": False})
    overrides.setdefault("flame", {"enabled": False})
    overrides.setdefault("captions", {"enabled": False})
    config = load_config(paths={"model_dir": args.model_dir}, **overrides)
    videos = collect_videos(args.videos, config.ingest.extensions)

    backends = TimedBackends(config)
    detector = backends.get("faces")
    try:
        # One untimed call so session/graph initialisation is not charged to the first video.
        first = media.probe(videos[0])
        detector.detect(np.zeros((max(first.height, 16), max(first.width, 16), 3), np.uint8))
        results = [bench_video(video, config, backends, args.repeat) for video in videos]
    finally:
        close_backends()

    rows = [r.summary() for r in results]
    if len(rows) > 1:
        rows.append(totals(results))
    print(f"backend={config.faces.backend} ({detector.name})  repeat={args.repeat} (best)  "
          f"x264 preset={config.encode.preset} crf={config.encode.crf} threads={config.encode.threads}  "
          f"cpus={os.cpu_count()}  loadavg(1m, at end)={os.getloadavg()[0]:.2f}")
    print(format_table(rows))
    print("RTF = wall / duration; floor = one ffmpeg decoding the source and encoding the same number of "
          f"{config.crops.size_px}x{config.crops.size_px} {config.crops.fps:g} fps crop frames; "
          "non-model = wall - detector")

    if args.json:
        payload = {
            "config": {"backend": config.faces.backend, "detector": detector.name, "model_dir": str(args.model_dir),
                       "encode": config.encode.model_dump(), "crops": config.crops.model_dump(),
                       "config_hash": config.content_hash()},
            "repeat": args.repeat,
            "host": {"cpus": os.cpu_count(), "loadavg_1m_at_end": os.getloadavg()[0], "platform": platform.platform(), "python": platform.python_version()},
            "videos": [{**r.summary(), "runs": [asdict(run) | {"non_model_s": run.non_model_s} for run in r.runs],
                        "decode_only_runs_s": r.decode_only_s, "floor_runs_s": r.floor_s} for r in results],
            "totals": totals(results) if len(results) > 1 else None,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
