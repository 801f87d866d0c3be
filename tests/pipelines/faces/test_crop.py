"""The square crop rule: longer side x 1.5, centred on the face, shifted (not shrunk) into the frame."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.faces.crop import SquareCrop, fit_square, smooth_params, square_crop, square_params

FRAME_W, FRAME_H = 640, 480


def _inside(crop: SquareCrop, w: int = FRAME_W, h: int = FRAME_H) -> bool:
    return crop.x >= 0 and crop.y >= 0 and crop.x + crop.side <= w and crop.y + crop.side <= h


def test_224x168_box_gives_336_square_centred_on_box():
    box = (100.0, 150.0, 324.0, 318.0)  # 224 wide, 168 high
    cx, cy, side = square_params(box, 1.5)
    assert (cx, cy, side) == (212.0, 234.0, 336.0)
    crop = square_crop(box, 2000, 2000, 1.5)
    assert crop.side == 336
    assert crop.x + crop.side / 2 == pytest.approx(212.0, abs=0.5)
    assert crop.y + crop.side / 2 == pytest.approx(234.0, abs=0.5)
    assert (crop.x, crop.y) == (44, 66)


def test_longer_side_is_used_for_tall_boxes():
    crop = square_crop((300.0, 100.0, 340.0, 200.0), 2000, 2000, 1.5)  # 40 wide, 100 high
    assert crop.side == 150


def test_scale_one_keeps_the_longer_side():
    assert square_crop((10.0, 10.0, 110.0, 60.0), FRAME_W, FRAME_H, 1.0).side == 100


BOX = 100  # a 100 px face: 150 px square, well smaller than the frame
EDGE_BOXES = {
    "left": (0, 190, BOX, 190 + BOX),
    "right": (FRAME_W - BOX, 190, FRAME_W, 190 + BOX),
    "top": (270, 0, 270 + BOX, BOX),
    "bottom": (270, FRAME_H - BOX, 270 + BOX, FRAME_H),
    "top_left": (0, 0, BOX, BOX),
    "top_right": (FRAME_W - BOX, 0, FRAME_W, BOX),
    "bottom_left": (0, FRAME_H - BOX, BOX, FRAME_H),
    "bottom_right": (FRAME_W - BOX, FRAME_H - BOX, FRAME_W, FRAME_H),
}


@pytest.mark.parametrize("where", sorted(EDGE_BOXES))
def test_box_at_edge_or_corner_is_shifted_inside_not_shrunk(where):
    box = tuple(float(v) for v in EDGE_BOXES[where])
    crop = square_crop(box, FRAME_W, FRAME_H, 1.5)
    assert crop.side == 150, "the square fits the frame: it must keep its side"
    assert _inside(crop)
    # The face stays wholly inside the shifted square.
    assert crop.x <= box[0] and crop.y <= box[1]
    assert crop.x + crop.side >= box[2] and crop.y + crop.side >= box[3]
    # Shifted against exactly the edges it touches, centred along the others.
    if "left" in where:
        assert crop.x == 0
    if "right" in where:
        assert crop.x == FRAME_W - 150
    if "top" in where:
        assert crop.y == 0
    if "bottom" in where:
        assert crop.y == FRAME_H - 150
    if where in ("left", "right"):
        assert crop.y == 190 + BOX // 2 - 75
    if where in ("top", "bottom"):
        assert crop.x == 270 + BOX // 2 - 75


def test_crop_of_a_frame_has_the_square_shape():
    rgb = np.zeros((FRAME_H, FRAME_W, 3), dtype=np.uint8)
    crop = square_crop(tuple(float(v) for v in EDGE_BOXES["bottom_right"]), FRAME_W, FRAME_H, 1.5)
    assert crop.apply(rgb).shape == (150, 150, 3)


def test_square_larger_than_frame_shrinks_to_shorter_side():
    box = (-100.0, -50.0, 740.0, 530.0)  # bigger than the frame in both directions
    crop = square_crop(box, FRAME_W, FRAME_H, 1.5)
    assert crop.side == min(FRAME_W, FRAME_H) == 480
    assert _inside(crop)
    assert (crop.x, crop.y) == (80, 0)  # still centred horizontally on the box centre (320)


def test_square_just_fitting_is_not_shrunk():
    crop = square_crop((170.0, 90.0, 470.0, 390.0), FRAME_W, FRAME_H, 1.5)  # 300 px box -> 450 <= 480
    assert crop.side == 450
    assert _inside(crop)


def test_fit_square_on_a_portrait_frame():
    crop = fit_square(cx=10.0, cy=600.0, side=500.0, frame_w=288, frame_h=360)
    assert crop.side == 288
    assert _inside(crop, 288, 360)


def test_smooth_constant_signal_is_unchanged():
    params = np.tile([100.0, 80.0, 150.0], (40, 1))
    np.testing.assert_allclose(smooth_params(params, 5), params)


def test_smooth_keeps_linear_ramp_away_from_edges():
    t = np.arange(60, dtype=np.float64)
    params = np.stack([2.0 * t + 10.0, -0.5 * t + 200.0, 0.25 * t + 150.0], axis=1)
    radius = 5
    smoothed = smooth_params(params, radius)
    assert smoothed.shape == params.shape
    np.testing.assert_allclose(smoothed[radius:-radius], params[radius:-radius], atol=1e-9)
    # Edges are padded by repetition, so the average there is pulled toward the interior.
    assert smoothed[0, 0] > params[0, 0]
    assert smoothed[-1, 0] < params[-1, 0]


def test_smooth_reduces_noise_variance():
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 5.0, size=(500, 3)) + np.array([200.0, 150.0, 300.0])
    smoothed = smooth_params(noise, 5)
    # White noise averaged over 11 samples: variance about 1/11 of the original.
    ratio = smoothed.var(axis=0) / noise.var(axis=0)
    assert np.all(ratio < 0.25)
    np.testing.assert_allclose(smoothed.mean(axis=0), noise.mean(axis=0), atol=0.5)


def test_smooth_radius_zero_returns_a_copy():
    params = np.arange(12, dtype=np.float64).reshape(4, 3)
    out = smooth_params(params, 0)
    np.testing.assert_array_equal(out, params)
    assert out is not params
