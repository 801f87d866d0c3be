"""Decode less in the face stage: its non-model time against the ffmpeg floor on 1080p (issue 15).

In one run, on a 12 s 1080p source composed from four GRID clips (bench/bench_gates.py's
compose_1080p) and on the six GRID clips themselves, this

* runs scan -> the face stage -> write_shards (as bench/bench_pipeline.py does) with the default
  config (the detection schedule on) and the code of a baseline revision (``git archive``,
  default: the commit before the second pass) and of the working tree, alternately with the
  ffmpeg floor (bench_pipeline's: one ffmpeg decoding the source and encoding as many 384 px
  24 fps crop frames with the config's x264 settings), ``--repeat`` times, each in its own
  process (peak RSS and CPU from wait4), the 1-minute load average recorded with each run;
* reports non-model seconds (wall - detector seconds) over the floor run next to it, per repeat
  and best, for both trees;
* compares what both wrote: per-frame PSNR of the clips, box and crop tables, sharpness, and the
  stage's decisions (segments accepted or rejected with their times and reasons, shot cuts);
* times the parts per frame in this process (thread CPU), the previous way and this way.

    flock /tmp/bench.lock python bench/bench_decode_less.py [--repeat 3] [--baseline-rev REV] [--spinning]
        [--out bench/results/decode_less]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
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
# The commit before the second pass: detection frame made for every frame, crops converted to RGB
# and resized by cv2, an ffmpeg process per track (rgb24 through a pipe) and per clip (the mux).
DEFAULT_BASELINE_REV = "3e42b73"


@dataclass
class StageRun:
    tree: str
    wall_s: float
    detector_s: float
    non_model_s: float
    output_frames: int
    crop_side_px: float | None
    peak_rss_mib: float
    cpu_s: float  # user + sys of the worker and every process it waited for (imports and model loading included)
    stage_cpu_s: float  # user + sys over the timed work only
    loadavg_1m: float
    detected_frames: int = 0
    source_frames: int = 0
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)  # segment key -> {"mp4", "boxes"}
    decisions: dict[str, dict] = field(default_factory=dict)  # source -> segments and shot cuts


# --------------------------------------------------------------------------- worker (one tree, one process)


def _process_cpu_s() -> float:
    """User + sys seconds of this process's threads and of the children it waited for."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class _Recorded:
    """A detector whose answers are kept, call by call, for a later replay."""

    def __init__(self, detector, answers: list):
        self._detector, self.answers = detector, answers
        self.name, self.model_sha256 = detector.name, detector.model_sha256

    def detect(self, rgb):
        found = self._detector.detect(rgb)
        self.answers.append(found)
        return found

    def close(self) -> None:
        self._detector.close()


class _Replayed:
    """Gives a recorded run's answers in the same order: the stage without the model's time."""

    def __init__(self, detector, answers: list):
        self._answers = iter(answers)
        self.name, self.model_sha256 = detector.name, detector.model_sha256

    def detect(self, rgb):
        return next(self._answers)

    def close(self) -> None:
        pass


def worker(tree: Path, videos: list[Path], data_root: Path, model_dir: Path, record: Path | None = None,
           replay: Path | None = None, spinning: bool = False) -> dict:
    """The face stage on ``videos`` with the code of ``tree`` and the default config; the outputs
    stay in ``data_root``. ``record``: the detector's answers are pickled there; ``replay``: the
    detector gives the answers pickled there instead of running; ``spinning``: the detector's
    onnxruntime session is built with ``session.intra_op.allow_spinning`` 1 (its threads spin-wait
    between calls, onnxruntime's default; pipelines.devices turns it off)."""
    sys.path.insert(0, str(tree))
    import pickle

    if spinning:
        import onnxruntime

        import pipelines.devices

        limited = pipelines.devices.onnx_session_options

        def spinning_session_options():
            options = limited() or onnxruntime.SessionOptions()
            options.add_session_config_entry("session.intra_op.allow_spinning", "1")
            return options

        pipelines.devices.onnx_session_options = spinning_session_options

    from bench.timed_backends import TimedBackends
    from pipelines.config import load_config
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
    config = load_config(paths={"model_dir": model_dir, "input_dir": input_dir, "data_dir": data_dir}, **overrides)
    answers: list = pickle.loads(replay.read_bytes()) if replay else []

    class Backends(TimedBackends):
        def _wrap(self, name, backend):
            if name == "faces" and (record or replay):
                backend = (_Replayed if replay else _Recorded)(backend, answers)
            return super()._wrap(name, backend)

    backends = Backends(config)
    detector = backends.get("faces")
    if not replay:
        detector.detect(np.zeros((64, 64, 3), np.uint8))  # session start-up is not the stage's cost
        answers.clear()
    backends.reset()
    start, start_cpu = time.perf_counter(), _process_cpu_s()
    refs = SourceRegistry(config.paths.registry_path).scan(config.paths.input_dir, config.ingest.extensions)
    records = run_sources(refs, config, backends=backends, stages=["faces"], progress=False).records
    write_shards(records, config)
    wall, stage_cpu = time.perf_counter() - start, _process_cpu_s() - start_cpu
    detector_s, _ = backends.model_time("faces")
    close_backends()
    if record:
        record.write_bytes(pickle.dumps(answers))
    outputs, decisions, frames, sides, detected, source_frames = {}, {}, 0, [], 0, 0
    for rec in records:
        stem = Path(rec.source.relpath).stem
        if rec.status != ACCEPTED:
            print(f"warning: {rec.source.relpath}: {rec.status} ({rec.reason})", file=sys.stderr)
        schedule = rec.numbers.get("detection_schedule", {})
        detected += int(schedule.get("detected_frames", 0))
        source_frames += int(rec.numbers.get("decoded_frames", 0))
        decisions[stem] = {
            "status": rec.status, "reason": rec.reason, "shot_cuts_s": rec.numbers.get("shot_cuts_s"),
            "segments": [[seg.key.rsplit("_", 1)[-1], seg.status, seg.reason, seg.start_s, seg.end_s]
                         for seg in rec.segments]}
        for seg in rec.accepted_segments():
            folder = source_dir(config, rec.source.source_id)
            sample = json.loads((folder / seg.files["json"]).read_text())
            frames += int(sample["video"]["frames"])
            sides.append(float(seg.numbers["crop_side_px"]["mean"]))
            outputs[f"{stem}:{seg.key.rsplit('_', 1)[-1]}"] = {
                "mp4": str(folder / seg.files["mp4"]), "boxes": str(folder / seg.files["boxes.npy"])}
    return {"wall_s": wall, "stage_cpu_s": stage_cpu, "detector_s": detector_s, "output_frames": frames,
            "crop_side_px": float(np.mean(sides)) if sides else None, "outputs": outputs, "decisions": decisions,
            "detected_frames": detected, "source_frames": source_frames}


def run_worker(tree: Path, label: str, videos: list[Path], data_root: Path, model_dir: Path,
               record: Path | None = None, replay: Path | None = None, spinning: bool = False) -> StageRun:
    """:func:`worker` in a fresh process (its own imports, its peak RSS)."""
    out = data_root / "worker.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(tree), "--data-root", str(data_root),
           "--model-dir", str(model_dir), "--worker-json", str(out), *map(str, videos)]
    if record or replay:
        cmd += ["--record", str(record)] if record else ["--replay", str(replay)]
    if spinning:
        cmd.append("--spinning")
    proc = subprocess.Popen(cmd, cwd=tree)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"worker for {label} failed: {' '.join(cmd)}")
    result = json.loads(out.read_text())
    return StageRun(tree=label, wall_s=result["wall_s"], detector_s=result["detector_s"],
                    non_model_s=result["wall_s"] - result["detector_s"], output_frames=result["output_frames"],
                    crop_side_px=result["crop_side_px"], peak_rss_mib=usage.ru_maxrss / 1024,
                    cpu_s=usage.ru_utime + usage.ru_stime, stage_cpu_s=result["stage_cpu_s"],
                    loadavg_1m=os.getloadavg()[0],
                    detected_frames=result["detected_frames"], source_frames=result["source_frames"],
                    outputs=result["outputs"], decisions=result["decisions"])


# --------------------------------------------------------------------------- output comparison


def compare_outputs(before: StageRun, after: StageRun) -> dict:
    """Per segment: byte equality of the mp4, PSNR of the decoded frames, largest box, crop and
    relative sharpness differences."""
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
        sharpness_rel = np.abs(boxes_a[:, 11] - boxes_b[:, 11]) / boxes_a[:, 11] if same_shape else None
        rows[key] = {
            "frames": [len(frames_a), len(frames_b)],
            "mp4_identical": Path(a["mp4"]).read_bytes() == Path(b["mp4"]).read_bytes(),
            "psnr_db_min": min(psnr) if psnr else None,
            "psnr_db_mean": float(np.mean([min(p, 99.0) for p in psnr])) if psnr else None,
            "box_max_abs_px": float(np.nanmax(np.abs(boxes_a[:, 1:5] - boxes_b[:, 1:5]))) if same_shape else None,
            "crop_max_abs_px": float(np.nanmax(np.abs(boxes_a[:, 6:9] - boxes_b[:, 6:9]))) if same_shape else None,
            "sharpness_max_rel": float(np.nanmax(sharpness_rel)) if same_shape else None,
            "sharpness_mean_rel": float(np.nanmean(sharpness_rel)) if same_shape else None,
        }
    return rows


def same_decisions(before: StageRun, after: StageRun) -> bool:
    """Whether both trees made the same segments (status, reason, times) and shot cuts."""
    return json.dumps(before.decisions, sort_keys=True) == json.dumps(after.decisions, sort_keys=True)


# --------------------------------------------------------------------------- per-frame parts


def _mean_ms(fn, items) -> float:
    """Mean thread CPU milliseconds of ``fn`` per item (less sensitive to other processes than wall time)."""
    fn(items[0])
    start = time.thread_time()
    for item in items:
        fn(item)
    return (time.thread_time() - start) / max(1, len(items)) * 1000


def _old_encoder_s(pictures: list, config, out: Path) -> float:
    """CPU seconds of the previous encoder: an ffmpeg process given rgb24 rawvideo through a pipe."""
    size, enc = config.crops.size_px, config.encode
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.thread_time()
    proc = subprocess.Popen(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
         "-s", f"{size}x{size}", "-r", f"{config.crops.fps:g}", "-i", "-", "-an", "-c:v", enc.video_codec,
         "-preset", enc.preset, "-crf", str(enc.crf), "-pix_fmt", "yuv420p", "-threads", str(enc.threads),
         "-x264-params", f"threads={enc.threads}", "-fflags", "+bitexact", "-flags:v", "+bitexact",
         "-map_metadata", "-1", str(out)], stdin=subprocess.PIPE)
    for rgb in pictures:
        proc.stdin.write(rgb.tobytes())
    proc.stdin.close()
    proc.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (time.thread_time() - start) + (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _new_encoder_s(pictures: list, config, out: Path) -> float:
    """CPU seconds of ClipEncoder (x264 in a thread of this process): process CPU over the encode,
    so its thread is counted (nothing else runs meanwhile)."""
    from pipelines.media.encode import ClipEncoder

    start = time.process_time()
    encoder = ClipEncoder(out, config, 0.0, 1)
    for number, picture in enumerate(pictures):
        encoder.add(number / config.crops.fps, 1 / config.crops.fps, picture)
    encoder.finish()
    return time.process_time() - start


def _old_mux_s(video: Path, wav: Path, out: Path, config) -> float:
    """CPU seconds of the previous mux: one ffmpeg process per clip."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(video), "-i", str(wav),
                    "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-c:a", config.encode.audio_codec,
                    "-b:a", config.encode.audio_bitrate, "-ar", str(config.audio.sample_rate), "-ac", "1",
                    "-fflags", "+bitexact", "-flags:a", "+bitexact", "-map_metadata", "-1", "-movflags",
                    "+faststart", str(out)], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def time_parts(video: Path, model_dir: Path, crop_side: float, frames_n: int, detected_share: float) -> dict:
    """Per-frame thread-CPU milliseconds of each part on ``video``, the previous way and this way."""
    import numpy as np

    from pipelines.config import load_config
    from pipelines.faces.clips import detect_frame, frame_face_signature
    from pipelines.faces.crop import fit_square
    from pipelines.faces.detectors import build_detector
    from pipelines.faces.quality import _box_sharpness, frame_face_sharpness, head_pose
    from pipelines.faces.shots import ShotCutDetector
    from pipelines.media.decode import DETECTION_INTERPOLATION, _converted, decode_source, probe, scaled_crop_rgb
    from pipelines.media.encode import mux_clip
    from pipelines.media.wav import WavSink, read_wav_slice, write_wav
    from pipelines.models import ModelStore

    config = load_config(paths={"model_dir": model_dir})
    size = config.crops.size_px
    parts: dict[str, tuple[float | None, float | None]] = {}  # part -> (previous ms, this ms)

    with tempfile.TemporaryDirectory() as tmp:
        sink = WavSink(Path(tmp) / "a.wav", config.audio.sample_rate)
        frames = []
        start = time.thread_time()
        for frame in decode_source(video, sink, probe(video).rotation_deg,
                                   detection_max_px=config.faces.detection_frame_px):
            frames.append(frame)
            if len(frames) == frames_n:
                break
        decode_ms = (time.thread_time() - start) / frames_n * 1000
        sink.close()
        parts["decode_source, main thread (demux, audio, Frame)"] = (None, decode_ms)
        held_before = frames[0].held_bytes
        small_w, small_h = frames[0].detection_size

        def old_detection_frame(frame):
            return _converted(frame._decoded, small_w, small_h, DETECTION_INTERPOLATION)

        old_small = [old_detection_frame(f) for f in frames]
        parts["detection frame, per detected frame"] = (_mean_ms(old_detection_frame, frames),
                                                        _mean_ms(lambda f: f.detection_rgb, frames))
        parts["detection frame, per source frame (schedule)"] = (parts["detection frame, per detected frame"][0],
                                                                 parts["detection frame, per detected frame"][1]
                                                                 * detected_share)
        held_after = frames[0].held_bytes
        shots_old, shots_new = ShotCutDetector(config.shots, 25.0), ShotCutDetector(config.shots, 25.0)
        old_pairs = list(zip(frames, old_small))
        parts["shot detector step (its picture included)"] = (
            _mean_ms(lambda p: shots_old.step(p[0].index, p[1]), old_pairs), _mean_ms(shots_new.step_frame, frames))

        detector = build_detector(config.faces, ModelStore(model_dir))
        faces = [detect_frame(detector, f, config.faces) for f in frames]
        measured = [(f, found[0]) for f, found in zip(frames, faces) if found]
        w, h = frames[0].width, frames[0].height
        squares = [fit_square((d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2, crop_side, w, h)
                   for _, d in measured]
        crops = list(zip([f for f, _ in measured], squares))

        def old_crop(pair):
            frame, square = pair
            return scaled_crop_rgb(frame.region_rgb(square.x, square.y, square.x + square.side,
                                                    square.y + square.side), size)

        old_rgb = [old_crop(p) for p in crops]
        parts["crop: RGB region + cv2 resize / one libswscale call"] = (
            _mean_ms(old_crop, crops), _mean_ms(lambda p: p[0].crop(p[1].x, p[1].y, p[1].side, size), crops))

        def old_sharpness(pair):
            frame, face = pair
            x1, y1 = max(int(np.floor(face.box[0])), 0), max(int(np.floor(face.box[1])), 0)
            x2, y2 = min(int(np.ceil(face.box[2])), w), min(int(np.ceil(face.box[3])), h)
            return _box_sharpness(frame.region_rgb(x1, y1, x2, y2))

        parts["sharpness: RGB region / luma plane"] = (
            _mean_ms(old_sharpness, measured), _mean_ms(lambda p: frame_face_sharpness(p[0], p[1].box), measured))
        signature_ms = _mean_ms(lambda p: frame_face_signature(p[0], p[1]), measured)
        parts["face signature (detected frames)"] = (signature_ms, signature_ms)
        pose_ms = _mean_ms(lambda p: head_pose(p[1].keypoints), measured)
        parts["head pose"] = (pose_ms, pose_ms)
        detector.close()

        pictures_old = [old_rgb[i % len(old_rgb)] for i in range(frames_n)]
        pictures_new = [crops[i % len(crops)][0].crop(crops[i % len(crops)][1].x, crops[i % len(crops)][1].y,
                                                      crops[i % len(crops)][1].side, size) for i in range(frames_n)]
        old_encode = _old_encoder_s(pictures_old, config, Path(tmp) / "old.mp4") / frames_n * 1000
        new_encode = _new_encoder_s(pictures_new, config, Path(tmp) / "new.mp4") / frames_n * 1000
        parts[f"encoder per output frame (a {frames_n}-frame clip, its start included; process CPU)"] = (
            old_encode, new_encode)
        samples, _ = read_wav_slice(sink.path, sink.sample_rate, 0.0, frames_n / config.crops.fps,
                                    sink.start_time_s or 0.0)
        write_wav(Path(tmp) / "clip.wav", samples, sink.sample_rate)
        shutil.copyfile(Path(tmp) / "new.mp4", Path(tmp) / "video.mp4")
        old_mux = _old_mux_s(Path(tmp) / "video.mp4", Path(tmp) / "clip.wav", Path(tmp) / "old_clip.mp4", config)
        start = time.process_time()
        mux_clip(Path(tmp) / "video.mp4", Path(tmp) / "clip.wav", Path(tmp) / "new_clip.mp4", config)
        new_mux = time.process_time() - start
        parts[f"mux per clip ({frames_n / config.crops.fps:.1f} s; process CPU, ms)"] = (old_mux * 1000, new_mux * 1000)
    return {"parts_ms": {name: {"before": b, "after": a} for name, (b, a) in parts.items()},
            "frames_timed": frames_n, "crop_side_px": crop_side, "detected_share": detected_share,
            "held_bytes_per_frame": {"before (planes + detection frame)": held_before + int(old_small[0].nbytes),
                                     "after, undetected frame": held_before,
                                     "after, detected frame": held_after}}


# --------------------------------------------------------------------------- floor, report


def floor_s(video: Path, frames: int, crop_side: float | None, work: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of bench_pipeline's floor: one ffmpeg decoding ``video`` and encoding
    ``frames`` crop frames."""
    sys.path.insert(0, str(REPO))
    from bench.bench_pipeline import floor_crop_filter, time_crop_encode_floor
    from pipelines.config import load_config
    from pipelines.media.decode import probe

    config = load_config()
    info = probe(video)
    crop = floor_crop_filter(info.width, info.height, crop_side, config.crops.size_px, config.crops.fps)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time_crop_encode_floor(video, frames, crop, config, work / "floor.mp4")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def summarise(runs: list[StageRun], floors: list[float]) -> dict:
    paired = [r.non_model_s / f for r, f in zip(runs, floors)]
    return {"best_wall_s": min(r.wall_s for r in runs), "best_non_model_s": min(r.non_model_s for r in runs),
            "non_model_over_floor_per_repeat": paired, "non_model_over_floor_best": min(paired),
            "non_model_over_floor_median": sorted(paired)[len(paired) // 2],
            "cpu_s_best": min(r.cpu_s for r in runs), "peak_rss_mib": max(r.peak_rss_mib for r in runs)}


def _fmt(value, spec: str) -> str:
    return "" if value is None else spec.format(value)


def markdown(payload: dict) -> str:
    v = payload["video_1080p"]
    b, a = v["before"], v["after"]
    lines = [
        "# Decode less in the face stage: non-model time against the ffmpeg floor (issue 15)",
        "",
        f"Source: {v['source']} (12 s, 1920x1080, 25 fps, four GRID clips upscaled); default config "
        "(detection schedule on) in both trees.",
        f"Before: `{payload['baseline_rev']}` ({payload['baseline_commit'][:10]}); after: the working tree; "
        "replayed: the working tree with the detector giving the answers it gave in after 1 (no model time, the same "
        "decisions); spinning (with --spinning): the working tree, the detector's onnxruntime threads spin-waiting "
        "between calls (onnxruntime's default). Each repeat runs before, the floor, after, replayed (, spinning), "
        "each in its own process; "
        "loadavg (1 min) "
        "recorded after each run. Stage CPU: user + sys of the timed work (threads and children included).",
        f"Host: {payload['host']['cpus']} CPUs, loadavg at start {payload['host']['loadavg_start']}, "
        f"at end {payload['host']['loadavg_end']}.",
        "",
        "| run | wall s | detector s | non-model s | floor s | non-model / floor | stage CPU s | floor CPU s "
        "| peak RSS MiB | load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    floors, floor_cpus = v["floor_runs_s"], v["floor_runs_cpu_s"]
    for number in range(len(floors)):
        for label, key in (("before", "before_runs"), ("after", "after_runs"), ("replayed", "replayed_runs"),
                           ("spinning", "spinning_runs")):
            if number >= len(v[key]):
                continue
            run = v[key][number]
            ratio = run["non_model_s"] / floors[number]
            lines.append(f"| {label} {number + 1} | {run['wall_s']:.2f} | {run['detector_s']:.2f} | "
                         f"{run['non_model_s']:.2f} | {floors[number]:.2f} | {ratio:.2f} | {run['stage_cpu_s']:.2f} | "
                         f"{floor_cpus[number]:.2f} | {run['peak_rss_mib']:.0f} | {run['loadavg_1m']:.1f} |")
    replayed = v["replayed"]
    lines += ["", f"**Non-model / floor: after best {a['non_model_over_floor_best']:.2f}, median "
                  f"{a['non_model_over_floor_median']:.2f}; before best {b['non_model_over_floor_best']:.2f}, median "
                  f"{b['non_model_over_floor_median']:.2f}** (target 1.5). Detector replayed: wall / floor "
                  + ", ".join(f"{x:.2f}" for x in replayed["wall_over_floor_per_repeat"]) + "; stage CPU / floor CPU "
                  + ", ".join(f"{x:.2f}" for x in replayed["cpu_over_floor_cpu_per_repeat"])
                  + f" (same decisions as after: {v['replayed_same_decisions']})."
                  + (" Detector threads spin-waiting between calls: non-model / floor " + ", ".join(
                      f"{r['non_model_s'] / f:.2f}" for r, f in zip(v["spinning_runs"], floors))
                     + f" (same decisions: {v['spinning_same_decisions']})." if v["spinning_runs"] else "")
                  + " Detector calls: "
                  f"{v['after_runs'][0]['detected_frames']} of {v['after_runs'][0]['source_frames']} frames.", "",
              "## Per-frame parts (ms of thread CPU, this process, 1080p; encoder and mux: process CPU)", "",
              f"{payload['parts']['frames_timed']} frames; crop side {payload['parts']['crop_side_px']:.0f} px; "
              f"the detector ran on {payload['parts']['detected_share']:.0%} of frames.", "",
              "| part | before | after |", "|---|---:|---:|"]
    for name, row in payload["parts"]["parts_ms"].items():
        lines.append(f"| {name} | {_fmt(row['before'], '{:.3f}')} | {_fmt(row['after'], '{:.3f}')} |")
    held = payload["parts"]["held_bytes_per_frame"]
    lines += ["", "Held per frame while tracks need it (MiB): " + ", ".join(
        f"{name} {value / 2 ** 20:.2f}" for name, value in held.items()) + ".", "",
        "## Outputs and decisions, before vs after", "",
        f"Same decisions (segments: status, reason, times; shot cuts): 1080p {v['same_decisions']}, "
        f"GRID {payload['grid']['same_decisions']}.", "",
        "| clip:segment | frames | mp4 identical | PSNR min dB | PSNR mean dB | box max px | crop max px "
        "| sharpness max rel | sharpness mean rel |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for key, row in {**v["outputs"], **payload["grid"]["outputs"]}.items():
        if "only_in" in row:
            lines.append(f"| {key} | only in {row['only_in']} | | | | | | | |")
            continue
        lines.append(f"| {key} | {row['frames'][0]}/{row['frames'][1]} | {row['mp4_identical']} | "
                     f"{_fmt(row['psnr_db_min'], '{:.1f}')} | {_fmt(row['psnr_db_mean'], '{:.1f}')} | "
                     f"{_fmt(row['box_max_abs_px'], '{:.2f}')} | {_fmt(row['crop_max_abs_px'], '{:.0f}')} | "
                     f"{_fmt(row['sharpness_max_rel'], '{:.4f}')} | {_fmt(row['sharpness_mean_rel'], '{:.4f}')} |")
    lines += ["", "PSNR of identical frames is infinite (the mean caps each frame at 99 dB)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("videos", nargs="*", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--media-dir", type=Path, default=DEFAULT_MEDIA_DIR)
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--baseline-rev", default=DEFAULT_BASELINE_REV)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--parts-frames", type=int, default=100, help="frames timed per part (default 100)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "decode_less",
                        help="writes OUT.json and OUT.md")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data-root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker-json", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--record", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--replay", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--spinning", action="store_true",
                        help="also run the working tree with the detector's onnxruntime threads spin-waiting between "
                             "calls (session.intra_op.allow_spinning 1, onnxruntime's default) each repeat")
    args = parser.parse_args(argv)
    if args.worker:
        result = worker(args.worker, args.videos, args.data_root, args.model_dir, args.record, args.replay,
                        args.spinning)
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
        before_runs, after_runs, replay_runs, spinning_runs, floors, floor_cpus = [], [], [], [], [], []
        answers = work / "answers.pkl"
        for number in range(args.repeat):
            before_runs.append(run_worker(baseline, "before", [video], work / f"before{number}", args.model_dir))
            floor_wall, floor_cpu = floor_s(video, before_runs[0].output_frames, before_runs[0].crop_side_px, work)
            floors.append(floor_wall)
            floor_cpus.append(floor_cpu)
            after_runs.append(run_worker(REPO, "after", [video], work / f"after{number}", args.model_dir,
                                         record=None if number else answers))
            replay_runs.append(run_worker(REPO, "replayed", [video], work / f"replay{number}", args.model_dir,
                                          replay=answers))
            if args.spinning:
                spinning_runs.append(run_worker(REPO, "spinning", [video], work / f"spinning{number}",
                                                args.model_dir, spinning=True))
            print(f"repeat {number + 1}: non-model / floor: before {before_runs[-1].non_model_s / floors[-1]:.2f}, "
                  f"after {after_runs[-1].non_model_s / floors[-1]:.2f} (non-model {after_runs[-1].non_model_s:.2f} s, "
                  f"floor {floors[-1]:.2f} s, load {after_runs[-1].loadavg_1m:.1f}); detector replayed: wall "
                  f"{replay_runs[-1].wall_s / floors[-1]:.2f}, CPU {replay_runs[-1].stage_cpu_s / floor_cpus[-1]:.2f} "
                  "x the floor's", flush=True)
        grid = sorted(args.media_dir.glob("*.mpg"))
        grid_before = run_worker(baseline, "before", grid, work / "grid_before", args.model_dir)
        grid_after = run_worker(REPO, "after", grid, work / "grid_after", args.model_dir)
        share = after_runs[0].detected_frames / max(1, after_runs[0].source_frames)
        parts = time_parts(video, args.model_dir, after_runs[0].crop_side_px or 480.0, args.parts_frames, share)
        payload = {
            "baseline_rev": args.baseline_rev, "baseline_commit": commit, "repeat": args.repeat,
            "host": {"cpus": os.cpu_count(), "loadavg_start": round(loadavg_start, 2),
                     "loadavg_end": round(os.getloadavg()[0], 2), "platform": platform.platform()},
            "video_1080p": {
                "source": "bench_gates.compose_1080p(4 GRID clips)",
                "before_runs": [asdict(r) | {"outputs": len(r.outputs)} for r in before_runs],
                "after_runs": [asdict(r) | {"outputs": len(r.outputs)} for r in after_runs],
                "floor_runs_s": floors, "floor_runs_cpu_s": floor_cpus,
                "replayed_runs": [asdict(r) | {"outputs": len(r.outputs)} for r in replay_runs],
                "spinning_runs": [asdict(r) | {"outputs": len(r.outputs)} for r in spinning_runs],
                "replayed": {
                    "wall_over_floor_per_repeat": [r.wall_s / f for r, f in zip(replay_runs, floors)],
                    "cpu_over_floor_cpu_per_repeat": [r.stage_cpu_s / c for r, c in zip(replay_runs, floor_cpus)]},
                "before": summarise(before_runs, floors), "after": summarise(after_runs, floors),
                "outputs": compare_outputs(before_runs[0], after_runs[0]),
                "same_decisions": all(same_decisions(b, a) for b, a in zip(before_runs, after_runs)),
                "replayed_same_decisions": all(same_decisions(after_runs[0], r) for r in replay_runs),
                "spinning_same_decisions": all(same_decisions(after_runs[0], r) for r in spinning_runs),
            },
            "grid": {"before_wall_s": grid_before.wall_s, "after_wall_s": grid_after.wall_s,
                     "outputs": compare_outputs(grid_before, grid_after),
                     "same_decisions": same_decisions(grid_before, grid_after)},
            "parts": parts,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=1, default=str))
    args.out.with_suffix(".md").write_text(markdown(payload))
    print(markdown(payload))
    after = payload["video_1080p"]["after"]
    print(f"non-model / floor (after): best {after['non_model_over_floor_best']:.2f}, "
          f"median {after['non_model_over_floor_median']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
