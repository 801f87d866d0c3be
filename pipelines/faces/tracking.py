"""IoU tracking of face detections into tracks, with time-based gap bridging.

A track continues while a detection overlaps its last box by at least the IoU
threshold. Frames where its face is missing are kept as gaps; when the face returns
within ``max_gap_s`` the gap is bridged (boxes interpolated), otherwise the track ends at
its last detection. Detections interpolated by the detection schedule
(pipelines/faces/schedule.py) continue a track like detected ones: a frame the detector
skipped is not a gap.

With face signatures (pipelines/faces/shots.py) the tracker also refuses an IoU match whose
face differs from the track's recent faces by more than ``max_face_distance``: after a cut
between two people framed alike the boxes overlap, the faces do not. The old track then ends
at its last detection (it is not bridged into the new face) and the detection starts a new
track. The reference is the mean of the track's last ``REFERENCE_FRAMES`` signatures: one
frame's mouth opening or blink moves it little, while a slow turn of the head still updates it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from pipelines.faces.detectors import Detection


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Observation:
    frame_index: int
    time_s: float
    duration_s: float
    detection: Detection | None  # None: face missing in this frame (a gap)
    # The detection was interpolated between two detected frames by the detection schedule
    # (pipelines/faces/schedule.py): the face is there, the detector did not run on this frame.
    interpolated: bool = False

    @property
    def end_s(self) -> float:
        return self.time_s + self.duration_s


REFERENCE_FRAMES = 8  # 0.32 s at 25 fps


@dataclass
class Track:
    track_id: int
    observations: list[Observation] = field(default_factory=list)
    last_detected: int = -1  # position in observations of the latest detection
    longest_gap_s: float = 0.0
    bridged_frames: int = 0
    # Why the track ended: "gap" (face gone too long), "cut" (shot cut), "face_change" (another
    # face took its place), "end" (source finished); "" while active.
    ended_by: str = ""
    recent_signatures: deque = field(default_factory=lambda: deque(maxlen=REFERENCE_FRAMES), repr=False)

    def reference_signature(self) -> np.ndarray | None:
        """Mean of the recent signatures, renormalised; None before the first one."""
        if not self.recent_signatures:
            return None
        mean = np.mean(np.stack(self.recent_signatures), axis=0)
        norm = float(np.linalg.norm(mean))
        return mean / norm if norm > 1e-9 else mean

    @property
    def last_box(self) -> tuple[float, float, float, float]:
        return self.observations[self.last_detected].detection.box  # type: ignore[union-attr]

    def missing_s(self, now: Observation) -> float:
        """Time during which the face has not been shown, up to the end of ``now``."""
        return now.end_s - self.observations[self.last_detected].end_s

    def trim_to_last_detection(self) -> None:
        del self.observations[self.last_detected + 1:]

    def boxes(self) -> np.ndarray:
        """(N, 4) boxes for observations up to the last detection; gaps linearly interpolated in time."""
        obs = self.observations[: self.last_detected + 1]
        times = np.array([o.time_s for o in obs])
        known = np.array([o.detection is not None for o in obs])
        raw = np.array([o.detection.box if o.detection else (np.nan,) * 4 for o in obs], dtype=np.float64)
        if not known.all():
            for c in range(4):
                raw[~known, c] = np.interp(times[~known], times[known], raw[known, c])
        return raw


class IouTracker:
    """Online greedy IoU tracker; :meth:`step` returns tracks that ended at this frame."""

    def __init__(self, iou_threshold: float, max_gap_s: float, max_face_distance: float | None = None):
        self.iou_threshold = iou_threshold
        self.max_gap_s = max_gap_s
        self.max_face_distance = max_face_distance  # None: no appearance check
        self.active: list[Track] = []
        self._next_id = 0

    def step(self, obs_time: float, obs_duration: float, frame_index: int,
             detections: list[Detection],
             signatures: list[np.ndarray] | None = None,
             interpolated: bool = False) -> tuple[list[Track], list[Track]]:
        """Assign detections; return (tracks ended here, tracks started here).

        ``signatures`` (one per detection, same order) enable the face-change check.
        ``interpolated``: the detections were interpolated by the detection schedule, not detected;
        they continue tracks like detections (a skipped frame is not a gap) and carry no signatures."""
        if signatures is not None and len(signatures) != len(detections):
            raise ValueError(f"{len(signatures)} signatures for {len(detections)} detections")
        # Sorting makes ids independent of the detector's output order.
        order = sorted(range(len(detections)), key=lambda i: (detections[i].box[0], detections[i].box[1]))
        detections = [detections[i] for i in order]
        sigs = [signatures[i] for i in order] if signatures is not None else None
        pairs = sorted(
            ((iou(t.last_box, d.box), ti, di) for ti, t in enumerate(self.active) for di, d in enumerate(detections)),
            key=lambda p: (-p[0], p[1], p[2]),
        )
        matched_tracks: dict[int, int] = {}
        used: set[int] = set()
        changed: set[int] = set()  # tracks whose place another face took
        for overlap, ti, di in pairs:
            if overlap < self.iou_threshold:
                break
            if ti in matched_tracks or ti in changed or di in used:
                continue
            if self._face_changed(self.active[ti], sigs, di):
                changed.add(ti)
                continue
            matched_tracks[ti] = di
            used.add(di)
        ended, still_active = [], []
        for ti, track in enumerate(self.active):
            if ti in changed:
                track.trim_to_last_detection()
                track.ended_by = "face_change"
                ended.append(track)
                continue
            det = detections[matched_tracks[ti]] if ti in matched_tracks else None
            obs = Observation(frame_index, obs_time, obs_duration, det, interpolated and det is not None)
            if det is not None:
                gap = obs.time_s - track.observations[track.last_detected].end_s
                if gap > 1e-9:
                    track.longest_gap_s = max(track.longest_gap_s, gap)
                    track.bridged_frames += len(track.observations) - 1 - track.last_detected
                track.observations.append(obs)
                track.last_detected = len(track.observations) - 1
                if sigs is not None:
                    track.recent_signatures.append(sigs[matched_tracks[ti]])
                still_active.append(track)
            else:
                track.observations.append(obs)
                if track.missing_s(obs) > self.max_gap_s + 1e-9:
                    track.trim_to_last_detection()
                    track.ended_by = "gap"
                    ended.append(track)
                else:
                    still_active.append(track)
        started = []
        for di, det in enumerate(detections):
            if di in used:
                continue
            track = Track(self._next_id, [Observation(frame_index, obs_time, obs_duration, det, interpolated)], 0)
            if sigs is not None:
                track.recent_signatures.append(sigs[di])
            self._next_id += 1
            started.append(track)
        self.active = still_active + started
        return ended, started

    def _face_changed(self, track: Track, sigs: list[np.ndarray] | None, di: int) -> bool:
        if self.max_face_distance is None or sigs is None:
            return False
        reference = track.reference_signature()
        if reference is None:
            return False  # a track started without signatures has nothing to compare with
        return float(1.0 - np.dot(reference, sigs[di])) > self.max_face_distance

    def _end_all(self, reason: str) -> list[Track]:
        ended = self.active
        for track in ended:
            track.trim_to_last_detection()
            track.ended_by = reason
        self.active = []
        return ended

    def cut(self) -> list[Track]:
        """End every active track now, at its last detection: a shot cut lies before the next frame."""
        return self._end_all("cut")

    def finish(self) -> list[Track]:
        """End every active track: the source is finished."""
        return self._end_all("end")
