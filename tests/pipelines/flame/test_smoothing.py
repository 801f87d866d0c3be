"""Savitzky-Golay smoothing of FLAME groups: noise, polynomials, edges, short clips, rotations across +-pi."""

from __future__ import annotations

import numpy as np

from pipelines.flame.smoothing import (
    axis_angle_to_quat,
    geodesic_angle,
    quat_to_axis_angle,
    savgol_groups,
    savgol_window,
)

FPS = 25.0


def test_window_rules():
    assert savgol_window(1000, 0.2, 2, 25.0) == 5  # 5 frames
    assert savgol_window(1000, 0.4, 2, 25.0) == 11  # 10 -> nearest odd (10.0 rounds up)
    assert savgol_window(1000, 0.36, 2, 25.0) == 9  # 9 frames
    assert savgol_window(1000, 0.01, 3, 25.0) == 5  # smallest odd >= polyorder + 2
    assert savgol_window(7, 1.0, 2, 25.0) == 7  # short clip: largest odd <= n
    assert savgol_window(6, 1.0, 2, 25.0) == 5
    assert savgol_window(2, 1.0, 2, 25.0) is None  # nothing > polyorder fits


def test_noise_variance_drops():
    rng = np.random.default_rng(0)
    t = np.arange(500) / FPS
    clean = np.stack([np.sin(2 * np.pi * 0.3 * t + k) for k in range(100)], axis=1)
    noise = rng.normal(0.0, 0.1, size=clean.shape)
    out = savgol_groups({"expression": (clean + noise).astype(np.float32)}, window_s=0.4, polyorder=2, fps=FPS)
    residual = out["expression"] - clean
    assert out["expression"].dtype == np.float32 and out["expression"].shape == clean.shape
    assert residual.var() < noise.var() / 3


def test_polynomial_passes_unchanged():
    t = np.linspace(-1.0, 1.0, 60)
    poly = np.stack([1.0 + 0.5 * t - 2.0 * t ** 2, 0.3 * t ** 2, -t], axis=1)
    out = savgol_groups({"expression": poly, "jaw_like": poly}, window_s=0.5, polyorder=2, fps=FPS,
                        rotation_groups=())
    np.testing.assert_allclose(out["expression"], poly, atol=1e-9)
    np.testing.assert_allclose(out["jaw_like"], poly, atol=1e-9)


def _edge_fit(values: np.ndarray, window: int, polyorder: int, head: bool) -> np.ndarray:
    """Least-squares polynomial over the first (last) ``window`` frames, evaluated on that window's
    outer half: what smoothing the edges must be."""
    t = np.arange(window)
    part = values[:window] if head else values[-window:]
    fitted = np.polynomial.polynomial.Polynomial.fit(t, part, polyorder)(t)
    return fitted[: window // 2] if head else fitted[-(window // 2):]


def test_edges_are_smoothed_by_the_local_polynomial():
    # The configured filter at 24 fps: 0.375 s -> 9 frames, cubic.
    window, polyorder, fps = 9, 3, 24.0
    rng = np.random.default_rng(1)
    noise = rng.normal(0.0, 1.0, size=(40, 3000))
    t = np.arange(40) / fps
    cubic = (0.3 + 2.0 * t - 1.5 * t ** 2 + 0.8 * t ** 3)[:, None] * np.ones((1, 3000))
    out = savgol_groups({"expression": noise, "eyelids": cubic}, window_s=0.375, polyorder=polyorder, fps=fps)
    assert savgol_window(40, 0.375, polyorder, fps) == window
    # a cubic passes unchanged, edges included
    np.testing.assert_allclose(out["eyelids"], cubic, atol=1e-9)
    # edge frames are the local fit over the first / last window, not copies of the input
    for column in (0, 1):
        np.testing.assert_allclose(out["expression"][:4, column], _edge_fit(noise[:, column], window, polyorder, True))
        np.testing.assert_allclose(out["expression"][-4:, column], _edge_fit(noise[:, column], window, polyorder, False))
    # so white noise keeps the fit's leverage of its variance at each edge frame (0.86, 0.33, 0.37, 0.31)
    vander = np.vander(np.arange(window), polyorder + 1)
    leverage = np.diag(vander @ np.linalg.pinv(vander))[:4]
    ratio_head = out["expression"][:4].var(axis=1) / noise[:4].var(axis=1)
    ratio_tail = out["expression"][-4:][::-1].var(axis=1) / noise[-4:][::-1].var(axis=1)
    np.testing.assert_allclose(ratio_head, leverage, rtol=0.1)
    np.testing.assert_allclose(ratio_tail, leverage, rtol=0.1)
    assert ratio_head.max() < 0.9 and ratio_head[1:].max() < 0.45 and ratio_tail[1:].max() < 0.45


def test_rotation_edges_are_smoothed():
    rng = np.random.default_rng(4)
    truth = np.array([0.2, -0.4, 0.1])
    raw_err, smooth_err = [], []
    for _ in range(200):
        noisy = truth + rng.normal(0.0, 0.02, size=(40, 3))
        out = savgol_groups({"jaw": noisy}, window_s=0.375, polyorder=3, fps=24.0)["jaw"]
        edges = np.r_[0:4, 36:40]
        raw_err.append(geodesic_angle(noisy[edges], truth) ** 2)
        smooth_err.append(geodesic_angle(out[edges], truth) ** 2)
    raw_mse, smooth_mse = np.mean(raw_err, axis=0), np.mean(smooth_err, axis=0)
    assert np.all(smooth_mse < 0.95 * raw_mse)  # first and last frames included
    assert np.all(smooth_mse[[1, 2, 3, 4, 5, 6]] < 0.5 * raw_mse[[1, 2, 3, 4, 5, 6]])


def test_short_clip_handled():
    data = np.arange(12, dtype=np.float32).reshape(4, 3) * 0.01
    out = savgol_groups({"expression": data, "neck": data}, window_s=1.0, polyorder=2, fps=FPS)
    assert out["expression"].shape == (4, 3) and np.all(np.isfinite(out["neck"]))
    np.testing.assert_allclose(out["expression"], data, atol=1e-6)  # linear data: window 3, order 2
    tiny = np.ones((2, 3), np.float32)
    out = savgol_groups({"expression": tiny, "jaw": tiny * 0.1}, window_s=1.0, polyorder=2, fps=FPS)
    np.testing.assert_array_equal(out["expression"], tiny)  # too short: unchanged
    np.testing.assert_array_equal(out["jaw"], tiny * 0.1)
    empty = savgol_groups({"expression": np.zeros((0, 100), np.float32)}, 0.4, 2, FPS)
    assert empty["expression"].shape == (0, 100)


def test_quaternion_round_trip():
    rng = np.random.default_rng(2)
    v = rng.normal(size=(200, 3))
    v *= (rng.uniform(0, np.pi - 1e-3, size=(200, 1)) / np.linalg.norm(v, axis=1, keepdims=True))
    v[:3] = [[0, 0, 0], [1e-9, 0, 0], [0, 1e-5, 0]]
    q = axis_angle_to_quat(v)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(quat_to_axis_angle(q), v, atol=1e-9)
    np.testing.assert_allclose(quat_to_axis_angle(-q), v, atol=1e-9)


def _rotation_across_pi(n: int = 61) -> tuple[np.ndarray, np.ndarray]:
    """Continuous rotation about z from 3.0 rad through pi; stored axis-angle wraps to -pi.. -3.0 rad."""
    true_angle = np.linspace(3.0, 2 * np.pi - 3.0, n)  # 3.0 .. 3.283, continuous
    stored = np.where(true_angle > np.pi, true_angle - 2 * np.pi, true_angle)  # 3.0 .. pi, -pi .. -3.0
    rv = np.zeros((n, 3))
    rv[:, 2] = stored
    return rv, true_angle


def test_rotation_crossing_pi_is_not_torn():
    rv, _ = _rotation_across_pi()
    jumps = np.abs(np.diff(rv[:, 2]))
    assert jumps.max() > 6.0  # the stored input really does jump in axis-angle
    noisy = rv.copy()
    noisy[:, 2] += np.random.default_rng(3).normal(0, 0.01, size=len(rv))  # stays on its branch
    out = savgol_groups({"global_rotation": rv.astype(np.float32), "eye_pose": np.hstack([rv, noisy])},
                        window_s=0.4, polyorder=2, fps=FPS)
    g = out["global_rotation"].astype(np.float64)
    assert np.all(np.isfinite(g))
    # smoothed rotation equals the (linear-in-angle) input rotation, frame by frame
    assert geodesic_angle(g, rv).max() < 1e-3
    # no jump: consecutive smoothed frames are as close as consecutive input frames
    step_in = geodesic_angle(rv[1:], rv[:-1])
    step_out = geodesic_angle(g[1:], g[:-1])
    assert step_out.max() < 2 * step_in.max() + 1e-4
    # and the stored vectors follow the input's branch (no spurious 2 pi offsets)
    np.testing.assert_allclose(g, rv, atol=1e-3)
    eyes = out["eye_pose"].astype(np.float64)
    assert geodesic_angle(eyes[:, :3], rv).max() < 1e-3
    assert geodesic_angle(eyes[:, 3:], rv).max() < 0.03  # noise reduced, no tear
    assert np.abs(np.diff(np.unwrap(eyes[:, 5]))).max() < 0.05


def test_naive_componentwise_filter_would_tear():
    """Why rotations go through quaternions: filtering the stored axis-angle directly tears at pi."""
    from scipy.signal import savgol_filter

    rv, _ = _rotation_across_pi()
    naive = savgol_filter(rv, 11, 2, axis=0, mode="interp")
    assert geodesic_angle(naive, rv).max() > 0.5
