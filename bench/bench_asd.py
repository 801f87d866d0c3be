"""Active speaker detection (Light-ASD) throughput: frames per second, model only and with inputs.

    python bench/bench_asd.py [VIDEO ...] [--device cpu|cuda] [--repeat N] [--threads N]
                              [--batch-windows N] [--json OUT]

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
