"""Held-out metrics: dynamic deviation by hand, vertex metrics (LVE, MHD, vertex-space FDD/JDD/PDD) on a
synthetic FLAME model, the converter from FLAME's pickle layout, the split by role and the expressive subset
on hand-made examples."""

from __future__ import annotations

import math
import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse
import torch

from pipelines.schema.conversation import Role
from training.data import group_slices
from training.flame_model import FlameModel, convert_flame_pickle, read_flame_pickle
from training.metrics import (
    MIN_FRAMES,
    MIN_VELOCITIES,
    dynamic_deviation,
    evaluation_metrics,
    expressive_windows,
    role_metrics,
    vertex_figures,
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
    out = evaluation_metrics(pred, true, torch.ones(2, 7, dtype=torch.int8), SLICES, None, torch.ones(8), 1.0)
    assert out["dd_upper_face"] == 0.0 and out["dd_jaw"] == 0.0
    assert abs(out["dd_head_pose"] - 2.0 / 3) < 1e-6  # mean over the 3 head-pose columns
    assert out["vertex_metrics"].startswith("skipped: metrics.flame_model is not set")
    assert out["dd_space"].startswith("FLAME parameters") and "no vertex-space" in out["dd_space"]
    assert "fdd" not in out and "lve" not in out["speaking"]


def test_metrics_split_by_role_on_a_hand_made_example():
    S, L, Q = int(Role.SPEAKING), int(Role.LISTENING), int(Role.SILENT)
    roles = torch.tensor([[S, S, S, L, L, L, Q], [S, S, L, L, L, L, L]], dtype=torch.int8)
    true = torch.zeros(2, 7, 8)  # still truth: every true velocity std is 0
    pred = torch.zeros(2, 7, 8)
    pred[0, :, 5] = torch.tensor([0., 2., 0., 5., 5., 8., 40.])  # first head-pose column
    pred[1, :, 5] = torch.tensor([0., 9., 3., 4., 3., 4., 3.])
    pred[0, 0, 0] = 3.0  # window 0, speaking frame 0: first expression coefficient
    pred[0, 4, 0] = 100.0  # window 0, listening frame 4
    pred[1, 1, 2] = 4.0  # window 1, speaking frame 1: jaw
    out = role_metrics(pred, true, roles, SLICES, None)
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
    assert "lve" not in speaking and "fdd" not in listening  # no FLAME model: parameter space only


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


# A synthetic FLAME with FLAME's five joints (root, neck, jaw, left eye, right eye) and eight vertices,
# each skinned to one joint; the joint regressor picks vertices 0, 1, 2, 5, 6 as the joints.
REST = np.array([[0, 0, 0],      # 0 root
                 [0, 1, 0],      # 1 neck
                 [0, 2, 0],      # 2 jaw joint
                 [0, 2, 1],      # 3 lip (jaw)
                 [0, 3, 1],      # 4 forehead (neck)
                 [1, 3, 0],      # 5 left eyeball
                 [-1, 3, 0],     # 6 right eyeball
                 [0, 1.5, 1]],   # 7 chin (jaw)
                dtype=np.float64)
SKINNED_TO = [0, 1, 2, 2, 1, 3, 4, 2]
JOINT_VERTICES = [0, 1, 2, 5, 6]
HEAD = [0, 1, 2, 3, 4, 7]  # every vertex but the eyeballs
FLAME_DIMS = {"expression": 2, "jaw": 3, "neck": 3, "eye_pose": 6, "global_rotation": 3}
FLAME_SLICES = group_slices(tuple(FLAME_DIMS), FLAME_DIMS)


def _rot_x(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _flame_pickle(tmp_path, monkeypatch, corrective: float = 0.0):
    """generic_model.pkl's layout: chumpy shapedirs (300 shape + 2 expression components), sparse J_regressor,
    kintree_table with the root's parent as the largest uint32; and FLAME_masks.pkl's region names."""
    shapedirs = np.zeros((8, 3, 302))
    shapedirs[..., :300] = np.random.default_rng(0).normal(size=(8, 3, 300))  # identity: never read
    shapedirs[4, 1, 300] = 1.0  # expression 0 lifts the forehead (+y)
    shapedirs[3, 2, 301] = 1.0  # expression 1 pushes the lip forward (+z)
    posedirs = np.zeros((8, 3, 36))
    posedirs[3, 2, 9 + 4] = corrective  # the lip's z from (R_jaw - I)[1, 1]: jaw = joint 2, entries 9..17
    regressor = np.zeros((5, 8))
    regressor[np.arange(5), JOINT_VERTICES] = 1.0
    weights = np.zeros((8, 5))
    weights[np.arange(8), SKINNED_TO] = 1.0
    chumpy = types.ModuleType("chumpy")
    chumpy_ch = types.ModuleType("chumpy.ch")

    class Ch:  # what pickle records for a chumpy array: its class path and its __dict__
        pass

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    chumpy_ch.Ch = Ch
    wrapped = Ch()
    wrapped.__dict__.update({"x": shapedirs, "_dirty_vars": set(), "_itr": None})
    model = {"v_template": REST, "shapedirs": wrapped, "posedirs": posedirs,
             "J_regressor": scipy.sparse.csc_matrix(regressor), "weights": weights,
             "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.uint32),
             "f": np.array([[0, 1, 2]], dtype=np.uint32), "bs_style": "lbs"}
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "chumpy", chumpy)
        patch.setitem(sys.modules, "chumpy.ch", chumpy_ch)
        (tmp_path / "generic_model.pkl").write_bytes(pickle.dumps(model, protocol=2))
    masks = {"lips": np.array([3]), "forehead": np.array([4]), "eye_region": np.array([], dtype=np.int64),
             "nose": np.array([], dtype=np.int64), "face": np.array([3, 4, 7]), "left_eyeball": np.array([5]),
             "right_eyeball": np.array([6]), "scalp": np.array([0, 1])}
    (tmp_path / "FLAME_masks.pkl").write_bytes(pickle.dumps(masks, protocol=2))
    assert "chumpy" not in sys.modules or sys.modules["chumpy"] is not chumpy
    return tmp_path / "generic_model.pkl", tmp_path / "FLAME_masks.pkl"


def _flame_file(tmp_path, monkeypatch, corrective: float = 0.0) -> str:
    model, masks = _flame_pickle(tmp_path, monkeypatch, corrective)
    return str(convert_flame_pickle(model, masks, tmp_path / "flame.npz", expression=2))


def test_the_converter_reads_flames_pickle_layout_and_skins_like_flame(tmp_path, monkeypatch):
    path = _flame_file(tmp_path, monkeypatch, corrective=0.5)
    arrays = read_flame_pickle(tmp_path / "generic_model.pkl")
    assert arrays["shapedirs"].shape == (8, 3, 302) and arrays["J_regressor"].shape == (5, 8)
    face = FlameModel(path)
    assert {k: v.tolist() for k, v in face.regions.items()} == {
        "lip_vertices": [3], "upper_face_vertices": [4], "lower_face_vertices": [3, 7], "head_vertices": HEAD}
    assert face.parents == [-1, 0, 1, 1, 1] and face.expression_count == 2
    # Expression 1 = 0.3, jaw 0.5 rad about x, neck 0.2 rad about x, root 0.7 rad about z.
    jaw, neck, root = 0.5, 0.2, 0.7
    expression = torch.tensor([[0.0, 0.3]])
    poses = {"jaw": torch.tensor([[jaw, 0, 0]]), "neck": torch.tensor([[neck, 0, 0]]),
             "global_rotation": torch.tensor([[0, 0, root]])}
    got = face.vertices(expression, poses)[0].double().numpy()
    # The lip by hand: its rest point moved by expression (+0.3 z) and the pose corrective 0.5 (cos(jaw) - 1),
    # turned about the jaw joint, then the neck joint, then the root.
    lip_offset = np.array([0, 0, 1 + 0.3 + 0.5 * (math.cos(jaw) - 1)])
    jaw_joint = np.array([0, 1, 0]) + _rot_x(neck) @ (np.array([0, 1, 0]) + _rot_x(jaw) @ lip_offset)
    np.testing.assert_allclose(got[3], _rot_z(root) @ jaw_joint, atol=1e-5)
    forehead = _rot_z(root) @ (np.array([0, 1, 0]) + _rot_x(neck) @ np.array([0, 2, 1]))
    np.testing.assert_allclose(got[4], forehead, atol=1e-5)
    np.testing.assert_allclose(got[0], [0, 0, 0], atol=1e-6)  # the root turns about itself
    only_jaw = face.vertices(expression, poses, joints=(2,))[0].double().numpy()  # root and neck at rest
    np.testing.assert_allclose(only_jaw[3], np.array([0, 2, 0]) + _rot_x(jaw) @ lip_offset, atol=1e-5)
    np.testing.assert_allclose(only_jaw[4], REST[4], atol=1e-6)


def test_reading_a_pickle_that_is_not_flames_says_what_is_missing(tmp_path):
    (tmp_path / "other.pkl").write_bytes(pickle.dumps({"v_template": np.zeros((2, 3))}))
    with pytest.raises(ValueError, match="shapedirs"):
        read_flame_pickle(tmp_path / "other.pkl")
    np.savez(tmp_path / "linear.npz", v_template=np.zeros((2, 3)), expr_dirs=np.zeros((2, 3, 1)))
    with pytest.raises(ValueError, match="convert-flame"):
        FlameModel(tmp_path / "linear.npz")


def _hand_made_window() -> torch.Tensor:
    """4 frames: jaw opens 0.4 rad on frames 1 and 3, the forehead lifts by 1 on frames 1 and 2,
    the head turns 0.3 rad about z on frames 2 and 3."""
    motion = torch.zeros(4, 17)
    motion[[1, 3], FLAME_SLICES["jaw"].start] = 0.4
    motion[[1, 2], FLAME_SLICES["expression"].start] = 1.0
    motion[[2, 3], FLAME_SLICES["global_rotation"].start + 2] = 0.3
    return motion


JAW, LIFT, TURN = np.array([0, 0.4, 0, 0.4]), np.array([0, 1.0, 1.0, 0]), np.array([0, 0, 0.3, 0.3])


def _head_vertices(frame: int) -> np.ndarray:
    """The posed head vertices of the hand-made window's ``frame``, by hand (rows in HEAD order)."""
    jaw_joint = np.array([0, 2, 0])
    face = {0: REST[0], 1: REST[1], 2: REST[2], 3: jaw_joint + _rot_x(JAW[frame]) @ (REST[3] - jaw_joint),
            4: REST[4] + [0, LIFT[frame], 0], 7: jaw_joint + _rot_x(JAW[frame]) @ (REST[7] - jaw_joint)}
    return np.stack([_rot_z(TURN[frame]) @ face[v] for v in HEAD])


def test_vertex_metrics_on_a_hand_made_flame_sequence(tmp_path, monkeypatch):
    face = FlameModel(_flame_file(tmp_path, monkeypatch))
    pred = torch.stack([_hand_made_window(), torch.zeros(4, 17)])  # window 1 is still, like its truth
    true = torch.zeros(2, 4, 17)
    figures = vertex_figures(face, pred, true, torch.ones(2, 4, dtype=torch.int8), FLAME_SLICES)
    out = figures.summary("all", torch.tensor([0]))
    # LVE: the lip's error in the face's own frame is the chord of its jaw turn (radius 1); the head turn
    # does not count there.
    assert out["lve"] == pytest.approx(np.mean(np.sqrt(2 - 2 * np.cos(JAW))), abs=1e-5)
    # MHD: the mean over the six head vertices of the posed error, per frame, averaged over frames.
    mhd = np.mean([np.linalg.norm(_head_vertices(t) - REST[HEAD], axis=1).mean() for t in range(4)])
    assert out["mhd"] == pytest.approx(mhd, abs=1e-5)
    # FDD: the forehead's squared displacement is LIFT^2; the still truth has std 0.
    assert out["fdd"] == pytest.approx(np.std(LIFT ** 2), abs=1e-5)
    # JDD: lip (radius 1) and chin (radius^2 1.25) on chords of the jaw turn: 2 r^2 (1 - cos).
    chord = 2 * (1 - np.cos(JAW))
    assert out["jdd"] == pytest.approx((np.std(chord) + np.std(1.25 * chord)) / 2, abs=1e-5)
    # PDD: the neutral head turned about z: each vertex's squared chord is 2 (1 - cos) (x^2 + y^2).
    planar = (REST[HEAD, :2] ** 2).sum(1)
    turn = 2 * (1 - np.cos(TURN))
    assert out["pdd"] == pytest.approx(np.mean([np.std(turn * r) for r in planar]), abs=1e-5)
    # All windows: the still window adds zeros (the deviations are means over windows of equal frames).
    both = figures.summary("all")
    assert both["fdd"] == pytest.approx(out["fdd"] / 2, abs=1e-6) and both["lve"] == pytest.approx(out["lve"] / 2)


def test_vertex_metrics_by_role_and_in_the_report(tmp_path, monkeypatch):
    path = _flame_file(tmp_path, monkeypatch)
    S, L = int(Role.SPEAKING), int(Role.LISTENING)
    roles = torch.tensor([[S, S, L, L], [S, S, S, S]], dtype=torch.int8)
    pred = torch.stack([_hand_made_window(), torch.zeros(4, 17)])
    true = torch.zeros(2, 4, 17)
    report = evaluation_metrics(pred, true, roles, FLAME_SLICES, path, torch.ones(17), 0.5)
    assert "vertex-space" in report["dd_space"] and "vertex_metrics" not in report
    speaking, listening = report["speaking"], report["listening"]
    # Speaking: window 0 frames 0-1 (lift 0, 1: squared std 0.5) and window 1 (still, 4 frames): weighted 2 : 4.
    assert speaking["fdd"] == pytest.approx(2 * np.std(LIFT[:2] ** 2) / 6, abs=1e-5)
    # Listening: window 0 frames 2-3 only (lift 1, 0).
    assert listening["fdd"] == pytest.approx(np.std(LIFT[2:] ** 2), abs=1e-5)
    # LVE over the 6 speaking frames: the jaw opens on window 0's frame 1 only.
    assert speaking["lve"] == pytest.approx(math.sqrt(2 - 2 * math.cos(0.4)) / 6, abs=1e-5)
    assert "lve" not in listening and "mhd" not in listening
    # The expressive subset (share 0.5): one window; both truths are still, so the first by window order.
    assert report["expressive"]["fdd"] == pytest.approx(np.std(LIFT ** 2), abs=1e-5)
    assert report["fdd"] == pytest.approx(np.std(LIFT ** 2) / 2, abs=1e-5)
    one_frame = torch.tensor([[S, L, L, L], [L, L, L, L]], dtype=torch.int8)
    lonely = role_metrics(pred, true, one_frame, FLAME_SLICES,
                          vertex_figures(FlameModel(path), pred, true, one_frame, FLAME_SLICES))
    assert lonely["speaking"]["fdd"] == f"skipped: no window with {MIN_FRAMES} speaking frames"
