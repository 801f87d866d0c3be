"""Face detection on a schedule: the detector runs on every k-th frame, boxes in between are interpolated.

The face stage hands every decoded frame to :meth:`DetectionSchedule.push` in display order and
feeds the tracker the :class:`PlannedFrame` s it gets back, in the order given. A frame is
detected when it is due (``every_k`` frames after the previous detection), when it starts a shot
(a shot cut: the frame before the cut is detected too, so no interval spans a cut) and at the end
of the source. The frames between two detections wait here (their pixels are held, at most
``every_k - 1`` frames) until the interval's far end is detected; then the interval is judged:

* certain: both ends show the same faces (one-to-one, boxes overlapping at least
  ``min_interval_iou``, every score at least ``min_score``, and with the face check on, face
  signatures closer than ``shots.max_face_distance``). The frames between get the boxes, keypoints
  and scores interpolated linearly in time and are marked ``interpolated``: they are neither gaps
  nor detections, carry no face signature, and are never bridged.
* uncertain (a face appears or goes, moves fast, scores low or changes): every frame between is
  detected after all, frame by frame as without a schedule. A track therefore ends at the frame
  its face was last detected and a new face starts at the first frame it is detected, exactly as
  with every-frame detection; what the schedule cannot see is a face that comes and goes entirely
  between two detections (shorter than k frames, far below ``tracking.min_segment_s``).

``every_k`` = 1 (or ``enabled: false``) detects every frame and returns each frame at once, which
reproduces the unscheduled stage exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pipelines.config import DetectionScheduleConfig
from pipelines.faces.detectors import Detection
from pipelines.faces.tracking import iou
from pipelines.media.decode import Frame

DetectFn = Callable[[Frame], list[Detection]]
SignatureFn = Callable[[Frame, list[Detection]], list[np.ndarray]]


@dataclass
class PlannedFrame:
    """One frame for the tracker: its detections (interpolated or from the detector) and their face
    signatures (None for interpolated frames and when the face check is off)."""

    frame: Frame
    detections: list[Detection]
    signatures: list[np.ndarray] | None
    interpolated: bool = False


@dataclass
class ScheduleCounts:
    """What the schedule did over one source: frames seen, detector calls, and why."""

    frames: int = 0
    detected_frames: int = 0  # detector calls
    scheduled_frames: int = 0  # due every k frames, the first frame, and the last one
    cut_frames: int = 0  # the frames either side of a shot cut
    backfilled_frames: int = 0  # frames of uncertain intervals, detected after all
    interpolated_frames: int = 0
    uncertain_intervals: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"frames": self.frames, "detected_frames": self.detected_frames,
                "scheduled_frames": self.scheduled_frames, "cut_frames": self.cut_frames,
                "backfilled_frames": self.backfilled_frames, "interpolated_frames": self.interpolated_frames,
                "uncertain_intervals": self.uncertain_intervals}


@dataclass
class _Detected:
    frame: Frame
    detections: list[Detection]
    signatures: list[np.ndarray] | None


def _lerp(a: float, b: float, w: float) -> float:
    return a + w * (b - a)


def interpolate_detection(start: Detection, end: Detection, w: float) -> Detection:
    """The detection a fraction ``w`` of the way from ``start`` to ``end`` (box, score, keypoints)."""
    box = tuple(_lerp(a, b, w) for a, b in zip(start.box, end.box))
    keypoints = None
    if start.keypoints is not None and end.keypoints is not None:
        keypoints = tuple((_lerp(p[0], q[0], w), _lerp(p[1], q[1], w)) for p, q in zip(start.keypoints, end.keypoints))
    return Detection(box, _lerp(start.score, end.score, w), keypoints)  # type: ignore[arg-type]


@dataclass
class DetectionSchedule:
    """Decides per frame whether the detector runs; see the module docstring."""

    config: DetectionScheduleConfig
    detect: DetectFn
    signatures: SignatureFn | None  # None: the face check is off
    max_face_distance: float
    counts: ScheduleCounts = field(default_factory=ScheduleCounts)
    _last: _Detected | None = None
    _pending: list[Frame] = field(default_factory=list)

    @property
    def every_k(self) -> int:
        return self.config.every_k if self.config.enabled else 1

    def push(self, frame: Frame, starts_shot: bool = False) -> list[PlannedFrame]:
        """The frames the tracker can take now, in order, after ``frame`` arrived.

        ``starts_shot``: ``frame`` is the first of a new shot (the caller ends its tracks before it)."""
        self.counts.frames += 1
        out: list[PlannedFrame] = []
        if starts_shot and self._pending:
            self.counts.cut_frames += 1
            out += self._close_interval()
        due = self._last is None or frame.index - self._last.frame.index >= self.every_k
        if not (due or starts_shot):
            self._pending.append(frame)
            return out
        if starts_shot:
            self.counts.cut_frames += 1
        else:
            self.counts.scheduled_frames += 1
        out += self._close_interval(self._run(frame))
        return out

    def finish(self) -> list[PlannedFrame]:
        """The frames still waiting at the end of the source (the last one is detected)."""
        if not self._pending:
            return []
        self.counts.scheduled_frames += 1
        return self._close_interval()

    def _run(self, frame: Frame) -> _Detected:
        detections = self.detect(frame)
        self.counts.detected_frames += 1
        sigs = self.signatures(frame, detections) if self.signatures is not None else None
        return _Detected(frame, detections, sigs)

    def _close_interval(self, end: _Detected | None = None) -> list[PlannedFrame]:
        """Resolve the waiting frames against the interval's far end: ``end``, else the last waiting
        frame, detected now. Returns the waiting frames and the end, in order."""
        if end is None:
            end = self._run(self._pending.pop())
        between, self._pending = self._pending, []
        out: list[PlannedFrame] = []
        pairs = self._pairs(self._last, end) if between else []
        if pairs is None:
            self.counts.uncertain_intervals += 1
            for frame in between:
                found = self._run(frame)
                self.counts.backfilled_frames += 1
                out.append(PlannedFrame(frame, found.detections, found.signatures))
        elif between:
            start = self._last
            span = end.frame.time_s - start.frame.time_s
            for frame in between:
                w = (frame.time_s - start.frame.time_s) / span if span > 0 else 0.5
                detections = [interpolate_detection(start.detections[a], end.detections[b], w) for a, b in pairs]
                self.counts.interpolated_frames += 1
                out.append(PlannedFrame(frame, detections, None, interpolated=True))
        out.append(PlannedFrame(end.frame, end.detections, end.signatures))
        self._last = end
        return out

    def _pairs(self, start: _Detected | None, end: _Detected) -> list[tuple[int, int]] | None:
        """(start index, end index) of each face seen at both ends, or None when the interval is
        uncertain: the faces differ in number, place, score or appearance."""
        if start is None or len(start.detections) != len(end.detections):
            return None
        cfg = self.config
        if any(d.score < cfg.min_score for d in (*start.detections, *end.detections)):
            return None
        candidates = sorted(((iou(a.box, b.box), i, j) for i, a in enumerate(start.detections)
                             for j, b in enumerate(end.detections)), key=lambda c: (-c[0], c[1], c[2]))
        pairs: dict[int, int] = {}
        used: set[int] = set()
        for overlap, i, j in candidates:
            if overlap < cfg.min_interval_iou:
                break
            if i in pairs or j in used:
                continue
            pairs[i] = j
            used.add(j)
        if len(pairs) != len(start.detections):
            return None
        if start.signatures is not None and end.signatures is not None:
            for i, j in pairs.items():
                if float(1.0 - np.dot(start.signatures[i], end.signatures[j])) > self.max_face_distance:
                    return None
        return sorted(pairs.items())
