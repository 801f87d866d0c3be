"""Active speaker detection (Light-ASD) throughput: frames per second, model only and with inputs.

    python bench/bench_asd.py [VIDEO ...] [--device cpu|cuda] [--repeat N] [--threads N]
                              [--batch-windows N] [--json OUT]
    python bench/bench_asd.py --batching [--batch-sizes 1,2,4,8,16] [--repeat N]

Default inputs: the GRID clips in ../shared/media/grid. Each clip is decoded (PyAV), its
face found by SCRFD on every frame and its audio converted by ffmpeg to 16 kHz mono, none
of it timed. Then, best of --repeat after one warm-up:

- model: ``ActiveSpeakerScorer.logits_from_features`` on ready MFCC and face crops
  (windows of 100 frames, overlap 25, as in the pipeline);
- crops+mfcc+model: the 112x112 face crops from the decoded frames and boxes, the MFCC of
  the audio, and the model.

It also times all clips joined into one long track (several windows, batched). fps =
video frames / seconds. Weights come from --model-dir, else $TALKINGHEAD_MODEL_DIR, else
../shared/models. CPU timings depend on the load of the machine: the header prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/bench_asd.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(REPO))

import av  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipelines.asd.features import SAMPLE_RATE, face_crop_112  # noqa: E402
from pipelines.asd.score import ActiveSpeakerScorer, audio_features_for_frames  # noqa: E402
from pipelines.config import MODEL_DIR_ENV, FaceDetectionConfig  # noqa: E402
from pipelines.faces.detectors import build_detector  # noqa: E402
from pipelines.models import ModelStore  # noqa: E402


def load_clip(path: Path, detector) -> dict:
    frames, boxes = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")
            detections = detector.detect(rgb)
            if not detections:
                if not boxes:
                    continue  # no face yet: skip leading faceless frames
                box = boxes[-1]  # hold the last box over a missed detection
            else:
                box = max(detections, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1])).box
            frames.append(rgb)
            boxes.append(box)
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-vn", "-f", "s16le", "-ac", "1",
                          "-ar", str(SAMPLE_RATE), "-"], capture_output=True, check=True).stdout
    return {"name": path.name, "frames": frames, "boxes": boxes, "audio": np.frombuffer(raw, dtype="<i2").copy()}


def best_time(fn, repeat: int) -> float:
    fn()  # warm-up (first-call allocations, cuDNN algorithm choice)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_track(scorer: ActiveSpeakerScorer, name: str, frames: list[np.ndarray], boxes: list, audio: np.ndarray,
                repeat: int) -> dict:
    faces = np.stack([face_crop_112(rgb, box) for rgb, box in zip(frames, boxes)])
    features = audio_features_for_frames(audio, len(faces))

    def full():
        crops = np.stack([face_crop_112(rgb, box) for rgb, box in zip(frames, boxes)])
        return scorer.logits_from_features(audio_features_for_frames(audio, len(crops)), crops)

    t_model = best_time(lambda: scorer.logits_from_features(features, faces), repeat)
    t_full = best_time(full, repeat)
    count = len(faces)
    return {"input": name, "frames": count, "model_s": t_model, "full_s": t_full,
            "model_fps": count / t_model, "full_fps": count / t_full}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _segments(clips: list[dict], pieces: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each clip's face track cut into ``pieces`` equal segments with their audio: a source with
    many short face tracks (every segment's window has the same length, so they can share passes)."""
    out = []
    for clip in clips:
        faces = np.stack([face_crop_112(rgb, box) for rgb, box in zip(clip["frames"], clip["boxes"])])
        step = len(faces) // pieces
        for k in range(pieces):
            audio = clip["audio"][k * step * SAMPLE_RATE // 25:]
            out.append((faces[k * step:(k + 1) * step], audio))
    return out


def _passes(scorer: ActiveSpeakerScorer) -> list[int]:
    sizes: list[int] = []
    encode = scorer.model.encode_visual  # every visual pass, the module's or its folded copy's

    def counted(video):
        sizes.append(video.shape[0])
        return encode(video)

    scorer.model.encode_visual = counted
    return sizes


def bench_batching(clips: list[dict], model_dir: Path, weights: str, device: str, repeat: int,
                   batch_sizes: list[int], max_shift: int) -> list[dict]:
    """Light-ASD over a source's segments: per segment one window per pass (batch 1, what the stage
    did before) against the windows of all segments gathered into batches, plain and shifted.
    The batch sizes are timed in turn within each round (best of ``repeat`` rounds after a
    warm-up round), so a change in the machine's load hits all of them alike."""
    rows = []
    for label, tracks in ((f"{len(clips)} clips, 75-frame tracks", _segments(clips, 1)),
                          (f"{len(clips)} clips cut in 3, 25-frame tracks", _segments(clips, 3))):
        frames = sum(len(f) for f, _ in tracks)
        scorers = {batch: ActiveSpeakerScorer(model_dir / weights, device=device, batch_windows=batch)
                   for batch in batch_sizes}
        passes = {batch: _passes(scorer) for batch, scorer in scorers.items()}
        results = {batch: scorer.shifted_scores_many(tracks, max_shift) for batch, scorer in scorers.items()}
        per_call = {batch: len(passes[batch]) for batch in batch_sizes}
        plain = {batch: float("inf") for batch in batch_sizes}
        shifted = dict(plain)
        for _ in range(repeat + 1):  # the first round also warms up the plain path
            for batch, scorer in scorers.items():
                plain[batch] = min(plain[batch], _timed(lambda: scorer.logits_many(tracks)))
                shifted[batch] = min(shifted[batch], _timed(lambda: scorer.shifted_scores_many(tracks, max_shift)))
        reference = results[batch_sizes[0]]
        for batch in batch_sizes:
            difference = max(float(np.abs(a[0] - b[0]).max()) for a, b in zip(results[batch], reference))
            rows.append({"tracks": label, "segments": len(tracks), "frames": frames, "batch_windows": batch,
                         "forward_passes": per_call[batch], "plain_s": plain[batch], "plain_fps": frames / plain[batch],
                         "shifted_s": shifted[batch], "shifted_fps": frames / shifted[batch],
                         "max_abs_logit_difference_vs_batch_1": difference})
    return rows


def bench_detector(videos: list[Path], model_dir: Path, repeat: int, batch_sizes: list[int]) -> dict:
    """SCRFD-500M frames per second on real GRID frames: the mirrored file (fixed batch 1, per
    image) against a copy with a symbolic batch dimension run ``batch`` frames per pass."""
    import tempfile

    import onnxruntime

    from pipelines.faces.detectors import ScrfdDetector, scrfd_graph_with_free_axes

    frames = []
    for path in videos[:2]:
        with av.open(str(path)) as container:
            frames.extend(frame.to_ndarray(format="rgb24") for frame in container.decode(video=0))
    frames = frames[:64]
    source = model_dir / "scrfd" / "scrfd_500m_kps.onnx"
    session = onnxruntime.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    try:
        session.run(None, {session.get_inputs()[0].name: np.zeros((2, 3, 640, 640), np.float32)})
        fixed_refuses = None
    except Exception as error:  # what onnxruntime says about a batch of 2 on the fixed file
        fixed_refuses = str(error).splitlines()[0][:200]
    fixed = ScrfdDetector(source, 640, 0.5)
    with tempfile.TemporaryDirectory() as scratch:
        dynamic_file = Path(scratch) / "dynamic.onnx"
        dynamic_file.write_bytes(scrfd_graph_with_free_axes(source, batch=True))
        dynamic = ScrfdDetector(dynamic_file, 640, 0.5)

        def batched(batch: int):
            return lambda: [dynamic.detect_batch(frames[first:first + batch]) for first in range(0, len(frames), batch)]

        runs = {("fixed", 1): lambda: fixed.detect_batch(frames)} | {("dynamic", b): batched(b) for b in batch_sizes}
        best = {key: float("inf") for key in runs}
        for _ in range(repeat + 1):  # in turn within each round, as for Light-ASD; the first warms up
            for key, run in runs.items():
                best[key] = min(best[key], _timed(run))
        shapes = {"fixed": session.get_inputs()[0].shape, "dynamic": dynamic._model.session.get_inputs()[0].shape}
    rows = [{"file": source.name if kind == "fixed" else "scrfd_500m_kps.onnx, batch dimension made symbolic",
             "input_shape": shapes[kind], "batch": batch, "mode": "per image" if kind == "fixed" else "one pass per batch",
             "fps": len(frames) / best[(kind, batch)]} for kind, batch in runs]
    return {"frames": len(frames), "fixed_file_batch_2": fixed_refuses, "rows": rows}


def write_batching(path_json: Path, header: dict, asd_rows: list[dict], detector: dict) -> None:
    path_json.parent.mkdir(parents=True, exist_ok=True)
    path_json.write_text(json.dumps({**header, "asd": asd_rows, "detector": detector}, indent=2))
    lines = ["# Batching on this machine", "",
             f"{header['device']} ({header['device_name']}), torch {header['torch']}, {header['threads']} threads, "
             f"{header['cores']} cores; load average before {header['load_before']}, after {header['load_after']}; "
             f"best of {header['repeat']} rounds, the settings timed in turn within each round. "
             "Written by `python bench/bench_asd.py --batching`.", "",
             "## Light-ASD: a source's segments scored together", "",
             "| tracks | segments | frames | batch_windows | passes | plain fps | shifted fps (N=%d) | x vs batch 1 "
             "(shifted) | max logit diff |" % header["max_shift"], "|---|---|---|---|---|---|---|---|---|"]
    for row in asd_rows:
        base = next(r for r in asd_rows if r["tracks"] == row["tracks"] and r["batch_windows"] == 1)
        lines.append(f"| {row['tracks']} | {row['segments']} | {row['frames']} | {row['batch_windows']} | "
                     f"{row['forward_passes']} | {row['plain_fps']:.1f} | {row['shifted_fps']:.1f} | "
                     f"{base['shifted_s'] / row['shifted_s']:.2f} | {row['max_abs_logit_difference_vs_batch_1']:.1e} |")
    lines += ["", "## SCRFD-500M: detect_batch", "",
              f"{detector['frames']} GRID frames (360x288, letterboxed to 640). The mirrored file with a batch of 2: "
              f"`{detector['fixed_file_batch_2']}`.", "", "| file | input shape | batch | mode | fps |", "|---|---|---|---|---|"]
    for row in detector["rows"]:
        lines.append(f"| {row['file']} | {row['input_shape']} | {row['batch']} | {row['mode']} | {row['fps']:.1f} |")
    path_json.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("videos", nargs="*", type=Path)
    parser.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:1, ...")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--weights", default="light-asd/pretrain_AVA_CVPR.model",
                        help="checkpoint path relative to the model dir (default: the AVA model)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-windows", type=int, default=None,
                        help="windows per forward pass (default: the scorer's, 1 on CPU and 8 on a GPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--batching", action="store_true",
                        help="measure batching instead (Light-ASD across segments, SCRFD detect_batch) and write "
                             "bench/results/batching.{json,md}")
    parser.add_argument("--batch-sizes", default="1,2,4,8,16", help="with --batching: windows per pass to try")
    args = parser.parse_args(argv)

    model_dir = args.model_dir or Path(os.environ.get(MODEL_DIR_ENV) or REPO.parent / "shared" / "models")
    videos = args.videos or sorted((REPO.parent / "shared" / "media" / "grid").glob("*.mpg"))
    if not videos:
        parser.error("no input videos (and no GRID clips in ../shared/media/grid)")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda asked for, but torch sees no CUDA device")

    detector = build_detector(FaceDetectionConfig(backend="scrfd"), ModelStore(model_dir))
    try:
        clips = [load_clip(path, detector) for path in videos]
    finally:
        detector.close()
    if args.batching:
        sizes = [int(v) for v in args.batch_sizes.split(",")]
        load_before = open("/proc/loadavg").read().split()[:3]
        asd_rows = bench_batching(clips, model_dir, args.weights, args.device, args.repeat, sizes, max_shift=8)
        detector_rows = bench_detector(videos, model_dir, args.repeat, [1, 4, 8, 16])
        header = {"device": args.device, "device_name": platform.processor() or platform.machine(),
                  "torch": torch.__version__, "threads": torch.get_num_threads(), "cores": os.cpu_count(),
                  "load_before": " ".join(load_before), "load_after": " ".join(open("/proc/loadavg").read().split()[:3]),
                  "repeat": args.repeat, "max_shift": 8}
        write_batching(args.json or REPO / "bench" / "results" / "batching.json", header, asd_rows, detector_rows)
        print((args.json or REPO / "bench" / "results" / "batching.json").with_suffix(".md").read_text())
        return 0
    scorer = ActiveSpeakerScorer(model_dir / args.weights, device=args.device, batch_windows=args.batch_windows)

    device_name = torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") \
        else platform.processor() or platform.machine()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"Light-ASD on {args.device} ({device_name}); torch {torch.__version__}, {torch.get_num_threads()} CPU "
          f"threads, {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"window {scorer.window_frames} frames, overlap {scorer.overlap_frames}, {scorer.batch_windows} per batch; "
          f"best of {args.repeat}")
    rows = [bench_track(scorer, c["name"], c["frames"], c["boxes"], c["audio"], args.repeat) for c in clips]

    # All clips as one track (audio of each padded or cut to its frames) to time several batched windows.
    joined_audio = []
    for clip in clips:
        samples = len(clip["frames"]) * SAMPLE_RATE // 25
        joined_audio.append(np.pad(clip["audio"][:samples], (0, max(0, samples - len(clip["audio"])))))
    joined = bench_track(scorer, f"all {len(clips)} joined", [f for c in clips for f in c["frames"]],
                         [b for c in clips for b in c["boxes"]], np.concatenate(joined_audio), args.repeat)

    print(f"{'input':<20} {'frames':>6} {'model s':>8} {'model fps':>10} {'full s':>8} {'full fps':>9}")
    for row in rows + [joined]:
        print(f"{row['input']:<20} {row['frames']:>6} {row['model_s']:>8.3f} {row['model_fps']:>10.1f} "
              f"{row['full_s']:>8.3f} {row['full_fps']:>9.1f}")
    frames = sum(r["frames"] for r in rows)
    model_s, full_s = sum(r["model_s"] for r in rows), sum(r["full_s"] for r in rows)
    print(f"{'per-clip total':<20} {frames:>6} {model_s:>8.3f} {frames / model_s:>10.1f} {full_s:>8.3f} "
          f"{frames / full_s:>9.1f}")
    print("(full = 112x112 crops + MFCC + model; decoding, face detection and audio conversion not timed)")
    if args.json:
        args.json.write_text(json.dumps({"device": args.device, "device_name": device_name,
                                         "threads": torch.get_num_threads(), "load_average": list(load),
                                         "clips": rows, "joined": joined}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
