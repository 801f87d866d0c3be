"""Shot cuts and the face-change check on real GRID media composed with ffmpeg (issue 14)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.fixtures.footage import CUT_FRAME, hard_cut, scene_cut, zoom_cut
from pipelines.config import ShotConfig
from pipelines.faces.shots import CALIBRATED_MAX_FACE_DISTANCE, ShotCutDetector, face_signature, signature_distance
from pipelines.faces.tracking import IouTracker, Track
from pipelines.media.decode import read_video_frames

FPS = 25.0
MARGIN = 1.5  # same-person distances must stay this many times under the threshold


def _faces(detector, path: Path) -> list[tuple[np.ndarray, object]]:
    """(frame, its highest-scoring SCRFD detection) for every frame; each GRID frame shows one face."""
    out = []
    for rgb in read_video_frames(path):
        found = detector.detect(rgb)
        assert found, "GRID frames all show a face"
        out.append((rgb, max(found, key=lambda d: d.score)))
    return out


def _signatures(faces) -> list[np.ndarray]:
    return [face_signature(rgb, det) for rgb, det in faces]


def _track(faces, max_face_distance: float | None) -> list[Track]:
    tracker = IouTracker(0.3, 1.0, max_face_distance=max_face_distance)
    tracks: list[Track] = []
    for index, (rgb, det) in enumerate(faces):
        ended, _ = tracker.step(index / FPS, 1 / FPS, index, [det], [face_signature(rgb, det)])
        tracks.extend(ended)
    return sorted(tracks + tracker.finish(), key=lambda t: t.observations[0].frame_index)


@pytest.fixture(scope="module")
def cut_faces(composed, grid_clips, scrfd_detector):
    return _faces(scrfd_detector, composed.get("cut-01.mp4", hard_cut, grid_clips[0], grid_clips[1]))


@pytest.fixture(scope="module")
def zoom_faces(composed, grid_clips, scrfd_detector):
    return _faces(scrfd_detector, composed.get("zoom-cut-0.mp4", zoom_cut, grid_clips[0]))


def test_different_speakers_across_a_same_backdrop_cut_are_far_apart(cut_faces):
    sigs = _signatures(cut_faces)
    across = signature_distance(sigs[CUT_FRAME - 1], sigs[CUT_FRAME])
    assert across > CALIBRATED_MAX_FACE_DISTANCE * MARGIN
    within = [signature_distance(a, b) for i, (a, b) in enumerate(zip(sigs, sigs[1:])) if i + 1 != CUT_FRAME]
    assert len(within) == len(sigs) - 2
    assert max(within) < CALIBRATED_MAX_FACE_DISTANCE / MARGIN


def test_zoom_cut_keeps_one_face(zoom_faces):
    sigs = _signatures(zoom_faces)
    boxes = [det.box for _, det in zoom_faces]
    # The composition really reframes: the face is about 1.5x larger after the cut.
    widths = [b[2] - b[0] for b in boxes]
    assert np.median(widths[CUT_FRAME:]) / np.median(widths[:CUT_FRAME]) == pytest.approx(1.5, rel=0.15)
    steps = [signature_distance(a, b) for a, b in zip(sigs, sigs[1:])]
    assert max(steps) < CALIBRATED_MAX_FACE_DISTANCE / MARGIN


def test_tracker_ends_the_track_at_the_cut_on_face_change(cut_faces):
    tracks = _track(cut_faces, CALIBRATED_MAX_FACE_DISTANCE)
    assert len(tracks) == 2
    first, second = tracks
    assert first.ended_by == "face_change"
    assert abs(first.observations[-1].frame_index - (CUT_FRAME - 1)) <= 1
    assert second.observations[0].frame_index == first.observations[-1].frame_index + 1
    assert second.ended_by == "end"
    # Without the check the IoU tracker follows the box straight across the cut (the defect).
    (merged,) = _track(cut_faces, None)
    assert len(merged.observations) == len(cut_faces)


def test_tracker_keeps_one_track_across_a_zoom_cut(zoom_faces):
    (track,) = _track(zoom_faces, CALIBRATED_MAX_FACE_DISTANCE)
    assert len(track.observations) == len(zoom_faces)
    assert track.ended_by == "end"


def _cuts(path: Path, config: ShotConfig) -> tuple[list[int], list[int]]:
    """(cut frames, the frame index at which each was reported)."""
    shots = ShotCutDetector(config, FPS)
    cuts, reported_at = [], []
    for index, rgb in enumerate(read_video_frames(path)):
        found = shots.step(index, rgb)
        cuts += found
        reported_at += [index] * len(found)
    return cuts, reported_at


@pytest.mark.parametrize("kind", ["content", "adaptive", "hash", "histogram"])
def test_shot_detector_finds_a_cut_to_a_different_picture(composed, grid_clips, kind):
    path = composed.get("scene-cut-01.mp4", scene_cut, grid_clips[0], grid_clips[1])
    config = ShotConfig(detector=kind)
    cuts, reported_at = _cuts(path, config)
    assert cuts == [CUT_FRAME]
    shots = ShotCutDetector(config, FPS)
    assert reported_at[0] - cuts[0] == shots.delay_frames
    assert shots.delay_frames == (2 if kind == "adaptive" else 0)
    assert shots.name.startswith(f"pyscenedetect-{kind}:")


@pytest.mark.parametrize("kind", ["content", "adaptive", "hash", "histogram"])
def test_shot_detector_finds_nothing_in_an_uncut_clip(grid_clips, kind):
    for clip in grid_clips[:2]:
        assert _cuts(clip, ShotConfig(detector=kind))[0] == []


def test_detector_none_never_reports(composed, grid_clips):
    path = composed.get("scene-cut-01.mp4", scene_cut, grid_clips[0], grid_clips[1])
    shots = ShotCutDetector(ShotConfig(detector="none"), FPS)
    assert shots.name == "none" and shots.delay_frames == 0
    assert _cuts(path, ShotConfig(detector="none"))[0] == []


def test_min_shot_s_drops_a_second_cut_too_soon(grid_clips):
    """Two cuts 0.4 s apart (a real frame sequence: clip, hue-rotated clip, clip): with
    min_shot_s 0.5 only the first is kept; with 0.3 both are."""
    frames = read_video_frames(grid_clips[0])
    shifted = [np.ascontiguousarray(f[:, ::-1, ::-1]) for f in frames]  # mirrored, R and B swapped
    sequence = frames[:30] + shifted[30:40] + frames[40:]
    for min_shot_s, expected in ((0.5, [30]), (0.3, [30, 40])):
        shots = ShotCutDetector(ShotConfig(detector="content", min_shot_s=min_shot_s), FPS)
        assert [c for i, rgb in enumerate(sequence) for c in shots.step(i, rgb)] == expected


def test_signature_without_keypoints_uses_the_box(cut_faces):
    from dataclasses import replace

    rgb, det = cut_faces[5]
    later_rgb, later_det = cut_faces[6]
    other_rgb, other_det = cut_faces[CUT_FRAME + 5]
    plain = [face_signature(r, replace(d, keypoints=None)) for r, d in
             ((rgb, det), (later_rgb, later_det), (other_rgb, other_det))]
    assert all(s.shape == plain[0].shape for s in plain)
    assert signature_distance(plain[0], plain[1]) < signature_distance(plain[0], plain[2])
