"""Held-out metrics: dynamic deviation by hand, vertex errors on a synthetic blendshape model."""

from __future__ import annotations

import numpy as np
import torch

from training.data import group_slices
from training.metrics import dynamic_deviation, motion_metrics

DIMS = {"expression": 2, "jaw": 3, "global_rotation": 3}
SLICES = group_slices(tuple(DIMS), DIMS)


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
