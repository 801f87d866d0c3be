"""SheapBackend on a tiny scripted stand-in (tests/flame_fixtures.py), and on the real checkpoint when present."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests"))

from flame_fixtures import SHEAP_DIMS, build_scripted_sheap  # noqa: E402

from pipelines.flame.groups import MOTION_GROUPS, ROTATION_GROUPS  # noqa: E402
from pipelines.flame.headcrop import head_crop_224, head_square  # noqa: E402
from pipelines.flame.sheap import SheapBackend, to_groups  # noqa: E402

# Read at import: tests/pipelines/conftest.py clears TALKINGHEAD_* for the session.
REAL_MODEL_DIR = Path(os.environ.get("TALKINGHEAD_MODEL_DIR") or REPO.parent / "shared" / "models").expanduser()
REAL_SHEAP = REAL_MODEL_DIR / "sheap" / "sheap.pt"


@pytest.fixture(scope="module")
def scripted_path(tmp_path_factory) -> Path:
    return build_scripted_sheap(tmp_path_factory.mktemp("sheap") / "sheap.pt")


def _images(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 224, 224, 3), dtype=np.uint8)


def test_batched_inference_shapes_and_equals_single_batch(scripted_path):
    images = _images(70)
    batched = SheapBackend(scripted_path, batch_size=32)
    assert batched._module is None  # lazy
    out = batched.predict(images)
    assert set(out) == set(SHEAP_DIMS)
    for name, dims in SHEAP_DIMS.items():
        assert out[name].shape == (70, dims) and out[name].dtype == np.float32
    assert not np.allclose(out["expr"][0], out["expr"][1])  # varies per image
    single = SheapBackend(scripted_path, batch_size=128).predict(images)
    for name in SHEAP_DIMS:
        np.testing.assert_allclose(out[name], single[name], rtol=1e-5, atol=1e-5)


def test_tuple_outputs_follow_documented_order(tmp_path, scripted_path):
    tuple_path = build_scripted_sheap(tmp_path / "tuple.pt", as_tuple=True)
    images = _images(5, seed=2)
    from_tuple = SheapBackend(tuple_path, batch_size=2).predict(images)
    from_dict = SheapBackend(scripted_path).predict(images)
    assert set(from_tuple) == set(from_dict)
    for name in SHEAP_DIMS:
        np.testing.assert_allclose(from_tuple[name], from_dict[name], rtol=1e-5, atol=1e-6)


def test_to_groups_dims(scripted_path):
    backend = SheapBackend(scripted_path)
    out = backend.predict(_images(7, seed=3))
    motion, metadata = backend.to_groups(out)
    assert set(motion) == set(MOTION_GROUPS)
    for group, (_, dims) in MOTION_GROUPS.items():
        assert motion[group].shape == (7, dims) and motion[group].dtype == np.float32
    assert ROTATION_GROUPS <= set(MOTION_GROUPS)
    np.testing.assert_array_equal(motion["eye_pose"][:, :3], out["eye_l"])
    np.testing.assert_array_equal(motion["eye_pose"][:, 3:], out["eye_r"])
    np.testing.assert_array_equal(motion["global_rotation"], out["torso"])
    assert metadata["shape"].shape == (300,)
    np.testing.assert_allclose(metadata["shape"], out["shape"].mean(axis=0), rtol=1e-6)
    assert metadata["cam_trans"].shape == (7, 3)


def test_to_groups_missing_output_is_clear():
    with pytest.raises(KeyError, match="expr"):
        to_groups({"jaw": np.zeros((2, 3), np.float32)})


def test_missing_checkpoint_names_path_and_source(tmp_path):
    missing = tmp_path / "nowhere" / "sheap.pt"
    backend = SheapBackend(missing)  # lazy: no error yet
    with pytest.raises(FileNotFoundError) as err:
        backend.predict(_images(1))
    assert str(missing) in str(err.value) and "SHeaP" in str(err.value)


def test_predict_rejects_wrong_input(scripted_path):
    backend = SheapBackend(scripted_path)
    with pytest.raises(ValueError):
        backend.predict(np.zeros((2, 112, 112, 3), np.uint8))
    with pytest.raises(ValueError):
        backend.predict(np.zeros((2, 224, 224, 3), np.float32))


def test_head_crop_geometry_and_padding():
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:, :, 0] = np.arange(640, dtype=np.uint16)[None, :] % 256
    box = (300, 200, 400, 330)  # 100 x 130
    x0, y0, side = head_square(box)
    assert side == 208  # 1.6 x 130
    assert (x0 + side / 2, y0 + side / 2) == pytest.approx((350, 265 - 0.1 * 208), abs=1)
    crop = head_crop_224(frame, box)
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    # box at the corner: the square leaves the frame and is padded by edge replication
    corner = head_crop_224(frame, (0, 0, 60, 60))
    assert corner.shape == (224, 224, 3)
    assert np.all(corner[:20, :, 1] == 0)


@pytest.mark.skipif(not REAL_SHEAP.is_file(),
                    reason=f"real SHeaP checkpoint not found at {REAL_SHEAP} (set TALKINGHEAD_MODEL_DIR to a "
                           "folder holding sheap/sheap.pt)")
def test_real_checkpoint():
    backend = SheapBackend(REAL_SHEAP, batch_size=4)
    out = backend.predict(_images(6, seed=4))
    motion, metadata = backend.to_groups(out)
    for group, (_, dims) in MOTION_GROUPS.items():
        assert motion[group].shape == (6, dims)
        assert np.all(np.isfinite(motion[group]))
    assert metadata["shape"].shape == (300,)
    assert metadata["cam_trans"].shape == (6, 3)
