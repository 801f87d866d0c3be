"""IoU tracking with time-based gap bridging, on synthetic detections."""

from __future__ import annotations

import random

import numpy as np
import pytest

from pipelines.faces.detectors import Detection
from pipelines.faces.tracking import IouTracker, Track, iou


def face(x: float, y: float = 80.0, size: float = 100.0, score: float = 0.9) -> Detection:
    return Detection((x, y, x + size, y + size), score)


def run_tracker(frames: list[list[Detection]], fps: float, max_gap_s: float = 1.0,
                iou_threshold: float = 0.3) -> list[Track]:
    """Feed one detection list per frame at ``fps``; return every track, in order of its first frame."""
    tracker = IouTracker(iou_threshold, max_gap_s)
    tracks: list[Track] = []
    for index, detections in enumerate(frames):
        ended, _ = tracker.step(index / fps, 1.0 / fps, index, detections)
        tracks.extend(ended)
    tracks.extend(tracker.finish())
    return sorted(tracks, key=lambda t: (t.observations[0].frame_index, t.track_id))


def present(n: int, start: int = 0, x0: float = 100.0) -> list[list[Detection]]:
    # A face drifting slowly to the right (0.5 px per frame).
    return [[face(x0 + 0.5 * (start + i))] for i in range(n)]


def with_gap(before: int, missing: int, after: int) -> list[list[Detection]]:
    return present(before) + [[] for _ in range(missing)] + present(after, start=before + missing)


def detected_frames(track: Track) -> list[int]:
    return [o.frame_index for o in track.observations if o.detection is not None]


def test_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)


def test_short_gap_is_bridged():
    tracks = run_tracker(with_gap(50, 10, 40), fps=25)  # 10 frames at 25 fps: 0.4 s without the face
    assert len(tracks) == 1
    track = tracks[0]
    assert track.bridged_frames == 10
    assert track.longest_gap_s == pytest.approx(0.4, abs=1e-6)
    assert len(track.observations) == 100
    assert detected_frames(track) == list(range(50)) + list(range(60, 100))
    # Boxes over the gap are interpolated in time between the last and the next detection.
    boxes = track.boxes()
    assert boxes.shape == (100, 4)
    assert not np.isnan(boxes).any()
    start, end = boxes[49, 0], boxes[60, 0]
    np.testing.assert_allclose(boxes[50:60, 0], start + (end - start) * np.arange(1, 11) / 11, atol=1e-9)


def test_long_gap_splits_into_two_tracks():
    tracks = run_tracker(with_gap(50, 50, 50), fps=25)  # 2 s without the face
    assert len(tracks) == 2
    first, second = tracks
    assert first.track_id != second.track_id
    # The first track ends at its last detection (the gap is not kept), the second starts on return.
    assert [o.frame_index for o in first.observations] == list(range(50))
    assert [o.frame_index for o in second.observations] == list(range(100, 150))
    assert first.bridged_frames == second.bridged_frames == 0
    assert first.longest_gap_s == 0.0


@pytest.mark.parametrize(
    ("fps", "missing", "expected_tracks"),
    [
        (25, 25, 1),  # 1.00 s: exactly max_gap_s, bridged
        (25, 26, 2),  # 1.04 s
        (25, 30, 2),  # 1.20 s
        (50, 30, 1),  # the same 30 frames are 0.60 s at 50 fps
        (50, 50, 1),  # 1.00 s
        (50, 51, 2),  # 1.02 s
        (10, 10, 1),  # 1.00 s
        (10, 11, 2),  # 1.10 s
    ],
)
def test_gap_limit_is_in_seconds_not_frames(fps, missing, expected_tracks):
    tracks = run_tracker(with_gap(20, missing, 20), fps=fps, max_gap_s=1.0)
    assert len(tracks) == expected_tracks
    if expected_tracks == 1:
        assert tracks[0].bridged_frames == missing
        assert tracks[0].longest_gap_s == pytest.approx(missing / fps, abs=1e-6)


def test_max_gap_zero_splits_on_any_missing_frame():
    assert len(run_tracker(with_gap(10, 1, 10), fps=25, max_gap_s=0.0)) == 2


def test_trailing_gap_is_trimmed_at_finish():
    tracks = run_tracker(present(30) + [[] for _ in range(10)], fps=25)
    assert len(tracks) == 1
    assert tracks[0].observations[-1].frame_index == 29
    assert tracks[0].observations[-1].detection is not None


def test_two_simultaneous_faces_give_two_tracks():
    frames = [[face(20.0 + 0.3 * i), face(400.0 - 0.3 * i)] for i in range(50)]
    tracks = run_tracker(frames, fps=25)
    assert len(tracks) == 2
    for track in tracks:
        assert len(track.observations) == 50
        assert track.bridged_frames == 0
    xs = sorted(t.observations[0].detection.box[0] for t in tracks)
    assert xs == [20.0, 400.0]
    # Each track follows one face: its boxes never jump to the other side.
    for track in tracks:
        centres = track.boxes()[:, 0]
        assert np.ptp(centres) < 20


def test_a_jump_beyond_iou_starts_a_new_track():
    frames = present(20) + [[face(500.0)] for _ in range(20)]
    tracks = run_tracker(frames, fps=25, max_gap_s=1.0)
    assert len(tracks) == 2
    assert detected_frames(tracks[0]) == list(range(20))
    assert detected_frames(tracks[1]) == list(range(20, 40))


def _ids_by_face(frames: list[list[Detection]]) -> dict[int, list[tuple[int, tuple]]]:
    tracks = run_tracker(frames, fps=25)
    return {t.track_id: [(o.frame_index, o.detection.box if o.detection else None) for o in t.observations]
            for t in tracks}


def test_detection_order_does_not_change_track_ids():
    rng = random.Random(1)
    frames = [[face(20.0 + i), face(250.0), face(480.0 - i, y=30.0)] for i in range(40)]
    # A fourth face appears half way.
    for i in range(20, 40):
        frames[i].append(face(250.0, y=300.0))
    reference = _ids_by_face(frames)
    assert len(reference) == 4
    for _ in range(3):
        shuffled = [rng.sample(dets, len(dets)) for dets in frames]
        assert _ids_by_face(shuffled) == reference
    reversed_frames = [list(reversed(dets)) for dets in frames]
    assert _ids_by_face(reversed_frames) == reference
