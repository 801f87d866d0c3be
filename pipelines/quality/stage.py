"""The quality stage: keep the frames of each face clip whose face is big, sharp and turned enough.

It reads only the figures the face stage measured per output frame into ``<key>.boxes.npy``
(pipelines/faces/quality.py: face size, crop upscale, sharpness, head pose); nothing is
decoded unless a clip must be split. Three gates per 24 fps frame:

* size: ``upscale`` (crops.size_px / crop side in source pixels) at most ``max_upscale``;
  with ``size_policy: flag`` it never fails a frame, the decision is flagged ``face_small``.
* sharpness: at least ``min_sharpness`` (NaN, a bridged frame with no detection, passes).
* orientation: the frame's label in ``allowed_orientations``; the label comes from the
  source's direction sidecar (pipelines/quality/directions.py) where it covers the frame,
  else from the keypoint head pose (a frame without a pose passes).

Pass/fail is a majority over ``smoothing_window_s`` so one bad frame does not cut a clip;
passing runs of at least ``min_segment_s`` are kept (whole: accepted as is; partly: split
into ``<key>_qNN`` children). A segment with no run left is rejected for the gate that
failed the most frames.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from pathlib import Path

import numpy as np

from pipelines.config import PipelineConfig, QualityConfig
from pipelines.faces.quality import orientation_label
from pipelines.quality.directions import DirectionsError, FaceDirections, directions_for, sidecar_path
from pipelines.schema.records import ACCEPTED, REJECTED, ChildSegment, Segment, SourceRef, StageDecision, StageResult
from pipelines.segment_runs import child_file_pattern, kept_runs, write_runs
from pipelines.stage_spec import StageContext, StageSpec

STAGE = "quality"
CHILD_TAG = "_q"
GATES = ("size", "sharpness", "orientation")
REASONS = {"size": "face_too_small", "sharpness": "face_blurry", "orientation": "head_orientation"}
QUALITY_COLUMNS = ("t_out", "face_px", "upscale", "sharpness", "yaw_deg", "pitch_deg")


def boxes_columns(table: np.ndarray, name: str) -> dict[str, np.ndarray]:
    """The quality columns of a boxes table by name (pipelines.faces.clips.BOXES_COLUMNS)."""
    from pipelines.faces.clips import BOXES_COLUMNS

    missing = [c for c in QUALITY_COLUMNS if c not in BOXES_COLUMNS]
    if missing or table.ndim != 2 or table.shape[1] != len(BOXES_COLUMNS):
        raise ValueError(f"{name}: no quality columns {missing or ''} (table {table.shape}, expected "
                         f"{len(BOXES_COLUMNS)} columns): re-run the face stage")
    return {c: table[:, BOXES_COLUMNS.index(c)].astype(np.float64) for c in QUALITY_COLUMNS}


def frame_labels(cols: dict[str, np.ndarray], directions: FaceDirections | None,
                 config: QualityConfig) -> tuple[list[str | None], list[str | None]]:
    """Per frame: orientation label and where it came from ("sidecar", "keypoints" or None)."""
    annotated = directions.labels_at(cols["t_out"]) if directions is not None else [None] * len(cols["t_out"])
    labels: list[str | None] = []
    sources: list[str | None] = []
    for given, yaw, pitch in zip(annotated, cols["yaw_deg"], cols["pitch_deg"]):
        if given is not None:
            labels.append(given)
            sources.append("sidecar")
        elif math.isfinite(yaw) and math.isfinite(pitch):
            labels.append(orientation_label(float(yaw), float(pitch), config))
            sources.append("keypoints")
        else:
            labels.append(None)
            sources.append(None)
    return labels, sources


def gate_failures(cols: dict[str, np.ndarray], labels: list[str | None], config: QualityConfig) -> dict[str, np.ndarray]:
    """Per gate, the frames it fails (before smoothing). NaN figures pass: nothing was measured."""
    size = cols["upscale"] > config.max_upscale if config.size_policy == "reject" else np.zeros(len(labels), bool)
    sharp = cols["sharpness"] < config.min_sharpness  # NaN < x is False
    orient = np.array([label is not None and label not in config.allowed_orientations for label in labels], bool)
    return {"size": size, "sharpness": sharp, "orientation": orient}


def majority(passing: np.ndarray, window: int) -> np.ndarray:
    """Each frame passes when more than half the frames of the centred window around it pass
    (the window is cut at the clip's ends; a tie there fails)."""
    n = len(passing)
    if window <= 1 or n == 0:
        return passing.copy()
    radius = window // 2
    sums = np.concatenate([[0], np.cumsum(passing.astype(np.int64))])
    lo, hi = np.maximum(np.arange(n) - radius, 0), np.minimum(np.arange(n) + radius + 1, n)
    return 2 * (sums[hi] - sums[lo]) > hi - lo


def _runs_of(mask: np.ndarray) -> list[list[int]]:
    return [[a, b] for a, b in kept_runs(mask, 1)]


def _median(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return round(float(np.median(finite)), 3) if len(finite) else None


def _max(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return round(float(finite.max()), 3) if len(finite) else None


def summarise(cols: dict[str, np.ndarray], labels: list[str | None], sources: list[str | None],
              lo: int, hi: int) -> dict:
    """The figures of frames [lo, hi): medians, majority label and where the labels came from."""
    counts = Counter(label for label in labels[lo:hi] if label is not None)
    used = {s for s in sources[lo:hi] if s is not None}
    return {"face_px_median": _median(cols["face_px"][lo:hi]), "upscale_median": _median(cols["upscale"][lo:hi]),
            "sharpness_median": _median(cols["sharpness"][lo:hi]), "yaw_deg_median": _median(cols["yaw_deg"][lo:hi]),
            "orientation": counts.most_common(1)[0][0] if counts else None,
            "orientation_source": used.pop() if len(used) == 1 else "mixed" if used else None}


def decide_segment(folder: Path, segment: Segment, directions: FaceDirections | None,
                   config: PipelineConfig) -> StageDecision:
    q, fps = config.quality, config.crops.fps
    cols = boxes_columns(np.load(folder / segment.files["boxes.npy"]), segment.files["boxes.npy"])
    n = len(cols["t_out"])
    labels, sources = frame_labels(cols, directions, q)
    failed = gate_failures(cols, labels, q)
    raw_pass = ~(failed["size"] | failed["sharpness"] | failed["orientation"])
    keep = majority(raw_pass, int(round(q.smoothing_window_s * fps)))
    runs = kept_runs(keep, max(1, int(math.ceil(q.min_segment_s * fps))))
    kept = sum(b - a for a, b in runs)
    numbers = {**summarise(cols, labels, sources, 0, n),
               "failed_s": {REASONS[g]: round(float(failed[g].sum()) / fps, 4) for g in GATES},
               "kept_s": round(kept / fps, 4), "dropped_s": round((n - kept) / fps, 4),
               "upscale_max": _max(cols["upscale"]),
               "max_upscale": q.max_upscale, "min_sharpness": q.min_sharpness}
    flags = ["face_small"] if q.size_policy == "flag" and bool((cols["upscale"] > q.max_upscale).any()) else []
    # Per 24 fps frame: the label and its source; the failing frame runs per gate (before smoothing).
    payload = {**numbers, "fps": fps, "frame_orientation": labels, "frame_orientation_source": sources,
               "failed_runs": {REASONS[g]: _runs_of(failed[g]) for g in GATES}, "kept_runs": [list(r) for r in runs]}
    if not runs:
        gate = max(GATES, key=lambda g: int(failed[g].sum()))
        reason = REASONS[gate] if failed[gate].any() else "quality_run_too_short"
        if gate == "orientation":
            numbers = {**numbers, "orientation_counts": dict(Counter(l for l in labels if l is not None)),
                       "allowed_orientations": list(q.allowed_orientations)}
        return StageDecision(decision=REJECTED, reason=reason, numbers=numbers, flags=flags, payload=payload)
    children = []
    if runs != [(0, n)]:
        for child in write_runs(folder, segment, runs, CHILD_TAG, config):
            lo, hi = child.lo, child.hi
            child_numbers = {**numbers, **summarise(cols, labels, sources, lo, hi),
                             "kept_s": round((hi - lo) / fps, 4), "dropped_s": 0.0}
            children.append(ChildSegment(key=child.key, start_s=child.start_s, end_s=child.end_s, files=child.files,
                                         numbers=child_numbers,
                                         payload={**child_numbers, "fps": fps, "parent": segment.key,
                                                  "frame_orientation": labels[lo:hi],
                                                  "frame_orientation_source": sources[lo:hi]}))
    return StageDecision(decision=ACCEPTED, numbers=numbers, flags=flags, payload=payload, children=children)


def source_inputs(source: SourceRef, config: PipelineConfig) -> str | None:
    """The direction sidecar's content hash (None without one or with the sidecar switched off)."""
    path = sidecar_path(source.path)
    if not config.quality.direction_sidecar or not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(ctx: StageContext) -> StageResult:
    for stale in ctx.folder.glob(child_file_pattern(CHILD_TAG)):
        stale.unlink()  # children of an earlier run are rewritten below (its quality.json is withdrawn)
    directions = None
    if ctx.config.quality.direction_sidecar:
        try:
            directions = directions_for(ctx.source.path)
        except DirectionsError as error:
            # Never guess past a sidecar someone wrote on purpose: every segment is rejected,
            # the error (naming the file) recorded with it.
            numbers = {"sidecar": sidecar_path(ctx.source.path).name}
            return StageResult(stage=STAGE, details={"sidecar_error": str(error)}, segments={
                s.key: StageDecision(decision=REJECTED, reason="direction_sidecar_invalid", numbers=numbers,
                                     payload={"error": str(error)}) for s in ctx.candidates})
    decisions = {s.key: decide_segment(ctx.folder, s, directions, ctx.config) for s in ctx.candidates}
    details = {"sidecar": sidecar_path(ctx.source.path).name if directions is not None else None}
    return StageResult(stage=STAGE, segments=decisions, details=details)


SPEC = StageSpec(
    name=STAGE, needs=("faces",), config_sections=("quality", "crops", "encode"), version="1",
    build_backend=lambda config: None, run=run, source_inputs=source_inputs,
    description="Face size, sharpness and head orientation gates per frame; segments cut to the passing frames.",
)
