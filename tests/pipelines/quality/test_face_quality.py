"""Face measures (pipelines/faces/quality.py), direction sidecars and the per-frame gate helpers."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from pipelines.config import QualityConfig
from pipelines.faces.detectors import Detection
from pipelines.faces.quality import (MODEL_POINTS, SHARPNESS_MAX_SIDE_PX, face_sharpness, head_pose, measure_face,
                                     orientation_label, rotation_matrix)
from pipelines.quality.directions import DirectionsError, load_directions, sidecar_path
from pipelines.quality.stage import gate_failures, majority


def project(yaw: float, pitch: float, roll: float, *, focal: float = 1400.0, distance: float = 2600.0,
            centre=(640.0, 360.0), offset=(0.0, 0.0)) -> list[tuple[float, float]]:
    """The five model points rotated and seen by a pinhole camera unlike the one head_pose assumes
    (its own focal length, distance and a face off the optical axis)."""
    points = (rotation_matrix(yaw, pitch, roll) @ MODEL_POINTS.T).T + np.array([offset[0], offset[1], distance])
    return [(focal * x / z + centre[0], focal * y / z + centre[1]) for x, y, z in points]


@pytest.mark.parametrize("yaw", [-60, -40, -20, 0, 15, 35, 55])
@pytest.mark.parametrize("pitch", [-25, 0, 20])
@pytest.mark.parametrize("roll", [-20, 0, 10])
def test_head_pose_recovers_projected_rotations(yaw, pitch, roll):
    # A camera unlike the assumed one (head_pose assumes 12 eye-mouth distances away).
    got = head_pose(project(yaw, pitch, roll))
    assert np.allclose(got, (yaw, pitch, roll), atol=3.0), got


def test_head_pose_is_relative_to_the_line_of_sight():
    # A face right of the optical axis that turns to look at the camera shows a frontal face.
    turned = -math.degrees(math.atan2(400.0, 2600.0))
    got = head_pose(project(turned, 0, 0, offset=(400.0, 0.0)))
    assert abs(got[0]) < 2.0 and abs(turned) > 8.0, got


def test_head_pose_signs_follow_the_image():
    def nose_minus_eyes(kp):
        return np.array(kp[2]) - (np.array(kp[0]) + np.array(kp[1])) / 2

    frontal = nose_minus_eyes(project(0, 0, 0))
    assert nose_minus_eyes(project(25, 0, 0))[0] > frontal[0] + 5  # yaw > 0: nose toward image right
    assert nose_minus_eyes(project(0, 20, 0))[1] < frontal[1] - 5  # pitch > 0: nose up in the image
    left_eye, right_eye = project(0, 0, 15)[:2]
    assert right_eye[1] > left_eye[1] + 5  # roll > 0: clockwise, the image-right eye lower


def test_head_pose_with_one_mouth_point_as_mediapipe_gives():
    kp = project(30, 10, -5)
    mouth = tuple(np.mean([kp[3], kp[4]], axis=0))
    assert np.allclose(head_pose([*kp[:3], mouth, mouth]), (30, 10, -5), atol=6.0)


def test_orientation_labels_follow_the_config():
    q = QualityConfig()
    assert orientation_label(10, 5, q) == "frontal"
    assert orientation_label(-29, 0, q) == "frontal"
    assert orientation_label(45, 0, q) == "side"
    assert orientation_label(0, 55, q) == "side"  # tipped far up: side at best
    assert orientation_label(-70, 0, q) == "profile"
    assert orientation_label(70, 0, q.model_copy(update={"side_max_yaw_deg": 80})) == "side"
    with pytest.raises(ValueError):
        orientation_label(math.nan, 0, q)


@pytest.fixture(scope="module")
def grid_face(grid_clip, scrfd_detector):
    """One GRID frame (RGB) and its SCRFD detection."""
    capture = cv2.VideoCapture(str(grid_clip))
    capture.set(cv2.CAP_PROP_POS_FRAMES, 30)
    ok, bgr = capture.read()
    capture.release()
    assert ok
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    (det,) = scrfd_detector.detect(rgb)
    return rgb, det


def test_measure_face_on_a_grid_frame(grid_face):
    rgb, det = grid_face
    m = measure_face(rgb, det)
    assert m.face_px == pytest.approx(det.longer_side)
    assert 60 < m.face_px < SHARPNESS_MAX_SIDE_PX  # GRID faces are small: measured at native size
    assert abs(m.yaw_deg) < 30 and abs(m.roll_deg) < 20  # a still, frontal speaker
    assert orientation_label(m.yaw_deg, m.pitch_deg, QualityConfig()) == "frontal"
    no_points = measure_face(rgb, Detection(det.box, det.score, None))
    assert math.isnan(no_points.yaw_deg) and no_points.sharpness == m.sharpness


def test_sharpness_falls_with_blur(grid_face):
    rgb, det = grid_face
    values = [face_sharpness(cv2.GaussianBlur(rgb, (0, 0), s) if s else rgb, det.box) for s in (0, 1, 2, 4)]
    assert values == sorted(values, reverse=True) and values[3] < values[0] / 10


def test_sharpness_never_upscales_and_downscales_large_faces(grid_face):
    rgb, det = grid_face
    native = face_sharpness(rgb, det.box)
    # The same face in a frame 4x as large: its Laplacian variance at native size would be tiny
    # (interpolated pixels); downscaled to 160 px it is measured about as sharp as the GRID face.
    big = cv2.resize(rgb, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
    big_box = tuple(v * 4 for v in det.box)
    x1, y1, x2, y2 = (int(round(v)) for v in big_box)
    at_native = cv2.Laplacian(cv2.cvtColor(big[y1:y2, x1:x2], cv2.COLOR_RGB2GRAY), cv2.CV_64F, ksize=1).var()
    measured = face_sharpness(big, big_box)
    assert measured > 3 * at_native
    assert native / 3 < measured < native * 3


def test_gates_and_majority():
    q = QualityConfig(min_sharpness=50.0)
    cols = {"upscale": np.array([2.0, 5.0, np.nan]), "sharpness": np.array([10.0, 80.0, np.nan])}
    failed = gate_failures(cols, ["frontal", "profile", None], q)
    assert failed["size"].tolist() == [False, True, False]
    assert failed["sharpness"].tolist() == [True, False, False]
    assert failed["orientation"].tolist() == [False, True, False]
    flagged = gate_failures(cols, [None] * 3, q.model_copy(update={"size_policy": "flag"}))
    assert not flagged["size"].any()
    passing = np.array([1, 1, 0, 1, 1, 0, 0, 0, 0, 1], bool)
    assert majority(passing, 3).tolist() == [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]


def _write(tmp_path, content) -> object:
    path = sidecar_path(tmp_path / "talk.mp4")
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_direction_sidecar_labels(tmp_path):
    path = _write(tmp_path, {"format": "talkinghead.face_directions/1",
                             "ranges": [{"start_s": 1.0, "end_s": 2.0, "label": "profile"},
                                        {"start_s": 2.0, "end_s": 3.0, "label": "side"}]})
    assert path.name == "talk.directions.json"
    assert load_directions(path).labels_at([0.5, 1.0, 1.99, 2.0, 3.0]) == [None, "profile", "profile", "side", None]


@pytest.mark.parametrize("content, message", [
    ("{not json", "not readable JSON"),
    ({"format": "other/2", "ranges": []}, "format 'other/2'"),
    ({"format": "talkinghead.face_directions/1", "ranges": [{"start_s": 2, "end_s": 1, "label": "side"}]},
     "must be after"),
    ({"format": "talkinghead.face_directions/1", "ranges": [{"start_s": 0, "end_s": 1, "label": "upside"}]},
     "ranges.0.label"),
    ({"format": "talkinghead.face_directions/1", "ranges": [{"start_s": 0, "end_s": 2, "label": "side"},
                                                            {"start_s": 1, "end_s": 3, "label": "frontal"}]},
     "overlap"),
    ({"format": "talkinghead.face_directions/1", "ranges": [], "extra": 1}, "extra"),
])
def test_bad_direction_sidecars_name_the_file(tmp_path, content, message):
    with pytest.raises(DirectionsError, match=message) as error:
        load_directions(_write(tmp_path, content))
    assert str(error.value).startswith("talk.directions.json: ")
