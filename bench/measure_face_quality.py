"""Calibration figures for the face quality gates (pipelines/faces/quality.py, pipelines/quality).

    python bench/measure_face_quality.py [--shared DIR] [--models DIR] [--every N] [--json OUT]

1. Head pose on projected rotations: the five-point model rotated by known yaw/pitch/roll,
   seen by cameras unlike the one head_pose assumes; errors of the recovered angles.
2. Head pose on every Nth frame of the GRID clips (SCRFD keypoints; frontal speakers).
3. Sharpness of the GRID faces: as recorded, after ffmpeg gblur sigma 2/4/8, and with the
   clip scaled into a 1280x720 canvas at several face sizes (with the crop upscale each gives).
4. Image-level "turned" faces composed from GRID (perspective warp, horizontal squeeze): what
   SCRFD keypoints give. Neither is a turned head (a 3D head shows its other side and hides
   the far cheek; a warped image shows the same frontal texture), so they only show how
   the estimator reacts to foreshortening, not how it sees profiles.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.config import FaceDetectionConfig, load_config  # noqa: E402
from pipelines.faces.detectors import build_detector  # noqa: E402
from pipelines.faces.quality import MODEL_POINTS, head_pose, measure_face, rotation_matrix  # noqa: E402
from pipelines.models import ModelStore  # noqa: E402

SIGMAS = (2, 4, 8)
CANVAS_FACE_SCALES = (0.35, 0.5, 0.75, 1.0, 2.0)  # clip scale inside a 1280x720 canvas


def _stats(values) -> dict:
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=np.float64)
    if not len(v):
        return {"n": 0}
    return {"n": int(len(v)), "median": round(float(np.median(v)), 2), "p5": round(float(np.percentile(v, 5)), 2),
            "p95": round(float(np.percentile(v, 95)), 2), "min": round(float(v.min()), 2),
            "max": round(float(v.max()), 2)}


def projected_pose_errors() -> dict:
    angles = list(itertools.product([-60, -40, -20, 0, 15, 35, 55], [-25, 0, 20], [-20, 0, 10]))
    cameras = {"far_f1400_d2600": (1400.0, 2600.0), "mid_f1000_d1800": (1000.0, 1800.0),
               "close_f1000_d1000": (1000.0, 1000.0)}
    out = {}
    for name, (focal, distance) in cameras.items():
        errors = []
        for yaw, pitch, roll in angles:
            points = (rotation_matrix(yaw, pitch, roll) @ MODEL_POINTS.T).T + np.array([0.0, 0.0, distance])
            kp = [(focal * x / z + 640, focal * y / z + 360) for x, y, z in points]
            errors.append(np.subtract(head_pose(kp), (yaw, pitch, roll)))
        err = np.abs(np.array(errors))
        out[name] = {"cases": len(angles), "mean_abs_yaw_pitch_roll": err.mean(0).round(2).tolist(),
                     "max_abs_yaw_pitch_roll": err.max(0).round(2).tolist()}
    return out


def frames(path: Path, every: int):
    capture = cv2.VideoCapture(str(path))
    index = 0
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        if index % every == 0:
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        index += 1
    capture.release()


def measure_clip(path: Path, detector, every: int) -> list[dict]:
    rows = []
    for rgb in frames(path, every):
        detections = detector.detect(rgb)
        if not detections:
            rows.append({"detected": False})
            continue
        det = max(detections, key=lambda d: d.score)
        m = measure_face(rgb, det)
        rows.append({"detected": True, "face_px": m.face_px, "sharpness": m.sharpness, "yaw": m.yaw_deg,
                     "pitch": m.pitch_deg, "roll": m.roll_deg, "upscale": 384 / min(m.face_px * 1.5, *rgb.shape[:2])})
    return rows


def ffmpeg(args: list[str]) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def summary(rows: list[dict]) -> dict:
    found = [r for r in rows if r["detected"]]
    return {"frames": len(rows), "detected": len(found), **{k: _stats(r[k] for r in found)
                                                             for k in ("face_px", "upscale", "sharpness")}}


def warp_profiles(clip: Path, detector) -> dict:
    """SCRFD keypoint pose on a GRID frame foreshortened in the image (not a turned head)."""
    rgb = next(frames(clip, 40))
    h, w = rgb.shape[:2]
    out = {}
    for squeeze in (0.8, 0.6, 0.4):  # horizontal squeeze about the face: cos(37), cos(53), cos(66)
        small = cv2.resize(rgb, (int(w * squeeze), h), interpolation=cv2.INTER_AREA)
        canvas = np.full_like(rgb, 0)
        canvas[:, :small.shape[1]] = small
        out[f"squeeze_{squeeze}"] = _pose_of(canvas, detector)
    for shrink in (0.2, 0.4, 0.6):  # right edge shorter than the left: a plane turned about the vertical
        src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
        dst = np.float32([[0, 0], [w * (1 - shrink / 2), h * shrink / 2], [w * (1 - shrink / 2), h * (1 - shrink / 2)],
                          [0, h]])
        warped = cv2.warpPerspective(rgb, cv2.getPerspectiveTransform(src, dst), (w, h))
        out[f"perspective_{shrink}"] = _pose_of(warped, detector)
    return out


def _pose_of(rgb: np.ndarray, detector) -> dict | None:
    detections = detector.detect(rgb)
    if not detections:
        return None
    det = max(detections, key=lambda d: d.score)
    yaw, pitch, roll = head_pose(det.keypoints)
    return {"score": round(det.score, 3), "yaw": round(yaw, 1), "pitch": round(pitch, 1), "roll": round(roll, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("/work/shared"))
    parser.add_argument("--models", type=Path, default=None)
    parser.add_argument("--every", type=int, default=3, help="measure every Nth source frame")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    clips = sorted((args.shared / "media" / "grid").glob("*.mpg"))
    detector = build_detector(FaceDetectionConfig(backend="scrfd"), ModelStore(args.models or args.shared / "models"))
    load_config()  # the defaults the figures are compared with
    report: dict = {"projected_pose_errors_deg": projected_pose_errors()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sharp = [row for clip in clips for row in measure_clip(clip, detector, args.every)]
        found = [r for r in sharp if r["detected"]]
        report["grid_pose_deg"] = {k: _stats(r[k] for r in found) for k in ("yaw", "pitch", "roll")}
        report["grid_abs_yaw_over_15_frames"] = sum(abs(r["yaw"]) > 15 for r in found)
        report["sharpness"] = {"as_recorded": summary(sharp)}
        for sigma in SIGMAS:
            rows = []
            for clip in clips:
                out = tmp / f"{clip.stem}_blur{sigma}.mp4"
                ffmpeg(["-i", str(clip), "-vf", f"gblur=sigma={sigma}", "-an", "-c:v", "libx264", "-crf", "12",
                        str(out)])
                rows += measure_clip(out, detector, args.every)
            report["sharpness"][f"gblur_sigma_{sigma}"] = summary(rows)
        report["face_sizes"] = {}
        for scale in CANVAS_FACE_SCALES:
            rows = []
            for clip in clips:
                out = tmp / f"{clip.stem}_canvas{scale}.mp4"
                ffmpeg(["-i", str(clip), "-vf", f"scale=iw*{scale}:-2:flags=area,"
                        "pad=1280:720:(ow-iw)/2:(oh-ih)/2", "-an", "-c:v", "libx264", "-crf", "12", str(out)])
                rows += measure_clip(out, detector, args.every * 2)
            report["face_sizes"][f"scale_{scale}_in_1280x720"] = summary(rows)
        report["image_level_profiles"] = {clip.stem: warp_profiles(clip, detector) for clip in clips[:3]}
    detector.close()
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
