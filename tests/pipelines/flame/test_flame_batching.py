"""SHeaP batches span clip boundaries: full forward passes for short clips, outputs split back per clip."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.fixtures.sheap import build_scripted_sheap
from pipelines.flame.sheap import SheapBackend
from pipelines.flame.stage import predict_clips


class CountingBackend(SheapBackend):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[int] = []

    def predict(self, images):
        self.calls.append(len(images))
        return super().predict(images)


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    return CountingBackend(build_scripted_sheap(tmp_path_factory.mktemp("sheap") / "sheap.pt"), batch_size=16)


def _clip(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 224, 224, 3), dtype=np.uint8)


def test_batches_span_clips_and_outputs_match_per_clip_inference(backend):
    clips = {"a": _clip(10, 1), "b": _clip(25, 2), "empty": _clip(0, 3), "c": _clip(7, 4)}
    backend.calls.clear()
    got = list(predict_clips(((k, iter(v)) for k, v in clips.items()), backend, batch_frames=16))
    assert backend.calls == [16, 16, 10]  # 42 frames in 3 full-as-possible passes, not 4 per-clip ones
    assert [k for k, _ in got] == ["a", "b", "empty", "c"]
    outputs = dict(got)
    assert outputs["empty"] is None
    for key in ("a", "b", "c"):
        alone = backend.predict(clips[key])
        assert set(outputs[key]) == set(alone)
        for name, value in alone.items():
            assert outputs[key][name].shape == value.shape
            np.testing.assert_allclose(outputs[key][name], value, rtol=1e-5, atol=1e-5)


def test_a_clip_is_yielded_as_soon_as_its_frames_are_predicted(backend):
    seen = []

    def frames(key, n, seed):
        for frame in _clip(n, seed):
            seen.append(key)
            yield frame

    stream = predict_clips([("a", frames("a", 16, 1)), ("b", frames("b", 40, 2))], backend, batch_frames=16)
    key, _ = next(stream)
    assert key == "a" and seen.count("b") == 0  # "a" filled one batch exactly: no waiting for "b"
    assert [k for k, _ in stream] == ["b"]
