"""Held-out metrics: dynamic deviation by hand, vertex errors on a synthetic blendshape model, the split by
role and the expressive subset on hand-made examples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.schema.conversation import Role
from training.data import group_slices
from training.metrics import (
    MIN_VELOCITIES,
    BlendshapeFace,
    dynamic_deviation,
    evaluation_metrics,
    expressive_windows,
    motion_metrics,
    role_metrics,
)

DIMS = {"expression": 2, "jaw": 3, "global_rotation": 3}
SLICES = group_slices(tuple(DIMS), DIMS)
SLICES_2 = {"expression": slice(0, 1), "global_rotation": slice(1, 2)}


def test_dynamic_deviation_is_the_gap_between_velocity_stds():
    # pred: 0,1,0,1,0 -> velocities +1,-1,+1,-1 (std 1); truth: 0,1,2,3,4 -> velocities all 1 (std 0)
    pred = torch.tensor([0., 1., 0., 1., 0.])[None, :, None]
    true = torch.arange(5.0)[None, :, None]
    torch.testing.assert_close(dynamic_deviation(pred, true), torch.tensor([1.0]))
    torch.testing.assert_close(dynamic_deviation(true + 5.0, true), torch.tensor([0.0]))  # offsets do not count


def test_region_metrics_and_the_recorded_reason_without_a_face_model():
    true = torch.zeros(2, 7, 8)
    pred = true.clone()
    pred[:, ::2, 5] = 2.0  # first head-pose column 2,0,2,0,2,0,2: velocities -2,+2 three times each: std 2
    out = motion_metrics(pred, true, SLICES, None)
    assert out["dd_upper_face"] == 0.0 and out["dd_jaw"] == 0.0
    assert abs(out["dd_head_pose"] - 2.0 / 3) < 1e-6  # mean over the 3 head-pose columns
    assert out["vertex_metrics"].startswith("skipped")


def test_lve_and_mhd_on_a_synthetic_blendshape_model(tmp_path):
    # 3 vertices: v0 and v1 are lips, v2 is upper face. expr_dirs: coefficient 0 moves v0 by +x,
    # coefficient 1 moves v2 by +y; jaw axis-angle component 0 moves v1 by -z.
    template = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=np.float32)
    expr_dirs = np.zeros((3, 3, 2), np.float32)
    expr_dirs[0, 0, 0] = 1.0
    expr_dirs[2, 1, 1] = 1.0
    jaw_dirs = np.zeros((3, 3, 3), np.float32)
    jaw_dirs[1, 2, 0] = -1.0
    path = tmp_path / "face.npz"
    np.savez(path, v_template=template, expr_dirs=expr_dirs, jaw_dirs=jaw_dirs,
             lip_vertices=np.array([0, 1]), upper_face_vertices=np.array([2]))
    true = torch.zeros(1, 2, 8)
    pred = torch.zeros(1, 2, 8)
    pred[0, 0, 0] = 3.0  # frame 0: v0 off by 3 (lip error 3), upper face exact
    pred[0, 1, 2] = 4.0  # frame 1: jaw moves v1 by 4 (lip error 4)
    pred[0, 1, 1] = 0.5  # frame 1: v2 off by 0.5 (upper-face deviation 0.5)
    out = motion_metrics(pred, true, SLICES, str(path))
    assert abs(out["lve"] - (3 + 4) / 2) < 1e-6  # max over lips per frame, mean over frames
    assert abs(out["mhd"] - (0 + 0.5) / 2) < 1e-6


def _face_file(tmp_path) -> str:
    """The synthetic model above: expression 0 moves lip v0 by +x, jaw 0 moves lip v1 by -z,
    expression 1 moves upper-face v2 by +y."""
    template = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=np.float32)
    expr_dirs = np.zeros((3, 3, 2), np.float32)
    expr_dirs[0, 0, 0] = 1.0
    expr_dirs[2, 1, 1] = 1.0
    jaw_dirs = np.zeros((3, 3, 3), np.float32)
    jaw_dirs[1, 2, 0] = -1.0
    path = tmp_path / "face.npz"
    np.savez(path, v_template=template, expr_dirs=expr_dirs, jaw_dirs=jaw_dirs,
             lip_vertices=np.array([0, 1]), upper_face_vertices=np.array([2]))
    return str(path)


def test_metrics_split_by_role_on_a_hand_made_example(tmp_path):
    S, L, Q = int(Role.SPEAKING), int(Role.LISTENING), int(Role.SILENT)
    roles = torch.tensor([[S, S, S, L, L, L, Q], [S, S, L, L, L, L, L]], dtype=torch.int8)
    true = torch.zeros(2, 7, 8)  # still truth: every true velocity std is 0
    pred = torch.zeros(2, 7, 8)
    pred[0, :, 5] = torch.tensor([0., 2., 0., 5., 5., 8., 40.])  # first head-pose column
    pred[1, :, 5] = torch.tensor([0., 9., 3., 4., 3., 4., 3.])
    pred[0, 0, 0] = 3.0  # window 0, speaking frame 0: lip v0 off by 3
    pred[0, 4, 0] = 100.0  # window 0, listening frame 4
    pred[1, 1, 2] = 4.0  # window 1, speaking frame 1: jaw moves lip v1 by 4 ...
    pred[1, 1, 1] = 0.5  # ... and upper-face v2 by 0.5
    out = role_metrics(pred, true, roles, SLICES, BlendshapeFace(_face_file(tmp_path)))
    speaking, listening = out["speaking"], out["listening"]
    assert (speaking["frames"], listening["frames"]) == (5, 8)  # the silent frame is in neither
    # Head pose, speaking: window 0 velocities between speaking frames +2, -2 (std 2): 2 / 3 head columns;
    # window 1 has one such velocity (9): fewer than MIN_VELOCITIES, left out. The 0->5 and 8->40 jumps
    # cross roles and do not count.
    assert speaking["dd_head_pose"] == pytest.approx(2 / 3)
    # Listening: window 0 velocities 0, 3 (std 1.5 -> 0.5 over 3 columns, 2 velocities); window 1
    # +1, -1, +1, -1 (std 1 -> 1/3, 4 velocities): weighted (2 * 0.5 + 4 / 3) / 6.
    assert listening["dd_head_pose"] == pytest.approx((2 * 0.5 + 4 / 3) / 6)
    # Upper face, speaking: window 0 expression 0 = 3, 0, 0 (velocities -3, 0: std 1.5) over 2 columns.
    assert speaking["dd_upper_face"] == pytest.approx(0.75)
    # Listening: window 0 expression 0 = 0, 100, 0 on frames 3-5 (velocities +-100: std 100, / 2 columns = 50,
    # 2 velocities); window 1: still (0, 4 velocities): (2 * 50 + 0) / 6.
    assert listening["dd_upper_face"] == pytest.approx(100 / 6)
    assert speaking["dd_jaw"] == 0.0 and listening["dd_jaw"] == 0.0  # window 1's jaw moves on a lone velocity
    # LVE over the 5 speaking frames: lip errors 3 (w0 f0), 0, 0, 0 (w1 f0), 4 (w1 f1); the listening
    # frame's 100 does not count. MHD: upper-face deviation 0.5 on w1 f1 only.
    assert speaking["lve"] == pytest.approx(7 / 5) and speaking["mhd"] == pytest.approx(0.5 / 5)
    assert "lve" not in listening and "mhd" not in listening


def test_a_role_without_frames_or_velocities_is_skipped_with_the_reason():
    roles = torch.tensor([[int(Role.SPEAKING)] * 3 + [int(Role.LISTENING)] + [int(Role.SPEAKING)] * 3])
    out = role_metrics(torch.zeros(1, 7, 8), torch.zeros(1, 7, 8), roles, SLICES, None)
    assert out["listening"]["frames"] == 1
    assert out["listening"]["dd_jaw"] == f"skipped: no window with {MIN_VELOCITIES} velocities between listening frames"
    speaking_only = role_metrics(torch.zeros(1, 7, 8), torch.zeros(1, 7, 8), torch.ones(1, 7, dtype=torch.int8),
                                 SLICES, None)
    assert speaking_only["listening"] == {"frames": 0, "skipped": "no listening frame"}


def test_the_expressive_subset_is_the_top_share_by_normalised_ground_truth_variance():
    # 2 frames x 2 channels, channel std (10, 1). Scores = mean over channels of var_t(true / std):
    # w0: channel 0 goes 0 -> 20 (normalised 0 -> 2: var 1) -> 0.5, though its raw variance (100) is the largest;
    # w1: channel 1 0 -> 4 (var 4) -> 2;  w2: channel 1 0 -> 2 (var 1) -> 0.5 (ties w0: window order);  w3: still -> 0.
    true = torch.zeros(4, 2, 2)
    true[0, 1, 0], true[1, 1, 1], true[2, 1, 1] = 20.0, 4.0, 2.0
    std = torch.tensor([10.0, 1.0])
    assert expressive_windows(true, std, 0.5).tolist() == [1, 0]  # ceil(0.5 * 4) = 2
    assert expressive_windows(true, std, 0.75).tolist() == [1, 0, 2]
    assert expressive_windows(true, std, 0.1).tolist() == [1]  # at least one
    report = evaluation_metrics(true + 1.0, true, torch.ones(4, 2, dtype=torch.int8), SLICES_2, None, std, 0.5)
    assert report["expressive"]["windows"] == 2 and report["expressive"]["share"] == 0.5
    assert report["expressive"]["speaking"]["frames"] == 4  # 2 windows x 2 frames
