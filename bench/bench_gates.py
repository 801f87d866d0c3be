"""What the real-footage gates cost, as a share of the face stage's time on a 1080p source.

The source is composed from GRID: several clips concatenated (hard cuts between different
people framed alike) and scaled to 1920x1080. In one run this times

- the face stage with every gate on, with the time spent inside each gate's code added up
  by wrappers: the whole-frame shot detector (``ShotCutDetector.step``), the face
  appearance signature (``face_signature``) and the per-face quality figures
  (``measure_frame_face``), plus the detector for reference;
- the face stage again with the gates off (``shots.detector: none``, no face check, the
  quality figures replaced by a constant), as a cross-check of the summed shares;
- the quality stage (it reads the boxes table, no decode; it re-encodes only split clips);
- the ASD stage with the audio-video offset search on and off (``sync.enabled``): the
  extra time is the sync gate's cost.

Each gate's cost is reported as a share of the gated face stage's wall time (ratios from one
run). The target of issue 14: all gates together under 15%.

    python bench/bench_gates.py [--clips N] [--model-dir DIR] [--json OUT] [--markdown OUT]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/bench_gates.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(REPO))

import pipelines.faces.clips as clips  # noqa: E402
from pipelines.config import PipelineConfig, load_config  # noqa: E402
from pipelines.faces.quality import FaceMeasure  # noqa: E402
from pipelines.faces.shots import ShotCutDetector  # noqa: E402
from pipelines.ingest import SourceRegistry  # noqa: E402
from pipelines.runner import ModelBackends, run_stage  # noqa: E402
from pipelines.schema.records import SourceRef  # noqa: E402

from bench.timed_backends import TimedCalls  # noqa: E402

DEFAULT_MEDIA_DIR = REPO.parent / "shared" / "media" / "grid"
DEFAULT_MODEL_DIR = REPO.parent / "shared" / "models"
RESULTS_DIR = REPO / "bench" / "results"


@dataclass
class GateCosts:
    source_s: float
    frames_px: str
    faces_gated_s: float
    faces_ungated_s: float
    detector_s: float
    shot_detector_s: float
    face_signature_s: float
    measure_face_s: float
    quality_stage_s: float
    asd_with_sync_s: float
    asd_without_sync_s: float
    repeat: int

    def shares(self) -> dict[str, float]:
        base = self.faces_gated_s
        sync_extra = max(0.0, self.asd_with_sync_s - self.asd_without_sync_s)
        parts = {"shot_detector": self.shot_detector_s, "face_check": self.face_signature_s,
                 "quality_figures": self.measure_face_s, "quality_stage": self.quality_stage_s,
                 "sync_search": sync_extra}
        out = {name: round(seconds / base, 4) for name, seconds in parts.items()}
        out["all_gates"] = round(sum(parts.values()) / base, 4)
        out["face_stage_gated_vs_ungated"] = round(self.faces_gated_s / self.faces_ungated_s - 1, 4)
        return out


def compose_1080p(media_dir: Path, clips_n: int, out: Path) -> Path:
    """``clips_n`` GRID clips back to back, each scaled to 1080 rows and padded to 1920x1080."""
    sources = sorted(media_dir.glob("*.mpg"))[:clips_n]
    if len(sources) < clips_n:
        raise SystemExit(f"{media_dir}: need {clips_n} GRID clips, found {len(sources)}")
    inputs = [arg for path in sources for arg in ("-i", str(path))]
    chains = "".join(f"[{k}:v]scale=-2:1080,pad=1920:1080:(ow-iw)/2:0,setsar=1,fps=25[v{k}];"
                     f"[{k}:a]aresample=16000,aformat=channel_layouts=mono[a{k}];" for k in range(clips_n))
    joined = "".join(f"[v{k}][a{k}]" for k in range(clips_n))
    graph = f"{chains}{joined}concat=n={clips_n}:v=1:a=1[v][a]"
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *inputs,
                    "-filter_complex", graph, "-map", "[v]", "-map", "[a]", "-c:v", "libx264", "-crf", "18",
                    "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(out)], check=True)
    return out


def _scan(config: PipelineConfig) -> SourceRef:
    refs = SourceRegistry(config.paths.registry_path).scan(config.paths.input_dir, config.ingest.extensions)
    if len(refs) != 1:
        raise SystemExit(f"expected one source in {config.paths.input_dir}, found {len(refs)}")
    return refs[0]


def _timed_faces(source: SourceRef, config: PipelineConfig, backends: ModelBackends,
                 patches: dict[str, Any]) -> float:
    """Wall time of one forced face-stage run with ``patches`` set on pipelines.faces.clips."""
    saved = {name: getattr(clips, name) for name in patches}
    for name, value in patches.items():
        setattr(clips, name, value)
    try:
        started = time.perf_counter()
        run_stage("faces", source, config, backends, force=True)
        return time.perf_counter() - started
    finally:
        for name, value in saved.items():
            setattr(clips, name, value)


def _timed_stage(name: str, source: SourceRef, config: PipelineConfig, backends: ModelBackends) -> float:
    started = time.perf_counter()
    outcome = run_stage(name, source, config, backends, force=True)
    if outcome.status != "ran":
        raise SystemExit(f"stage {name} did not run: {outcome.status}")
    return time.perf_counter() - started


def measure(media_dir: Path, model_dir: Path, clips_n: int, work: Path, repeat: int) -> GateCosts:
    input_dir = work / "input"
    input_dir.mkdir(parents=True)
    video = compose_1080p(media_dir, clips_n, input_dir / "grid_1080p.mp4")
    gated = load_config(paths={"model_dir": str(model_dir), "data_dir": str(work / "data"),
                               "input_dir": str(input_dir)})
    ungated = gated.model_copy(update={
        "shots": gated.shots.model_copy(update={"detector": "none", "face_check": False})})
    source = _scan(gated)
    backends = ModelBackends(gated)
    detector = backends.get("faces", gated)
    detector_watch = TimedCalls(detector, ["detect"])
    real_detect = detector.detect
    detector.detect = detector_watch.detect

    # Warm-up run (model load, caches), not counted.
    run_stage("faces", source, gated, backends, force=True)
    detector_watch.reset()

    # One proxy per function, so each gate's seconds are its own; the face stage alternates
    # gated and ungated runs, best of `repeat` each (gate seconds from the best gated run).
    constant = FaceMeasure(face_px=0.0, sharpness=0.0, yaw_deg=0.0, pitch_deg=0.0, roll_deg=0.0)
    best: dict[str, float] = {}
    faces_gated, faces_ungated = float("inf"), float("inf")
    for _ in range(repeat):
        shots_watch = TimedCalls(ShotCutDetector, ["step"])
        signature_watch = TimedCalls(clips, ["face_signature"])
        measure_watch = TimedCalls(clips, ["measure_frame_face"])
        detector_watch.reset()
        real_step = ShotCutDetector.step
        ShotCutDetector.step = shots_watch.step
        try:
            wall = _timed_faces(source, gated, backends, {
                "face_signature": signature_watch.face_signature, "measure_frame_face": measure_watch.measure_frame_face})
        finally:
            ShotCutDetector.step = real_step
        if wall < faces_gated:
            faces_gated = wall
            best = {"detector": detector_watch.seconds, "shots": shots_watch.seconds,
                    "signature": signature_watch.seconds, "measure": measure_watch.seconds}
        faces_ungated = min(faces_ungated, _timed_faces(source, ungated, backends,
                                                        {"measure_frame_face": lambda frame, detection: constant}))
    run_stage("faces", source, gated, backends, force=True)  # the gated outputs again, for the later stages

    quality_s = _timed_stage("quality", source, gated, backends)
    no_sync = gated.model_copy(update={"sync": gated.sync.model_copy(update={"enabled": False})})
    _timed_stage("asd", source, no_sync, backends)  # warm-up: Light-ASD is built on first use
    # Alternating, best of `repeat` each: the difference is small next to run-to-run noise.
    asd_without, asd_with = float("inf"), float("inf")
    for _ in range(repeat):
        asd_without = min(asd_without, _timed_stage("asd", source, no_sync, backends))
        asd_with = min(asd_with, _timed_stage("asd", source, gated, backends))
    detector.detect = real_detect
    probe = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height:format=duration",
         "-of", "json", str(video)], check=True, capture_output=True, text=True).stdout)
    stream = probe["streams"][0]
    return GateCosts(
        source_s=round(float(probe["format"]["duration"]), 3), frames_px=f"{stream['width']}x{stream['height']}",
        faces_gated_s=round(faces_gated, 3), faces_ungated_s=round(faces_ungated, 3),
        detector_s=round(best["detector"], 3), shot_detector_s=round(best["shots"], 3),
        face_signature_s=round(best["signature"], 3), measure_face_s=round(best["measure"], 3),
        quality_stage_s=round(quality_s, 3),
        asd_with_sync_s=round(asd_with, 3), asd_without_sync_s=round(asd_without, 3), repeat=repeat)


def markdown(costs: GateCosts) -> str:
    shares = costs.shares()
    rows = [("shot detector (PySceneDetect on every frame)", costs.shot_detector_s, shares["shot_detector"]),
            ("face check (appearance signature per face)", costs.face_signature_s, shares["face_check"]),
            ("quality figures (size, sharpness, pose per face)", costs.measure_face_s, shares["quality_figures"]),
            ("quality stage (boxes table, splits)", costs.quality_stage_s, shares["quality_stage"]),
            (f"audio-video offset search (ASD {costs.asd_with_sync_s:.2f} s with, "
             f"{costs.asd_without_sync_s:.2f} s without; negative differences count 0)",
             max(0.0, costs.asd_with_sync_s - costs.asd_without_sync_s), shares["sync_search"])]
    lines = [f"# Gate costs on a {costs.frames_px} source of {costs.source_s:.1f} s",
             "",
             f"Face stage with the gates: {costs.faces_gated_s:.2f} s (detector {costs.detector_s:.2f} s); "
             f"without: {costs.faces_ungated_s:.2f} s "
             f"({shares['face_stage_gated_vs_ungated']:+.1%} by difference of the two walls, best of "
             f"{costs.repeat} each; that difference is within run-to-run noise, the timed gate code is the figure).",
             "",
             "| gate | seconds | share of the gated face stage |",
             "|---|---:|---:|"]
    lines += [f"| {name} | {seconds:.3f} | {share:.1%} |" for name, seconds, share in rows]
    lines += [f"| **all gates** | | **{shares['all_gates']:.1%}** |", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=4, help="GRID clips concatenated (3 s each)")
    parser.add_argument("--repeat", type=int, default=2, help="best of N runs for each timed configuration")
    parser.add_argument("--media-dir", type=Path, default=DEFAULT_MEDIA_DIR)
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--json", type=Path, default=RESULTS_DIR / "gates.json")
    parser.add_argument("--markdown", type=Path, default=RESULTS_DIR / "gates.md")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench_gates_"))
    try:
        costs = measure(args.media_dir, args.model_dir, args.clips, work, args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = markdown(costs)
    print(text)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"costs": asdict(costs), "shares": costs.shares()}, indent=1) + "\n")
    args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
