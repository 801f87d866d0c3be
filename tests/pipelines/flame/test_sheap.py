"""SheapBackend against a traced stand-in with the published SHeaP interface (pipelines/fixtures/sheap.py),
the head crop, and the real checkpoint when the model directory holds one."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests"))

from pipelines.config import FlameConfig  # noqa: E402
from pipelines.fixtures.sheap import OLD_PROJECT_NAMES, PUBLISHED_SHEAP_OUTPUTS, build_scripted_sheap  # noqa: E402
from pipelines.flame.groups import MOTION_GROUPS, ROTATION_GROUPS, group_dims  # noqa: E402
from pipelines.flame.headcrop import crop_square, head_square, head_squares  # noqa: E402
from pipelines.flame.sheap import SheapBackend, SheapOutputError, to_groups  # noqa: E402
from pipelines.models import ModelStore  # noqa: E402

# Read at import: tests/pipelines/conftest.py clears TALKINGHEAD_* for the session.
REAL_MODEL_DIR = Path(os.environ.get("TALKINGHEAD_MODEL_DIR") or REPO.parent / "shared" / "models").expanduser()


@pytest.fixture(scope="module")
def scripted_path(tmp_path_factory) -> Path:
    return build_scripted_sheap(tmp_path_factory.mktemp("sheap") / "sheap.pt")


def _images(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 224, 224, 3), dtype=np.uint8)


def _module_outputs(path: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    """What the checkpoint itself returns for ``images``, called the way SHeaP's README does."""
    module = torch.jit.load(str(path))
    with torch.no_grad():
        out = module(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).float() / 255.0)
    return {name: value.numpy() for name, value in out.items()}


def test_standin_returns_exactly_the_published_dict(scripted_path):
    raw = _module_outputs(scripted_path, _images(3))
    assert {name: (v.shape, v.dtype) for name, v in raw.items()} == {
        name: ((3, width), np.float32) for name, width in PUBLISHED_SHEAP_OUTPUTS.items()}


def test_batched_inference_reads_the_published_outputs(scripted_path):
    images = _images(70)
    batched = SheapBackend(scripted_path, batch_size=32)
    assert batched._module is None  # lazy
    out = batched.predict(images)
    assert set(out) == set(PUBLISHED_SHEAP_OUTPUTS)
    raw = _module_outputs(scripted_path, images)
    for name, width in PUBLISHED_SHEAP_OUTPUTS.items():
        assert out[name].shape == (70, width) and out[name].dtype == np.float32
        np.testing.assert_allclose(out[name], raw[name], rtol=1e-5, atol=1e-5)
    assert not np.allclose(out["expr"][0], out["expr"][1])  # varies per image
    single = SheapBackend(scripted_path, batch_size=128).predict(images)
    for name in PUBLISHED_SHEAP_OUTPUTS:
        np.testing.assert_allclose(out[name], single[name], rtol=1e-5, atol=1e-5)


def test_to_groups_maps_published_names_to_our_groups(scripted_path):
    backend = SheapBackend(scripted_path)
    out = backend.predict(_images(7, seed=3))
    motion, metadata = backend.to_groups(out)
    assert set(motion) == {"expression", "jaw", "neck", "eyelids", "eye_pose", "global_rotation"} == set(MOTION_GROUPS)
    assert ROTATION_GROUPS <= set(MOTION_GROUPS)
    # The mapping written out from the release (sheap/tiny_flame.py pose_components_to_rotmats),
    # not read from pipelines/flame/groups.py.
    expected = {"expression": out["expr"], "jaw": out["jaw_pose"], "neck": out["neck_pose"],
                "eyelids": out["eyelids"], "eye_pose": np.hstack([out["eye_l_pose"], out["eye_r_pose"]]),
                "global_rotation": out["torso_pose"]}
    for group, value in expected.items():
        assert motion[group].dtype == np.float32 and motion[group].shape == (7, group_dims(group))
        np.testing.assert_array_equal(motion[group], value)
    np.testing.assert_allclose(metadata["shape"], out["shape_from_facenet"].mean(axis=0), rtol=1e-6)
    assert metadata["shape"].shape == (300,)
    np.testing.assert_array_equal(metadata["cam_trans"], out["cam_trans"])


def test_extra_outputs_are_ignored(tmp_path):
    path = build_scripted_sheap(tmp_path / "extra.pt", extra_outputs={"vertices_hint": 5, "confidence": 1})
    backend = SheapBackend(path, batch_size=4)
    out = backend.predict(_images(6, seed=5))
    assert set(out) == set(PUBLISHED_SHEAP_OUTPUTS)
    raw = _module_outputs(path, _images(6, seed=5))
    assert {"vertices_hint", "confidence"} <= set(raw)
    np.testing.assert_allclose(out["jaw_pose"], raw["jaw_pose"], rtol=1e-5, atol=1e-6)
    motion, _ = backend.to_groups(out)
    assert motion["jaw"].shape == (6, 3)


def test_missing_output_names_checkpoint_key_and_received_keys(tmp_path):
    path = build_scripted_sheap(tmp_path / "no-eyelids.pt", drop=("eyelids",))
    with pytest.raises(SheapOutputError) as err:
        SheapBackend(path).predict(_images(2))
    message = str(err.value)
    assert str(path) in message and "['eyelids']" in message
    assert "received keys" in message and "'cam_trans'" in message and "'expr'" in message


def test_old_project_names_are_rejected(tmp_path):
    path = build_scripted_sheap(tmp_path / "old-names.pt", rename=OLD_PROJECT_NAMES)
    with pytest.raises(SheapOutputError) as err:
        SheapBackend(path).predict(_images(2))
    message = str(err.value)
    assert str(path) in message
    for published, old in OLD_PROJECT_NAMES.items():
        assert f"'{published}'" in message.split("received keys")[0]  # named as missing
        assert f"'{old}'" in message  # listed among the keys received


def test_wrong_width_is_a_clear_error(tmp_path):
    path = build_scripted_sheap(tmp_path / "expr50.pt", widths={"expr": 50})
    with pytest.raises(SheapOutputError, match=r"'expr' has shape \(3, 50\).*expected \(3, 100\)") as err:
        SheapBackend(path).predict(_images(3))
    assert str(path) in str(err.value)


def test_a_module_returning_a_tuple_is_rejected(tmp_path):
    class TupleModel(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x.mean(dim=(2, 3)), x.amax(dim=(2, 3))

    path = tmp_path / "tuple.pt"
    torch.jit.save(torch.jit.script(TupleModel()), str(path))
    with pytest.raises(SheapOutputError, match="returned tuple.*dict"):
        SheapBackend(path).predict(_images(1))


def test_to_groups_missing_output_is_clear():
    with pytest.raises(SheapOutputError, match="'expr' missing; received keys \\['jaw_pose'\\]"):
        to_groups({"jaw_pose": np.zeros((2, 3), np.float32)})


def test_missing_checkpoint_names_path_and_source(tmp_path):
    missing = tmp_path / "nowhere" / "sheap.pt"
    backend = SheapBackend(missing)  # lazy: no error yet
    with pytest.raises(FileNotFoundError) as err:
        backend.predict(_images(1))
    assert str(missing) in str(err.value) and "SHeaP" in str(err.value)


def test_predict_rejects_wrong_input(scripted_path):
    backend = SheapBackend(scripted_path)
    with pytest.raises(ValueError, match="shape"):
        backend.predict(np.zeros((2, 112, 112, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        backend.predict(np.zeros((2, 224, 224, 3), np.float32))


def test_head_square_geometry():
    box = (300, 200, 400, 330)  # 100 x 130: the longer side is the height
    cx, cy, side = head_square(box, scale=2.0, shift_up=0.25)
    assert (cx, cy, side) == pytest.approx((350.0, 265.0 - 0.25 * 130, 260.0))
    with pytest.raises(ValueError, match="positive"):
        head_square((10, 10, 10, 40), 2.0, 0.2)


def test_head_squares_are_smoothed_over_time():
    rng = np.random.default_rng(7)
    steady = np.tile([[100.0, 80.0, 200.0, 210.0]], (60, 1))
    jitter = steady + rng.normal(0, 3.0, size=steady.shape)
    exact = head_squares(steady, 1.8, 0.1, smoothing_radius=2)
    np.testing.assert_allclose(exact, np.tile(head_square(steady[0], 1.8, 0.1), (60, 1)))
    raw = head_squares(jitter, 1.8, 0.1, smoothing_radius=0)
    smooth = head_squares(jitter, 1.8, 0.1, smoothing_radius=2)
    assert np.abs(np.diff(smooth, axis=0)).mean() < 0.6 * np.abs(np.diff(raw, axis=0)).mean()
    np.testing.assert_allclose(smooth[10], raw[8:13].mean(axis=0))  # centred 5-frame mean


def test_crop_padding_replicates_the_frame_edges():
    # Every channel is non-zero and varies with position, so padding (edge copies) differs from
    # both black fill and misplaced content.
    ys, xs = np.mgrid[0:240, 0:320]
    frame = np.stack([40 + xs % 200, 30 + ys % 200, 20 + (xs + 2 * ys) % 200], axis=-1).astype(np.uint8)
    assert frame.min() > 0
    # a 224 px square (no resize) whose top-left corner lies at (-30, -40): 30 columns and 40 rows outside
    crop = crop_square(frame, (-30 + 112, -40 + 112, 224))
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    np.testing.assert_array_equal(crop[40:, 30:], frame[:184, :194])  # the part inside the frame
    np.testing.assert_array_equal(crop[:40, 30:], np.broadcast_to(frame[0, :194], (40, 194, 3)))  # top rows
    np.testing.assert_array_equal(crop[40:, :30], np.broadcast_to(frame[:184, :1], (184, 30, 3)))  # left columns
    np.testing.assert_array_equal(crop[:40, :30], np.broadcast_to(frame[0, 0], (40, 30, 3)))  # corner
    inside = crop_square(frame, (160, 120, 112))  # enlarged x2 from an inside square
    assert inside.shape == (224, 224, 3)
    np.testing.assert_allclose(inside.reshape(-1, 3).mean(axis=0),
                               frame[64:176, 104:216].reshape(-1, 3).mean(axis=0), atol=1.0)
    with pytest.raises(ValueError, match="outside"):
        crop_square(frame, (-500, -500, 100))


def _real_sheap() -> Path | None:
    status = ModelStore(REAL_MODEL_DIR).status("sheap")
    return status.path if status.state in ("ok", "unpinned") else None


@pytest.mark.real_weights
@pytest.mark.skipif(_real_sheap() is None, reason=f"no SHeaP checkpoint in {REAL_MODEL_DIR / 'sheap'} "
                    "(model_expressive.pt / model_paper.pt from the release, or sheap.pt)")
def test_real_checkpoint_returns_the_published_outputs(grid_clip, scrfd_detector):
    from pipelines.media.decode import iter_video_frames

    path = _real_sheap()
    flame = FlameConfig()
    frames = [f for _, f in zip(range(6), iter_video_frames(grid_clip))]
    crops = []
    for frame in frames:
        det = max(scrfd_detector.detect(frame), key=lambda d: d.score)
        crops.append(crop_square(frame, head_square(det.box, flame.head_scale, flame.head_shift_up)))
    images = np.stack(crops)
    raw = _module_outputs(path, images)
    for name, width in PUBLISHED_SHEAP_OUTPUTS.items():
        assert raw[name].shape == (6, width) and raw[name].dtype == np.float32, name
    backend = SheapBackend(path, batch_size=4)
    motion, metadata = backend.to_groups(backend.predict(images))
    for group in MOTION_GROUPS:
        assert motion[group].shape == (6, group_dims(group)) and np.isfinite(motion[group]).all()
    assert metadata["shape"].shape == (300,) and metadata["cam_trans"].shape == (6, 3)
