"""The face stage's detection schedule (issue 15): detector cost and what changes, against every-frame detection.

For each input (the six GRID clips and footage composed from them: cuts, two faces, a face
that comes and goes, gaps, a slow pan and a fast shake) the face stage runs once with the
detector on every frame (``detection_schedule.enabled: false``) and once per candidate
schedule ``every_k`` in --ks. Per run: detector calls and detector seconds (the detector's
``detect`` wrapped by bench/timed_backends.TimedCalls), per source second and as the
every-frame figure over the scheduled one; accepted seconds relative to every-frame; the mean
IoU of the output boxes (boxes.npy, x1..y2) against every-frame on the output frames both
have, also on the interpolated frames alone; whether the segments (bounds within one output
frame, status, ended_by), the shot cuts and the quality stage's decisions on each accepted
segment are the same.

A schedule meets the targets when, over all inputs, detector calls and detector seconds are
at least 3x lower than every-frame, and on every input accepted seconds are at least 99% of
every-frame, the mean box IoU at least 0.9, and segments, cuts and quality decisions are the
same. The recommended default is the meeting schedule with the fewest detector seconds.

    python bench/bench_detect_schedule.py [--ks 2 3 4 5 6 8] [--json OUT] [--markdown OUT]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/bench_detect_schedule.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(REPO))

from pipelines.config import FaceDetectionConfig, PipelineConfig, load_config  # noqa: E402
from pipelines.faces.clips import BOXES_COLUMNS, INTERPOLATED_SCORE  # noqa: E402
from pipelines.faces.detectors import FaceDetector, build_detector  # noqa: E402
from pipelines.faces.stage import process_source  # noqa: E402
from pipelines.fixtures.footage import face_comes_and_goes, hard_cut, moving_crop, scene_cut, zoom_cut  # noqa: E402
from pipelines.fixtures.media import FPS, H264_AAC, MediaCache, concat_with_gap, run_ffmpeg, side_by_side  # noqa: E402
from pipelines.ingest import SourceRegistry  # noqa: E402
from pipelines.models import ModelStore  # noqa: E402
from pipelines.quality.stage import decide_segment  # noqa: E402
from pipelines.schema.records import ACCEPTED, SourceRecord  # noqa: E402
from pipelines.workdir import source_dir  # noqa: E402

from bench.timed_backends import TimedCalls  # noqa: E402

DEFAULT_MEDIA_DIR = REPO.parent / "shared" / "media" / "grid"
DEFAULT_MODEL_DIR = REPO.parent / "shared" / "models"
RESULTS_DIR = REPO / "bench" / "results"
CANDIDATE_KS = (2, 3, 4, 5, 6, 8)
TARGET_COST_RATIO = 3.0
TARGET_ACCEPTED = 0.99
TARGET_IOU = 0.9
OUTPUT_FRAME_S = 1 / 24
SCORE = BOXES_COLUMNS.index("score_-1_bridged_-2_interpolated")
def composed_cases(grid: list[Path], cache: MediaCache) -> dict[str, Path]:
    """The composed inputs by name (each made once in ``cache``)."""
    g = grid
    pair_a = cache.get("pair_a.mp4", side_by_side, g[0], g[1])
    pair_b = cache.get("pair_b.mp4", side_by_side, g[2], g[3])
    return {
        "hard_cut": cache.get("hard_cut.mp4", hard_cut, g[0], g[1]),
        "zoom_cut": cache.get("zoom_cut.mp4", zoom_cut, g[0]),
        "scene_cut": cache.get("scene_cut.mp4", scene_cut, g[0], g[2]),
        "two_faces": pair_b,
        "two_faces_cut": cache.get("two_faces_cut.mp4", hard_cut, pair_a, pair_b),
        "two_faces_come_and_go": cache.get("come_and_go.mp4", face_comes_and_goes, g[4], g[5]),
        "gap_short": cache.get("gap_short.mp4", concat_with_gap, g[4], 0.4),
        "gap_long": cache.get("gap_long.mp4", concat_with_gap, g[5], 1.5),
        "pan": cache.get("pan.mp4", moving_crop, g[1], kind="pan"),
        "shake": cache.get("shake.mp4", moving_crop, g[2], kind="shake"),
        "fast_shake": cache.get("fast_shake.mp4", moving_crop, g[2], kind="fast_shake"),
    }


@dataclass
class SegmentFigures:
    key: str
    start_s: float
    end_s: float
    status: str
    ended_by: str | None
    detected_frames: int | None
    bridged_frames: int | None
    quality: str | None = None  # the quality stage's decision on an accepted segment: "accepted 3.0 s" / reason


@dataclass
class RunFigures:
    schedule: str
    every_k: int
    source_s: float
    detector_calls: int
    detector_s: float
    stage_s: float
    accepted_s: float
    cuts_s: list[float]
    schedule_counts: dict[str, int]
    segments: list[SegmentFigures]
    boxes: dict[str, np.ndarray] = field(repr=False, default_factory=dict)


@dataclass
class Comparison:
    case: str
    every_k: int
    calls_ratio: float  # every-frame calls / scheduled calls
    seconds_ratio: float
    accepted_fraction: float
    mean_iou: float | None
    min_iou: float | None
    interpolated_mean_iou: float | None
    interpolated_frames: int
    backfilled_frames: int
    segments_same: bool
    cuts_same: bool
    quality_same: bool

    def meets(self) -> bool:
        return (self.accepted_fraction >= TARGET_ACCEPTED and (self.mean_iou is None or self.mean_iou >= TARGET_IOU)
                and self.segments_same and self.cuts_same and self.quality_same)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of two (N, 4) box arrays."""
    ix = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = ix * iy
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def matched_rows(reference: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of two boxes tables at the same output time (t_out within a millisecond)."""
    ref_t, other_t = np.round(reference[:, 0] * 1000).astype(int), np.round(other[:, 0] * 1000).astype(int)
    common, ri, oi = np.intersect1d(ref_t, other_t, return_indices=True)
    return reference[ri], other[oi]


def run_face_stage(video: Path, root: Path, detector: FaceDetector, model_dir: Path, every_k: int | None,
                   label: str) -> RunFigures:
    """The face stage on ``video`` (every-frame detection when ``every_k`` is None), then the quality
    stage's decision on each accepted segment."""
    schedule = {"enabled": False} if every_k is None else {"enabled": True, "every_k": every_k}
    config = load_config(paths={"input_dir": video.parent, "data_dir": root, "model_dir": model_dir},
                         detection_schedule=schedule)
    (ref,) = SourceRegistry(config.paths.registry_path).scan(config.paths.input_dir, config.ingest.extensions)
    timed = TimedCalls(detector, ["detect"])
    start = time.perf_counter()
    record = process_source(ref, config, timed)
    stage_s = time.perf_counter() - start
    folder = source_dir(config, ref.source_id)
    return _figures(record, folder, config, label, every_k or 1, timed, stage_s)


def _figures(record: SourceRecord, folder: Path, config: PipelineConfig, label: str, every_k: int,
             timed: TimedCalls, stage_s: float) -> RunFigures:
    segments, boxes = [], {}
    for s in record.segments:
        figures = SegmentFigures(s.key, s.start_s, s.end_s, s.status, s.numbers.get("ended_by"),
                                 s.numbers.get("detected_frames"), s.numbers.get("bridged_frames"))
        if s.status == ACCEPTED:
            boxes[s.key] = np.load(folder / s.files["boxes.npy"])
            decision = decide_segment(folder, s, None, config)
            figures.quality = (f"accepted {decision.numbers['kept_s']} s" if decision.decision == ACCEPTED
                               else f"rejected {decision.reason}")
        segments.append(figures)
    accepted_s = sum(s.end_s - s.start_s for s in record.segments if s.status == ACCEPTED)
    return RunFigures(schedule=label, every_k=every_k, source_s=float(record.numbers.get("decoded_duration_s", 0.0)),
                      detector_calls=timed.calls, detector_s=timed.seconds, stage_s=stage_s, accepted_s=accepted_s,
                      cuts_s=list(record.numbers.get("shot_cuts_s", [])),
                      schedule_counts=dict(record.numbers.get("detection_schedule", {})), segments=segments, boxes=boxes)


def _segment_shape(run: RunFigures) -> list[tuple[float, float, str, str | None]]:
    return [(s.start_s, s.end_s, s.status, s.ended_by) for s in sorted(run.segments, key=lambda s: (s.start_s, s.key))]


def _same_segments(a: RunFigures, b: RunFigures) -> bool:
    sa, sb = _segment_shape(a), _segment_shape(b)
    return len(sa) == len(sb) and all(
        abs(x[0] - y[0]) <= OUTPUT_FRAME_S + 1e-6 and abs(x[1] - y[1]) <= OUTPUT_FRAME_S + 1e-6 and x[2:] == y[2:]
        for x, y in zip(sa, sb))


def _pair_segments(a: RunFigures, b: RunFigures) -> list[tuple[str, str]]:
    """Accepted segments of ``a`` and ``b`` that overlap most in time and in place, one to one."""
    pairs = []
    for key, table in a.boxes.items():
        best, best_overlap = None, 0.0
        for other_key, other in b.boxes.items():
            ra, rb = matched_rows(table, other)
            overlap = float(box_iou(ra[:, 1:5], rb[:, 1:5]).mean()) if len(ra) else 0.0
            if overlap > best_overlap:
                best, best_overlap = other_key, overlap
        if best is not None:
            pairs.append((key, best))
    return pairs


def compare(case: str, reference: RunFigures, run: RunFigures) -> Comparison:
    ious, interp_ious = [], []
    for ref_key, key in _pair_segments(reference, run):
        ra, rb = matched_rows(reference.boxes[ref_key], run.boxes[key])
        overlaps = box_iou(ra[:, 1:5], rb[:, 1:5])
        ious.append(overlaps)
        interp_ious.append(overlaps[rb[:, SCORE] == INTERPOLATED_SCORE])
    all_iou = np.concatenate(ious) if ious else np.zeros(0)
    interp = np.concatenate(interp_ious) if interp_ious else np.zeros(0)
    quality_ref = sorted((s.start_s, s.quality) for s in reference.segments if s.status == ACCEPTED)
    quality_run = sorted((s.start_s, s.quality) for s in run.segments if s.status == ACCEPTED)
    return Comparison(
        case=case, every_k=run.every_k,
        calls_ratio=reference.detector_calls / max(1, run.detector_calls),
        seconds_ratio=reference.detector_s / max(1e-9, run.detector_s),
        accepted_fraction=run.accepted_s / reference.accepted_s if reference.accepted_s > 0 else 1.0,
        mean_iou=float(all_iou.mean()) if len(all_iou) else None,
        min_iou=float(all_iou.min()) if len(all_iou) else None,
        interpolated_mean_iou=float(interp.mean()) if len(interp) else None,
        interpolated_frames=int(run.schedule_counts.get("interpolated_frames", 0)),
        backfilled_frames=int(run.schedule_counts.get("backfilled_frames", 0)),
        segments_same=_same_segments(reference, run),
        cuts_same=len(reference.cuts_s) == len(run.cuts_s) and all(
            abs(a - b) < 1e-6 for a, b in zip(reference.cuts_s, run.cuts_s)),
        quality_same=[q for _, q in quality_ref] == [q for _, q in quality_run])


@dataclass
class ScheduleSummary:
    every_k: int
    detector_calls_per_source_s: float
    detector_s_per_source_s: float
    calls_ratio: float
    seconds_ratio: float
    min_accepted_fraction: float
    min_case_mean_iou: float | None
    interpolated_mean_iou: float | None
    cases_failing: list[str]
    meets_targets: bool


def summarise(every: list[RunFigures], runs: dict[int, list[RunFigures]],
              comparisons: dict[int, list[Comparison]]) -> list[ScheduleSummary]:
    source_s = sum(r.source_s for r in every)
    out = [ScheduleSummary(1, sum(r.detector_calls for r in every) / source_s,
                           sum(r.detector_s for r in every) / source_s, 1.0, 1.0, 1.0, 1.0, None, [], False)]
    for k, scheduled in runs.items():
        rows = comparisons[k]
        calls = sum(r.detector_calls for r in scheduled)
        seconds = sum(r.detector_s for r in scheduled)
        calls_ratio = sum(r.detector_calls for r in every) / calls
        seconds_ratio = sum(r.detector_s for r in every) / seconds
        ious = [c.mean_iou for c in rows if c.mean_iou is not None]
        interp = [c.interpolated_mean_iou for c in rows if c.interpolated_mean_iou is not None]
        failing = [c.case for c in rows if not c.meets()]
        out.append(ScheduleSummary(
            k, calls / source_s, seconds / source_s, calls_ratio, seconds_ratio,
            min(c.accepted_fraction for c in rows), min(ious) if ious else None,
            float(np.mean(interp)) if interp else None, failing,
            not failing and calls_ratio >= TARGET_COST_RATIO and seconds_ratio >= TARGET_COST_RATIO))
    return out


def recommended(summaries: list[ScheduleSummary]) -> int | None:
    meeting = [s for s in summaries if s.meets_targets]
    return min(meeting, key=lambda s: s.detector_s_per_source_s).every_k if meeting else None


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(summaries: list[ScheduleSummary], comparisons: dict[int, list[Comparison]], every: list[RunFigures],
             cases: list[str], choice: int | None, load: dict[str, str]) -> str:
    source_s = sum(r.source_s for r in every)
    lines = [f"# Detection schedule: {len(cases)} inputs, {source_s:.1f} s of source",
             "",
             f"Load average before / after: {load['before']} / {load['after']} (2 cores shared). Ratios are "
             "every-frame over scheduled, measured in the same run.",
             "",
             "| schedule | detector calls / source s | detector s / source s | calls ratio | seconds ratio | "
             "min accepted | min case mean IoU | interpolated IoU | inputs differing | targets |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for s in summaries:
        name = "every frame" if s.every_k == 1 else f"k={s.every_k}"
        lines.append(f"| {name} | {s.detector_calls_per_source_s:.1f} | {s.detector_s_per_source_s:.3f} | "
                     f"{s.calls_ratio:.2f}x | {s.seconds_ratio:.2f}x | {s.min_accepted_fraction:.1%} | "
                     f"{_fmt(s.min_case_mean_iou, '.3f')} | {_fmt(s.interpolated_mean_iou, '.3f')} | "
                     f"{', '.join(s.cases_failing) or '-'} | {'met' if s.meets_targets else ('-' if s.every_k == 1 else 'no')} |")
    lines += ["", f"Recommended default: {'every_k ' + str(choice) if choice else 'none meets the targets'} "
                  "(the meeting schedule with the fewest detector seconds).", ""]
    lines += ["## Per input", "",
              "| input | k | calls ratio | accepted | mean IoU | min IoU | interpolated IoU | interpolated / backfilled "
              "frames | segments | cuts | quality |",
              "|---|---:|---:|---:|---:|---:|---:|---|---|---|---|"]
    for k, rows in comparisons.items():
        for c in rows:
            lines.append(f"| {c.case} | {k} | {c.calls_ratio:.2f}x | {c.accepted_fraction:.1%} | "
                         f"{_fmt(c.mean_iou, '.3f')} | {_fmt(c.min_iou, '.3f')} | {_fmt(c.interpolated_mean_iou, '.3f')} | "
                         f"{c.interpolated_frames} / {c.backfilled_frames} | {'same' if c.segments_same else 'DIFFER'} | "
                         f"{'same' if c.cuts_same else 'DIFFER'} | {'same' if c.quality_same else 'DIFFER'} |")
    lines.append("")
    return "\n".join(lines)


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=list(CANDIDATE_KS), help="candidate every_k values")
    parser.add_argument("--only", nargs="*", default=None, help="input names to run (default: all)")
    parser.add_argument("--media-dir", type=Path, default=DEFAULT_MEDIA_DIR)
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--json", type=Path, default=RESULTS_DIR / "detect_schedule.json")
    parser.add_argument("--markdown", type=Path, default=RESULTS_DIR / "detect_schedule.md")
    args = parser.parse_args(argv)
    load = {"before": _loadavg()}
    work = Path(tempfile.mkdtemp(prefix="bench_detect_schedule_"))
    detector = build_detector(FaceDetectionConfig(backend="scrfd"), ModelStore(args.model_dir))
    try:
        grid = sorted(args.media_dir.glob("*.mpg"))
        inputs: dict[str, Path] = {f"grid_{p.stem}": p for p in grid}
        inputs.update(composed_cases(grid, MediaCache(work / "media")))
        if args.only:
            inputs = {name: path for name, path in inputs.items() if name in args.only}
        every: list[RunFigures] = []
        runs: dict[int, list[RunFigures]] = {k: [] for k in args.ks}
        comparisons: dict[int, list[Comparison]] = {k: [] for k in args.ks}
        for n, (name, path) in enumerate(inputs.items()):
            folder = work / "inputs" / name
            folder.mkdir(parents=True)
            video = folder / path.name
            shutil.copyfile(path, video)
            reference = run_face_stage(video, work / "runs" / name / "every", detector, args.model_dir, None, "every")
            every.append(reference)
            for k in args.ks:
                run = run_face_stage(video, work / "runs" / name / f"k{k}", detector, args.model_dir, k, f"k{k}")
                runs[k].append(run)
                comparisons[k].append(compare(name, reference, run))
            print(f"[{n + 1}/{len(inputs)}] {name}: every-frame {reference.detector_calls} calls; "
                  + ", ".join(f"k={c.every_k} {c.calls_ratio:.1f}x"
                              f"{'' if c.meets() else ' (differs)'}" for c in (comparisons[k][-1] for k in args.ks)),
                  flush=True)
        summaries = summarise(every, runs, comparisons)
        choice = recommended(summaries)
        load["after"] = _loadavg()
        text = markdown(summaries, comparisons, every, list(inputs), choice, load)
        print(text)
        payload = {"load_average": load, "targets": {"cost_ratio": TARGET_COST_RATIO, "accepted": TARGET_ACCEPTED,
                                                    "mean_iou": TARGET_IOU},
                   "recommended_every_k": choice, "summaries": [asdict(s) for s in summaries],
                   "comparisons": {str(k): [asdict(c) for c in rows] for k, rows in comparisons.items()},
                   "runs": {name: {"every": _run_json(every[i]),
                                   **{f"k{k}": _run_json(runs[k][i]) for k in args.ks}}
                            for i, name in enumerate(inputs)}}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=1) + "\n")
        args.markdown.write_text(text)
    finally:
        detector.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _run_json(run: RunFigures) -> dict:
    out = asdict(run)
    out.pop("boxes")
    out["detector_s"] = round(run.detector_s, 4)
    out["stage_s"] = round(run.stage_s, 4)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
