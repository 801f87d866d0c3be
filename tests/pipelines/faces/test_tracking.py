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


# --- face-change check and shot cuts (issue 14) ---

def unit(seed: int, dim: int = 64) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim)
    return v / np.linalg.norm(v)


def test_face_change_refuses_the_iou_match_and_starts_a_new_track():
    a, b = unit(1), unit(2)  # unrelated faces: distance about 1
    tracker = IouTracker(0.3, 1.0, max_face_distance=0.2)
    ended_all = []
    for index in range(20):
        sig = a if index < 10 else b
        ended, started = tracker.step(index / 25, 1 / 25, index, [face(100.0)], [sig])
        ended_all += ended
        if index == 10:
            assert [t.ended_by for t in ended] == ["face_change"] and len(started) == 1
    (old,) = ended_all
    assert detected_frames(old) == list(range(10)) and len(old.observations) == 10  # no bridge into the new face
    (new,) = tracker.finish()
    assert detected_frames(new) == list(range(10, 20)) and new.ended_by == "end"


def test_same_face_with_noise_stays_one_track():
    a = unit(1)
    rng = np.random.default_rng(3)
    tracker = IouTracker(0.3, 1.0, max_face_distance=0.2)
    for index in range(50):
        noisy = a + 0.05 * rng.standard_normal(a.size) / np.sqrt(a.size)
        ended, _ = tracker.step(index / 25, 1 / 25, index, [face(100.0 + index)], [noisy / np.linalg.norm(noisy)])
        assert ended == []
    (track,) = tracker.finish()
    assert len(track.observations) == 50


def test_signatures_follow_the_detections_order():
    """Detections are sorted by position inside step; each keeps its own signature."""
    a, b = unit(1), unit(2)
    tracker = IouTracker(0.3, 1.0, max_face_distance=0.2)
    tracker.step(0.0, 0.04, 0, [face(100.0), face(400.0)], [a, b])
    ended, _ = tracker.step(0.04, 0.04, 1, [face(400.0), face(100.0)], [b, a])  # reversed order
    assert ended == []
    ended, _ = tracker.step(0.08, 0.04, 2, [face(400.0), face(100.0)], [a, b])  # swapped faces
    assert sorted(t.ended_by for t in ended) == ["face_change", "face_change"]


def test_no_signatures_or_no_threshold_means_no_check():
    a, b = unit(1), unit(2)
    for tracker, sigs in ((IouTracker(0.3, 1.0, max_face_distance=0.2), [None, None]),
                          (IouTracker(0.3, 1.0), [[a], [b]])):
        for index, sig in enumerate(sigs):
            ended, _ = tracker.step(index / 25, 1 / 25, index, [face(100.0)], sig)
            assert ended == []
        assert len(tracker.finish()) == 1


def test_signature_count_must_match():
    with pytest.raises(ValueError):
        IouTracker(0.3, 1.0, 0.2).step(0.0, 0.04, 0, [face(100.0)], [])


def test_cut_ends_every_track_at_its_last_detection():
    tracker = IouTracker(0.3, 1.0)
    for index in range(10):
        tracker.step(index / 25, 1 / 25, index, [face(100.0)] + ([face(400.0)] if index < 7 else []))
    ended = tracker.cut()
    assert tracker.active == []
    assert sorted(len(t.observations) for t in ended) == [7, 10]  # the 3-frame gap is trimmed
    assert all(t.ended_by == "cut" for t in ended)
    # The same face after the cut is a new track.
    _, started = tracker.step(10 / 25, 1 / 25, 10, [face(100.0)])
    assert len(started) == 1 and started[0].track_id not in {t.track_id for t in ended}
    assert tracker.cut()[0].ended_by == "cut" and tracker.cut() == []


def test_ended_by_gap():
    tracks = run_tracker(with_gap(10, 40, 10), fps=25)
    assert [t.ended_by for t in tracks] == ["gap", "end"]
