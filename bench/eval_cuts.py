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
The composition helpers are shared with tests/pipelines/faces/test_shots.py.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from pipelines.fixtures.media import AUDIO_RATE, FPS, H264_AAC, grid_clips, run_ffmpeg, shared_dir

CUT_FRAME = 38  # first frame of the second shot in the composed cuts (1.52 s at 25 fps)
ZOOM = 1.5

_AUDIO = f"aresample={AUDIO_RATE},aformat=sample_fmts=fltp:channel_layouts=stereo"


def _two_shots(first: Path, second: Path, out: Path, second_filter: str = "null") -> Path:
    """Frames [0, CUT_FRAME) of ``first`` then frames [CUT_FRAME, end) of ``second`` (after
    ``second_filter``), with each shot's own audio: a hard cut at CUT_FRAME, speech continuing."""
    cut_s = CUT_FRAME / FPS
    graph = (f"[0:v]fps={FPS},trim=end_frame={CUT_FRAME},setpts=PTS-STARTPTS,format=yuv420p,setsar=1[v0];"
             f"[1:v]fps={FPS},trim=start_frame={CUT_FRAME},setpts=PTS-STARTPTS,{second_filter},"
             f"format=yuv420p,setsar=1[v1];"
             f"[0:a]atrim=end={cut_s},asetpts=PTS-STARTPTS,{_AUDIO}[a0];"
             f"[1:a]atrim=start={cut_s},asetpts=PTS-STARTPTS,{_AUDIO}[a1];"
             "[v0][a0][v1][a1]concat=n=2:v=1:a=1[v][a]")
    run_ffmpeg(["-i", str(first), "-i", str(second), "-filter_complex", graph, "-map", "[v]", "-map", "[a]",
                *H264_AAC, str(out)])
    return out


def hard_cut(first: Path, second: Path, out: Path) -> Path:
    """A cut from one GRID speaker to another at CUT_FRAME: same framing, same backdrop."""
    return _two_shots(first, second, out)


def zoom_cut(clip: Path, out: Path, zoom: float = ZOOM) -> Path:
    """One speaker, the second shot framed ``zoom`` times tighter (centre crop scaled back up)."""
    return _two_shots(clip, clip, out, f"crop=iw/{zoom}:ih/{zoom},scale=360:288")


def scene_cut(first: Path, second: Path, out: Path) -> Path:
    """A cut to a visibly different picture: the second shot mirrored, hue rotated and brightened."""
    return _two_shots(first, second, out, "hflip,hue=h=120:s=1.5,eq=brightness=0.15")


def variant(clip: Path, out: Path, kind: str) -> Path:
    """The whole clip zoomed, blurred, recompressed hard, or upscaled to 1080p (pillarboxed)."""
    filters = {"zoom": f"crop=iw/{ZOOM}:ih/{ZOOM},scale=360:288",
               "blur": "gblur=sigma=1.5",
               "recompressed": "null",
               "1080p": "scale=1350:1080,pad=1920:1080:285:0"}[kind]
    quality = ["-crf", "38"] if kind == "recompressed" else []
    run_ffmpeg(["-i", str(clip), "-vf", f"fps={FPS},{filters},format=yuv420p", "-an",
                "-c:v", "libx264", "-preset", "veryfast", *quality, str(out)])
    return out


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
