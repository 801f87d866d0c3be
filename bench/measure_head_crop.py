"""Measure how the SCRFD face box relates to the 68 iBUG landmarks, and derive SHeaP's head crop from it.

SHeaP's authors crop around the 68 face-alignment landmarks (github.com/nlml/SHeaP @cfddf49,
``sheap/landmark_utils.py`` ``landmarks_2_face_bounding_box`` lines 112-130, called by
``sheap/fa_landmark_utils.py`` ``detect_face_and_crop``): with E the landmarks' larger extent
and c the centre of their bounding rectangle, the square has half-side (1 + margin) * E / 2
and centre (c_x, c_y - shift * E / 2). ``detect_face_and_crop`` defaults to margin 0.6 /
shift 0.2; ``video_demo.py`` line 176 calls it with margin 0.9 / shift 0.5. (``demo.py`` itself
does not crop: its example images are already head crops.)

Our pipeline keeps only the SCRFD box per frame. With S the box's longer side and b its
centre, this script measures on real frames r = E / S and d = (c - b) / S, then rewrites the
authors' rule in box units:

    side        = (1 + margin) * r * S                  -> flame.head_scale    = (1 + margin) * r
    centre up   = (shift * r / 2 - d_y) * S  from b_y   -> flame.head_shift_up = shift * r / 2 - d_y

It also reports where SCRFD's 5 keypoints (eyes, nose, mouth corners) sit in landmark units,
as a check that box and landmarks describe the same face.

Landmarks: dlib's 68-point shape predictor (iBUG 300-W convention, the one face-alignment /
FAN uses too) from the PyPI packages ``dlib-bin`` and ``face-recognition-models``, seeded with
dlib's own HOG face detector (what the predictor was trained on). They are not project
dependencies: ``pip install -e '.[bench-landmarks]'`` (or the two packages by name).

Run: ``.venv/bin/python bench/measure_head_crop.py [VIDEO|DIR ...] [--every 5] [--model-dir DIR]``;
default input every GRID clip in ``../shared/media/grid``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.config import FaceDetectionConfig, load_config  # noqa: E402
from pipelines.faces.detectors import build_detector  # noqa: E402
from pipelines.media.decode import iter_video_frames  # noqa: E402
from pipelines.models import ModelStore  # noqa: E402

# SHeaP demo settings, (margin, shift), from the files named in the module docstring.
SETTINGS = {"image (detect_face_and_crop defaults)": (0.6, 0.2), "video (video_demo.py)": (0.9, 0.5)}
PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"  # iBUG 300-W, 68 points
VIDEO_EXTENSIONS = (".mpg", ".mp4", ".mov", ".mkv", ".avi", ".webm")


def load_landmarker():
    """(HOG face detector, 68-point shape predictor), or SystemExit naming the packages."""
    install = ("`.venv/bin/pip install dlib-bin face-recognition-models==0.3.0` "
               "(or `pip install -e '.[bench-landmarks]'`)")
    try:
        import dlib
    except ImportError:
        raise SystemExit(f"measure_head_crop needs dlib (PyPI dlib-bin) for 68-point landmarks: {install}") from None
    # Located by file, not imported: the package's __init__ needs pkg_resources, gone from new setuptools.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"measure_head_crop needs the 68-point model from PyPI face-recognition-models: {install}")
    predictor_path = Path(list(spec.submodule_search_locations)[0]) / "models" / PREDICTOR_FILE
    if not predictor_path.is_file():
        raise SystemExit(f"face-recognition-models is installed but {predictor_path} is missing: reinstall it")
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(predictor_path))


def landmarks_68(rgb: np.ndarray, hog, predictor) -> np.ndarray | None:
    """(68, 2) landmarks of the largest HOG face, or None when HOG finds no face."""
    faces = hog(rgb, 1)
    if not faces:
        return None
    face = max(faces, key=lambda r: r.width() * r.height())
    shape = predictor(rgb, face)
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)


def videos(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS)
        else:
            found.append(path)
    return found


def measure(clips: list[Path], every: int, model_dir: Path) -> dict[str, np.ndarray]:
    hog, predictor = load_landmarker()
    detector = build_detector(FaceDetectionConfig(backend="scrfd"), ModelStore(model_dir))
    rows: dict[str, list] = {"clip": [], "r": [], "dx": [], "dy": [], "ex_ey": [], "kps": []}
    skipped = 0
    try:
        for clip in clips:
            for index, rgb in enumerate(iter_video_frames(clip)):
                if index % every:
                    continue
                detections = detector.detect(rgb)
                lmk = landmarks_68(rgb, hog, predictor)
                if not detections or lmk is None:
                    skipped += 1
                    continue
                det = max(detections, key=lambda d: d.score)
                x1, y1, x2, y2 = det.box
                side = max(x2 - x1, y2 - y1)
                box_c = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
                lo, hi = lmk.min(axis=0), lmk.max(axis=0)
                extent = hi - lo
                lmk_c = (lo + hi) / 2
                # The pipeline's Detection keeps no keypoints: read them from the insightface model the
                # detector wraps, for the row whose box is the chosen one.
                kp_boxes, kpss = detector._model.detect(np.ascontiguousarray(rgb[:, :, ::-1]))
                kps = kpss[int(np.argmin(np.abs(kp_boxes[:, :4] - np.array(det.box)).sum(axis=1)))]
                rows["clip"].append(clip.name)
                rows["r"].append(extent.max() / side)
                rows["dx"].append((lmk_c[0] - box_c[0]) / side)
                rows["dy"].append((lmk_c[1] - box_c[1]) / side)
                rows["ex_ey"].append(extent / side)
                rows["kps"].append((kps - lmk_c) / extent.max())
    finally:
        detector.close()
    if skipped:
        print(f"frames without a SCRFD face or a HOG face (left out): {skipped}")
    return {k: np.asarray(v) for k, v in rows.items()}


def summary(name: str, values: np.ndarray) -> str:
    return (f"{name:<34} mean {values.mean():+.4f}  sd {values.std(ddof=1):.4f}  "
            f"p5 {np.percentile(values, 5):+.4f}  p95 {np.percentile(values, 95):+.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="*", type=Path)
    parser.add_argument("--every", type=int, default=5, help="measure every N-th frame (default 5)")
    parser.add_argument("--model-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    shared = Path(os.environ.get("TALKINGHEAD_SHARED_DIR") or REPO.parent / "shared")
    model_dir = args.model_dir or Path(os.environ.get("TALKINGHEAD_MODEL_DIR") or shared / "models")
    clips = videos(args.inputs or [shared / "media" / "grid"])
    if not clips:
        raise SystemExit("no videos to measure")
    m = measure(clips, max(1, args.every), model_dir)
    if len(m["r"]) < 2:
        raise SystemExit("fewer than two frames had both a SCRFD box and 68 landmarks")
    print(f"frames measured: {len(m['r'])} (every {args.every}th frame of {len(clips)} clips)")
    print("ratios (S = SCRFD box longer side, E = larger extent of the 68 landmarks):")
    print(summary("r = E / S", m["r"]))
    print(summary("landmark width / S", m["ex_ey"][:, 0]))
    print(summary("landmark height / S", m["ex_ey"][:, 1]))
    print(summary("d_x = (lmk centre - box centre)_x / S", m["dx"]))
    print(summary("d_y = (lmk centre - box centre)_y / S", m["dy"]))
    print("per clip: " + ", ".join(
        f"{c} r={m['r'][m['clip'] == c].mean():.3f} d_y={m['dy'][m['clip'] == c].mean():+.3f}"
        for c in dict.fromkeys(m["clip"])))
    names = ("left eye", "right eye", "nose", "mouth left", "mouth right")
    kps = m["kps"].mean(axis=0)
    print("SCRFD keypoints relative to the landmark centre, in units of E: " + ", ".join(
        f"{n} ({x:+.3f}, {y:+.3f})" for n, (x, y) in zip(names, kps)))
    r, dy = float(m["r"].mean()), float(m["dy"].mean())
    current = load_config().flame
    print(f"configured now: flame.head_scale {current.head_scale}, flame.head_shift_up {current.head_shift_up}")
    for label, (margin, shift) in SETTINGS.items():
        scale = (1 + margin) * r
        shift_up = shift * r / 2 - dy
        per_frame = (1 + margin) * m["r"]
        print(f"SHeaP {label}: margin {margin}, shift {shift} -> head_scale = (1+{margin})*{r:.4f} = {scale:.3f}, "
              f"head_shift_up = {shift}*{r:.4f}/2 - ({dy:+.4f}) = {shift_up:.3f}  "
              f"(per-frame scale sd {per_frame.std(ddof=1):.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
