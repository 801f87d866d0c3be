"""SCRFD's input size: the detection frame's own size (``faces.scrfd_fit_input``) against the 640
letterbox, on the inputs of bench_detect_schedule.py, in one run.

For each input (the six GRID clips and the composed cases: cuts, two faces, a face that comes and
goes, gaps, a pan, a shake, a 1080p upscale) the face stage runs with the default detection
schedule twice on one machine state: with the detector letterboxing every frame into the 640
square (the reference) and with the fitted input. Per input: detector seconds of each and their
ratio, accepted seconds relative to the reference, mean and lowest IoU of the output boxes on the
output frames both have, and whether segments, shot cuts and the quality stage's decisions are
the same (bench_detect_schedule.compare).

    python bench/bench_detector_input.py [--only NAME ...] [--out bench/results/detector_input]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.bench_detect_schedule import (DEFAULT_MEDIA_DIR, DEFAULT_MODEL_DIR, RESULTS_DIR, compare,  # noqa: E402
                                         composed_cases, run_face_stage)
from bench.bench_gates import compose_1080p  # noqa: E402
from pipelines.config import FaceDetectionConfig, load_config  # noqa: E402
from pipelines.faces.detectors import build_detector  # noqa: E402
from pipelines.fixtures.media import MediaCache  # noqa: E402
from pipelines.models import ModelStore  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="input names to run (default: all)")
    parser.add_argument("--media-dir", type=Path, default=DEFAULT_MEDIA_DIR)
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "detector_input")
    args = parser.parse_args(argv)
    every_k = load_config().detection_schedule.every_k
    store = ModelStore(args.model_dir)
    detectors = {"letterbox": build_detector(FaceDetectionConfig(backend="scrfd", scrfd_fit_input=False), store),
                 "fitted": build_detector(FaceDetectionConfig(backend="scrfd", scrfd_fit_input=True), store)}
    work = Path(tempfile.mkdtemp(prefix="bench_detector_input_"))
    rows, load_start = [], os.getloadavg()[0]
    try:
        grid = sorted(args.media_dir.glob("*.mpg"))
        inputs = {f"grid_{p.stem}": p for p in grid}
        inputs.update(composed_cases(grid, MediaCache(work / "media")))
        inputs["grid_1080p"] = compose_1080p(args.media_dir, 4, work / "grid_1080p.mp4")
        if args.only:
            inputs = {name: path for name, path in inputs.items() if name in args.only}
        for name, path in inputs.items():
            folder = work / "inputs" / name
            folder.mkdir(parents=True)
            video = folder / path.name
            shutil.copyfile(path, video)
            runs = {label: run_face_stage(video, work / "runs" / name / label, detector, args.model_dir, every_k,
                                          label) for label, detector in detectors.items()}
            reference, fitted = runs["letterbox"], runs["fitted"]
            comparison = compare(name, reference, fitted)
            rows.append({"case": name, "letterbox_detector_s": round(reference.detector_s, 3),
                         "fitted_detector_s": round(fitted.detector_s, 3),
                         "calls": [reference.detector_calls, fitted.detector_calls], **asdict(comparison)})
            print(f"{name}: detector {reference.detector_s:.2f} -> {fitted.detector_s:.2f} s "
                  f"({comparison.seconds_ratio:.2f}x), accepted {comparison.accepted_fraction:.3f}, IoU "
                  f"{comparison.mean_iou}, same decisions {comparison.meets()}", flush=True)
    finally:
        for detector in detectors.values():
            detector.close()
        shutil.rmtree(work, ignore_errors=True)
    letterbox_s = sum(r["letterbox_detector_s"] for r in rows)
    fitted_s = sum(r["fitted_detector_s"] for r in rows)
    payload = {"every_k": every_k, "loadavg_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)], "rows": rows,
               "detector_s": {"letterbox": round(letterbox_s, 3), "fitted": round(fitted_s, 3)}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n")
    lines = ["# SCRFD at the detection frame's size vs the 640 letterbox (bench/bench_detector_input.py)", "",
             f"Face stage with the default schedule (every_k {every_k}) on each input, once per detector, "
             f"scrfd_500m_kps.onnx on CPU; load (1 min) {payload['loadavg_1m'][0]} at the start, "
             f"{payload['loadavg_1m'][1]} at the end. Reference: the letterbox.", "",
             "| input | detector s, letterbox | detector s, fitted | ratio | accepted | mean IoU | lowest IoU | "
             "segments, cuts, quality same |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        same = r["segments_same"] and r["cuts_same"] and r["quality_same"]
        lines.append(f"| {r['case']} | {r['letterbox_detector_s']:.2f} | {r['fitted_detector_s']:.2f} | "
                     f"{r['seconds_ratio']:.2f} | {r['accepted_fraction']:.3f} | "
                     f"{'-' if r['mean_iou'] is None else format(r['mean_iou'], '.3f')} | "
                     f"{'-' if r['min_iou'] is None else format(r['min_iou'], '.3f')} | {same} |")
    lines += ["", f"All inputs: detector {letterbox_s:.2f} s letterboxed, {fitted_s:.2f} s fitted "
                  f"({letterbox_s / max(fitted_s, 1e-9):.2f}x)."]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
