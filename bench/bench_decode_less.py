"""Decode less in the face stage: the small detection frame + region-only RGB, before vs after.

In one run, on a 12 s 1080p source composed from four GRID clips (bench/bench_gates.py's
compose_1080p) and on the six GRID clips themselves, this

* runs scan -> the face stage -> write_shards (as bench/bench_pipeline.py does) with the code of
  a baseline revision (``git archive``, default: the commit before the detection frame) and with
  the working tree, alternately, ``--repeat`` times, each in its own process (peak RSS from
  wait4); the working tree runs with ``detection_schedule.enabled: false`` so only the decode
  changes are compared;
* times the ffmpeg floor (one decode + one x264 encode of the crop frames, bench_pipeline's)
  between them, so ``non_model_over_floor`` of both is measured under the same load;
* compares the clips both wrote: per-frame PSNR of the decoded mp4s, byte equality, box tables;
* times the parts per frame in this process (decode, conversions, crop, shot detector, face
  signature, sharpness, detector) on the 1080p source, old way vs new way.

    python bench/bench_decode_less.py [--repeat 2] [--baseline-rev REV] [--out bench/results/decode_less]
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
DEFAULT_MEDIA_DIR = REPO.parent / "shared" / "media" / "grid"
DEFAULT_MODEL_DIR = REPO.parent / "shared" / "models"
# The commit whose decoder converted every frame to full-resolution RGB.
DEFAULT_BASELINE_REV = "1015b30^"


@dataclass
class StageRun:
    tree: str
    wall_s: float
    detector_s: float
    non_model_s: float
    output_frames: int
    crop_side_px: float | None
    peak_rss_mib: float
    cpu_s: float  # user + sys of the worker and the encoders it waited for (less load-sensitive than wall)
    loadavg_1m: float
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)  # segment key -> {"mp4", "boxes"}


# --------------------------------------------------------------------------- worker (one tree, one process)


def worker(tree: Path, videos: list[Path], data_root: Path, model_dir: Path, schedule: bool) -> dict:
    """The face stage on ``videos`` with the code of ``tree``; the outputs stay in ``data_root``."""
    sys.path.insert(0, str(tree))
    from bench.timed_backends import TimedBackends
    from pipelines.config import PipelineConfig, load_config
    from pipelines.ingest import SourceRegistry
    from pipelines.runner import close_backends, run_sources
    from pipelines.schema.records import ACCEPTED
    from pipelines.shards import write_shards
    from pipelines.workdir import source_dir

    import numpy as np

    input_dir, data_dir = data_root / "input", data_root / "data"
    input_dir.mkdir(parents=True)
    for video in videos:
        shutil.copyfile(video, input_dir / video.name)
    overrides: dict = {name: {"enabled": False} for name in ("speech", "asd", "flame", "captions")}
    if "detection_schedule" in PipelineConfig.model_fields:
        overrides["detection_schedule"] = {"enabled": schedule}
    config = load_config(paths={"model_dir": model_dir, "input_dir": input_dir, "data_dir": data_dir}, **overrides)
    backends = TimedBackends(config)
    detector = backends.get("faces")
    detector.detect(np.zeros((64, 64, 3), np.uint8))  # session start-up is not the stage's cost
    backends.reset()
    start = time.perf_counter()
    refs = SourceRegistry(config.paths.registry_path).scan(config.paths.input_dir, config.ingest.extensions)
    records = run_sources(refs, config, backends=backends, stages=["faces"], progress=False).records
    write_shards(records, config)
    wall = time.perf_counter() - start
    detector_s, _ = backends.model_time("faces")
    close_backends()
    outputs, frames, sides = {}, 0, []
    for rec in records:
        if rec.status != ACCEPTED:
            print(f"warning: {rec.source.relpath}: {rec.status} ({rec.reason})", file=sys.stderr)
        for seg in rec.accepted_segments():
            folder = source_dir(config, rec.source.source_id)
            sample = json.loads((folder / seg.files["json"]).read_text())
            frames += int(sample["video"]["frames"])
            sides.append(float(seg.numbers["crop_side_px"]["mean"]))
            outputs[f"{Path(rec.source.relpath).stem}:{seg.key.rsplit('_', 1)[-1]}"] = {
                "mp4": str(folder / seg.files["mp4"]), "boxes": str(folder / seg.files["boxes.npy"])}
    return {"wall_s": wall, "detector_s": detector_s, "output_frames": frames,
            "crop_side_px": float(np.mean(sides)) if sides else None, "outputs": outputs}


def run_worker(tree: Path, label: str, videos: list[Path], data_root: Path, model_dir: Path,
               schedule: bool = False) -> StageRun:
    """:func:`worker` in a fresh process (its own imports, its peak RSS)."""
    out = data_root / "worker.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(tree), "--data-root", str(data_root),
           "--model-dir", str(model_dir), "--worker-json", str(out), *(["--schedule"] if schedule else []),
           *map(str, videos)]
    proc = subprocess.Popen(cmd, cwd=tree)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"worker for {label} failed: {' '.join(cmd)}")
    result = json.loads(out.read_text())
    return StageRun(tree=label, wall_s=result["wall_s"], detector_s=result["detector_s"],
                    non_model_s=result["wall_s"] - result["detector_s"], output_frames=result["output_frames"],
                    crop_side_px=result["crop_side_px"], peak_rss_mib=usage.ru_maxrss / 1024,
                    cpu_s=usage.ru_utime + usage.ru_stime,
                    loadavg_1m=os.getloadavg()[0], outputs=result["outputs"])


# --------------------------------------------------------------------------- output comparison


def compare_outputs(before: StageRun, after: StageRun) -> dict:
    """Per segment: byte equality of the mp4, PSNR of the decoded frames, largest box difference."""
    import numpy as np

    from pipelines.media.decode import read_video_frames

    rows = {}
    for key in sorted(set(before.outputs) | set(after.outputs)):
        if key not in before.outputs or key not in after.outputs:
            rows[key] = {"only_in": "after" if key in after.outputs else "before"}
            continue
        a, b = before.outputs[key], after.outputs[key]
        frames_a, frames_b = read_video_frames(Path(a["mp4"])), read_video_frames(Path(b["mp4"]))
        psnr = []
        for x, y in zip(frames_a, frames_b):
            mse = float(np.mean((x.astype(np.float64) - y) ** 2))
            psnr.append(float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse))
        boxes_a, boxes_b = np.load(a["boxes"]), np.load(b["boxes"])
        same_shape = boxes_a.shape == boxes_b.shape
        rows[key] = {
            "frames": [len(frames_a), len(frames_b)],
            "mp4_identical": Path(a["mp4"]).read_bytes() == Path(b["mp4"]).read_bytes(),
            "psnr_db_min": min(psnr) if psnr else None,
            "psnr_db_mean": float(np.mean([min(p, 99.0) for p in psnr])) if psnr else None,
            "box_max_abs_px": float(np.nanmax(np.abs(boxes_a[:, 1:5] - boxes_b[:, 1:5]))) if same_shape else None,
            "crop_max_abs_px": float(np.nanmax(np.abs(boxes_a[:, 6:9] - boxes_b[:, 6:9]))) if same_shape else None,
            "sharpness_max_rel": (float(np.nanmax(np.abs(boxes_a[:, 11] - boxes_b[:, 11]) / boxes_a[:, 11]))
                                  if same_shape else None),
        }
    return rows


# --------------------------------------------------------------------------- per-frame parts


def _mean_ms(fn, items) -> float:
    start = time.perf_counter()
    for item in items:
        fn(item)
    return (time.perf_counter() - start) / max(1, len(items)) * 1000


def time_parts(video: Path, model_dir: Path, crop_side: float, frames_n: int) -> dict:
    """Per-frame milliseconds of each part, old way (whole RGB frame) vs new way, on ``video``."""
    import av
    import cv2
    import numpy as np

    from pipelines.config import load_config
    from pipelines.faces.clips import detect_frame, frame_face_signature
    from pipelines.faces.crop import fit_square
    from pipelines.faces.detectors import build_detector
    from pipelines.faces.quality import face_sharpness, frame_face_sharpness
    from pipelines.faces.shots import ShotCutDetector, face_signature
    from pipelines.media.decode import DETECTION_INTERPOLATION, _converted, decode_source, probe
    from pipelines.media.wav import WavSink
    from pipelines.models import ModelStore

    config = load_config(paths={"model_dir": model_dir})
    size = config.crops.size_px
    out: dict[str, float] = {}

    def decode_loop(convert) -> float:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            start = time.perf_counter()
            for number, decoded in enumerate(container.decode(stream)):
                convert(decoded)
                if number + 1 == frames_n:
                    break
            return (time.perf_counter() - start) / frames_n * 1000

    small_w, small_h = 640, 360
    out["decode_only_ms"] = decode_loop(lambda d: None)
    out["decode_full_rgb_ms"] = decode_loop(lambda d: d.to_ndarray(format="rgb24"))
    # The decoder's own conversion (a libswscale context kept between frames), area-averaged.
    out["decode_detection_frame_ms"] = decode_loop(lambda d: _converted(d, small_w, small_h, DETECTION_INTERPOLATION))
    out["decode_full_rgb_kept_context_ms"] = decode_loop(lambda d: _converted(d))
    with tempfile.TemporaryDirectory() as tmp:
        sink = WavSink(Path(tmp) / "a.wav", 16000)
        start = time.perf_counter()
        frames = []
        for frame in decode_source(video, sink, probe(video).rotation_deg,
                                   detection_max_px=config.faces.detection_frame_px):
            frames.append(frame)
            if len(frames) == frames_n:
                break
        out["decode_source_with_audio_ms"] = (time.perf_counter() - start) / frames_n * 1000
        sink.close()
    whole = [f.rgb for f in frames]
    out["held_bytes_per_frame_after"] = float(frames[0].held_bytes)
    out["held_bytes_per_frame_before"] = float(whole[0].nbytes)

    detector = build_detector(config.faces, ModelStore(model_dir))
    faces = [detect_frame(detector, f, config.faces) for f in frames]
    boxes = [found[0] if found else None for found in faces]
    w, h = frames[0].width, frames[0].height
    squares = [fit_square((b.box[0] + b.box[2]) / 2, (b.box[1] + b.box[3]) / 2, crop_side, w, h) if b else
               fit_square(w / 2, h / 2, crop_side, w, h) for b in boxes]
    pairs = list(zip(frames, whole, squares, boxes))

    def resize(crop):
        interp = cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_CUBIC
        return cv2.resize(crop, (size, size), interpolation=interp)

    out["crop_slice_of_whole_rgb_ms"] = _mean_ms(lambda p: np.ascontiguousarray(p[2].apply(p[1])), pairs)
    out["crop_region_rgb_ms"] = _mean_ms(
        lambda p: p[0].region_rgb(p[2].x, p[2].y, p[2].x + p[2].side, p[2].y + p[2].side), pairs)
    out["crop_resize_to_384_ms"] = _mean_ms(lambda p: resize(p[2].apply(p[1])), pairs)
    shots_whole, shots_small = ShotCutDetector(config.shots, 25.0), ShotCutDetector(config.shots, 25.0)
    out["shots_step_whole_ms"] = _mean_ms(lambda p: shots_whole.step(p[0].index, p[1]), pairs)
    out["shots_step_detection_frame_ms"] = _mean_ms(lambda p: shots_small.step(p[0].index, p[0].detection_rgb), pairs)
    measured = [p for p in pairs if p[3] is not None]
    out["signature_whole_ms"] = _mean_ms(lambda p: face_signature(p[1], p[3]), measured)
    out["signature_detection_frame_ms"] = _mean_ms(lambda p: frame_face_signature(p[0], p[3]), measured)
    out["sharpness_whole_ms"] = _mean_ms(lambda p: face_sharpness(p[1], p[3].box), measured)
    out["sharpness_region_ms"] = _mean_ms(lambda p: frame_face_sharpness(p[0], p[3].box), measured)
    out["detector_whole_frame_ms"] = _mean_ms(lambda p: detector.detect(p[1]), pairs)
    out["detector_detection_frame_ms"] = _mean_ms(lambda p: detector.detect(p[0].detection_rgb), pairs)
    detector.close()
    out["frames_timed"] = float(frames_n)
    out["crop_side_px"] = float(crop_side)
    return out


# --------------------------------------------------------------------------- floor, report


def floor_s(video: Path, frames: int, crop_side: float | None, work: Path) -> float:
    sys.path.insert(0, str(REPO))
    from bench.bench_pipeline import floor_crop_filter, time_crop_encode_floor
    from pipelines.config import load_config
    from pipelines.media.decode import probe

    config = load_config()
    info = probe(video)
    crop = floor_crop_filter(info.width, info.height, crop_side, config.crops.size_px, config.crops.fps)
    return time_crop_encode_floor(video, frames, crop, config, work / "floor.mp4")


def summarise(runs: list[StageRun], floors: list[float]) -> dict:
    best = min(runs, key=lambda r: r.wall_s)
    paired = [r.non_model_s / f for r, f in zip(runs, floors)]
    return {"best_wall_s": best.wall_s, "best_detector_s": best.detector_s, "best_non_model_s": best.non_model_s,
            "non_model_over_floor_per_repeat": paired, "non_model_over_floor_best": min(paired),
            "peak_rss_mib": max(r.peak_rss_mib for r in runs)}


def markdown(payload: dict) -> str:
    b, a = payload["video_1080p"]["before"], payload["video_1080p"]["after"]
    lines = [
        "# Decode less in the face stage (issue 15, part 2)",
        "",
        f"Source: {payload['video_1080p']['source']} (12 s, 1920x1080, 25 fps, four GRID clips upscaled).",
        f"Baseline: `{payload['baseline_rev']}` ({payload['baseline_commit'][:10]}); after: working tree with "
        "detection_schedule off. Repeats alternate before/floor/after; loadavg (1 min) is recorded with each run.",
        f"Host: {payload['host']['cpus']} CPUs, loadavg at start {payload['host']['loadavg_start']}, "
        f"at end {payload['host']['loadavg_end']}.",
        "",
        "| | wall s | detector s | non-model s | floor s | non-model / floor | CPU s (process) | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    floors = payload["video_1080p"]["floor_runs_s"]
    for label, runs in (("before", payload["video_1080p"]["before_runs"]), ("after", payload["video_1080p"]["after_runs"])):
        for run, floor in zip(runs, floors):
            lines.append(f"| {label} (load {run['loadavg_1m']:.1f}) | {run['wall_s']:.2f} | {run['detector_s']:.2f} | "
                         f"{run['non_model_s']:.2f} | {floor:.2f} | {run['non_model_s'] / floor:.2f} | "
                         f"{run['cpu_s']:.1f} | {run['peak_rss_mib']:.0f} |")
    lines += ["", f"Best non-model / floor: before {b['non_model_over_floor_best']:.2f}, "
                  f"after {a['non_model_over_floor_best']:.2f}.", "", "## Per-frame parts (ms, this process, 1080p)", "",
              "| part | ms |", "|---|---:|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in payload["parts_ms"].items() if k.endswith("_ms")]
    held_a, held_b = payload["parts_ms"]["held_bytes_per_frame_after"], payload["parts_ms"]["held_bytes_per_frame_before"]
    lines += ["", f"Held per frame while tracks need it: before {held_b / 2**20:.2f} MiB (RGB), after "
                  f"{held_a / 2**20:.2f} MiB (yuv420p planes + 640x360 detection frame).", "",
              "## Outputs, before vs after", "", "| clip:segment | frames | mp4 identical | PSNR min dB | PSNR mean dB "
              "| box max px | crop max px | sharpness max rel |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for key, row in {**payload["video_1080p"]["outputs"], **payload["grid"]["outputs"]}.items():
        if "only_in" in row:
            lines.append(f"| {key} | only in {row['only_in']} | | | | | | |")
            continue
        fmt = lambda v, f: "" if v is None else f.format(v)  # noqa: E731
        lines.append(f"| {key} | {row['frames'][0]}/{row['frames'][1]} | {row['mp4_identical']} | "
                     f"{fmt(row['psnr_db_min'], '{:.1f}')} | {fmt(row['psnr_db_mean'], '{:.1f}')} | "
                     f"{fmt(row['box_max_abs_px'], '{:.2f}')} | {fmt(row['crop_max_abs_px'], '{:.0f}')} | "
                     f"{fmt(row['sharpness_max_rel'], '{:.4f}')} |")
    lines.append("")
    lines.append("PSNR of identical frames is infinite (shown as inf; the mean caps each frame at 99 dB).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("videos", nargs="*", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--media-dir", type=Path, default=DEFAULT_MEDIA_DIR)
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--baseline-rev", default=DEFAULT_BASELINE_REV)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--parts-frames", type=int, default=100, help="frames timed per part (default 100)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "decode_less",
                        help="writes OUT.json and OUT.md")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data-root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker-json", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--schedule", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = worker(args.worker, args.videos, args.data_root, args.model_dir, args.schedule)
        args.worker_json.write_text(json.dumps(result))
        return 0

    sys.path.insert(0, str(REPO))
    from bench.bench_gates import compose_1080p

    loadavg_start = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="bench-decode-less-"))
    try:
        baseline = work / "baseline"
        baseline.mkdir()
        commit = subprocess.run(["git", "rev-parse", args.baseline_rev], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout.strip()
        archive = subprocess.run(["git", "archive", commit], cwd=REPO, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(baseline)], input=archive, check=True)
        video = compose_1080p(args.media_dir, 4, work / "grid_1080p.mp4")
        before_runs, after_runs, floors = [], [], []
        for number in range(args.repeat):
            before_runs.append(run_worker(baseline, "before", [video], work / f"before{number}", args.model_dir))
            floors.append(floor_s(video, before_runs[0].output_frames, before_runs[0].crop_side_px, work))
            after_runs.append(run_worker(REPO, "after", [video], work / f"after{number}", args.model_dir))
            print(f"repeat {number}: before {before_runs[-1].non_model_s:.2f} s, floor {floors[-1]:.2f} s, "
                  f"after {after_runs[-1].non_model_s:.2f} s non-model", flush=True)
        grid = sorted(args.media_dir.glob("*.mpg"))
        grid_before = run_worker(baseline, "before", grid, work / "grid_before", args.model_dir)
        grid_after = run_worker(REPO, "after", grid, work / "grid_after", args.model_dir)
        parts = time_parts(video, args.model_dir, after_runs[0].crop_side_px or 480.0, args.parts_frames)
        payload = {
            "baseline_rev": args.baseline_rev, "baseline_commit": commit, "repeat": args.repeat,
            "host": {"cpus": os.cpu_count(), "loadavg_start": round(loadavg_start, 2),
                     "loadavg_end": round(os.getloadavg()[0], 2), "platform": platform.platform()},
            "video_1080p": {
                "source": "bench_gates.compose_1080p(4 GRID clips)",
                "before_runs": [asdict(r) | {"outputs": len(r.outputs)} for r in before_runs],
                "after_runs": [asdict(r) | {"outputs": len(r.outputs)} for r in after_runs],
                "floor_runs_s": floors,
                "before": summarise(before_runs, floors), "after": summarise(after_runs, floors),
                "outputs": compare_outputs(before_runs[0], after_runs[0]),
            },
            "grid": {"before_wall_s": grid_before.wall_s, "after_wall_s": grid_after.wall_s,
                     "outputs": compare_outputs(grid_before, grid_after)},
            "parts_ms": parts,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=1, default=str))
    args.out.with_suffix(".md").write_text(markdown(payload))
    print(markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
