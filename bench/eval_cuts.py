"""Calibrate the face-change check and the shot-cut detector on the six GRID clips (issue 14).

Prints, and with ``--json PATH`` writes:
* face signature distances (pipelines/faces/shots.py) between consecutive frames of one speaker,
  over the original clips and zoomed / blurred / recompressed variants, versus every pair of
  different speakers (15 pairs) framed at the same place;
* the threshold this suggests (midway in log space between the two) and its margins;
* ms per signature and per ShotCutDetector.step on GRID upscaled to 1920x1080;
* what each PySceneDetect detector, at its default, reports on a same-backdrop cut between two
  speakers, on a zoom cut of one speaker, and on a cut to a visibly different picture.

Run: ``TALKINGHEAD_SHARED_DIR=/work/shared .venv/bin/python -m bench.eval_cuts [--json out.json]``.
The composed media come from pipelines/fixtures/footage.py, as in the tests.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from pipelines.fixtures.footage import CUT_FRAME, hard_cut, scene_cut, variant, zoom_cut
from pipelines.fixtures.media import FPS, grid_clips, shared_dir

def _frames(path: Path) -> list[np.ndarray]:
    from pipelines.media.decode import read_video_frames

    return read_video_frames(path)


def _main_face(detector, rgb: np.ndarray):
    found = detector.detect(rgb)
    return max(found, key=lambda d: d.score) if found else None


def _signatures(detector, frames: list[np.ndarray]) -> list[np.ndarray]:
    from pipelines.faces.shots import face_signature

    out = []
    for rgb in frames:
        det = _main_face(detector, rgb)
        if det is not None:
            out.append(face_signature(rgb, det))
    return out


def _consecutive(signatures: list[np.ndarray]) -> list[float]:
    from pipelines.faces.shots import signature_distance

    return [signature_distance(a, b) for a, b in zip(signatures, signatures[1:])]


def _summary(values: list[float]) -> dict:
    v = np.asarray(values)
    return {"n": int(v.size), "min": round(float(v.min()), 4), "p50": round(float(np.median(v)), 4),
            "p99": round(float(np.percentile(v, 99)), 4), "max": round(float(v.max()), 4)}


def _pyscenedetect_cuts(path: Path, kind: str) -> list[int]:
    from pipelines.config import ShotConfig
    from pipelines.faces.shots import ShotCutDetector

    shots = ShotCutDetector(ShotConfig(detector=kind), FPS)
    return [c for i, rgb in enumerate(_frames(path)) for c in shots.step(i, rgb)]


def _ms_per_call(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1000


def evaluate(work: Path) -> dict:
    from pipelines.config import FaceDetectionConfig, ShotConfig
    from pipelines.faces.detectors import build_detector
    from pipelines.faces.shots import ShotCutDetector, face_signature, signature_distance
    from pipelines.models import ModelStore

    clips = grid_clips()
    detector = build_detector(FaceDetectionConfig(backend="scrfd"), ModelStore(shared_dir() / "models"))
    per_clip: dict[str, list[np.ndarray]] = {}
    same: dict[str, list[float]] = {}
    for clip in clips:
        per_clip[clip.stem] = _signatures(detector, _frames(clip))
        same.setdefault("original", []).extend(_consecutive(per_clip[clip.stem]))
        for kind in ("zoom", "blur", "recompressed"):
            sigs = _signatures(detector, _frames(variant(clip, work / f"{clip.stem}-{kind}.mp4", kind)))
            same.setdefault(kind, []).extend(_consecutive(sigs))
            # The variant's frame against the original's same frame: what a cut to this framing changes.
            same.setdefault(f"original->{kind}", []).extend(
                signature_distance(a, b) for a, b in zip(per_clip[clip.stem], sigs))
    different = [signature_distance(a, b)
                 for x, y in itertools.combinations(sorted(per_clip), 2)
                 for a, b in zip(per_clip[x], per_clip[y])]
    worst_same = max(max(v) for v in same.values())
    best_different = min(different)
    threshold = float(np.sqrt(worst_same * best_different))  # midway on a log scale
    result = {
        "same_person": {k: _summary(v) for k, v in same.items()},
        "different_person_pairs": {"pairs": 15, **_summary(different)},
        "threshold": round(threshold, 3),
        "margin_over_worst_same": round(threshold / worst_same, 2),
        "margin_under_best_different": round(best_different / threshold, 2),
    }

    big = variant(clips[0], work / "1080p.mp4", "1080p")
    frames = _frames(big)[:50]
    det = _main_face(detector, frames[25])
    result["ms_per_signature_1080p"] = round(_ms_per_call(lambda: face_signature(frames[25], det), 200), 3)
    for kind in ("content", "adaptive", "hash", "histogram"):
        shots = ShotCutDetector(ShotConfig(detector=kind), FPS)
        counter = itertools.count()

        def feed(shots=shots, counter=counter) -> None:
            index = next(counter)
            shots.step(index, frames[index % len(frames)])

        result[f"ms_per_step_1080p_{kind}"] = round(_ms_per_call(feed, 100), 3)

    cuts = {"same_backdrop_cut": hard_cut(clips[0], clips[1], work / "cut.mp4"),
            "zoom_cut": zoom_cut(clips[0], work / "zoom-cut.mp4"),
            "scene_cut": scene_cut(clips[0], clips[1], work / "scene-cut.mp4"),
            "uncut": clips[0]}
    result["cut_frame"] = CUT_FRAME
    result["pyscenedetect_defaults"] = {
        name: {kind: _pyscenedetect_cuts(path, kind) for kind in ("content", "adaptive", "hash", "histogram")}
        for name, path in cuts.items()}
    detector.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="eval-cuts-") as tmp:
        result = evaluate(Path(tmp))
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
