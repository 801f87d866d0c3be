"""detect_batch: one forward pass per batch where the SCRFD file takes a dynamic batch, per image
where it is fixed at 1 (the mirrored files), and the same detections either way (real weights,
real GRID frames)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from pipelines.faces.detectors import MediaPipeDetector, ScrfdDetector, scrfd_graph_with_free_axes
from pipelines.media.decode import iter_video_frames

pytestmark = pytest.mark.real_weights


@pytest.fixture(scope="module")
def frames(grid_clips: list[Path]) -> list[np.ndarray]:
    """Six frames of two GRID clips (one face each) and one black frame (no face)."""
    out = []
    for clip in grid_clips[:2]:
        out.extend(frame for k, frame in zip(range(60), iter_video_frames(clip)) if k % 20 == 0)
    out.append(np.zeros_like(out[0]))
    return out


def _dynamic_batch_copy(source: Path, target: Path) -> Path:
    """The ONNX file with its batch dimension made symbolic (every reshape in these graphs takes
    its shape from the tensor, so nothing else needs to change)."""
    target.write_bytes(scrfd_graph_with_free_axes(source, batch=True))
    return target


def _same(a, b, tolerance=1e-3):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.box, y.box, atol=tolerance)
        assert abs(x.score - y.score) < 1e-4
        np.testing.assert_allclose(np.array(x.keypoints), np.array(y.keypoints), atol=tolerance)


def test_the_mirrored_file_is_fixed_at_batch_one_and_runs_per_image(scrfd_model, frames):
    session = onnxruntime.InferenceSession(str(scrfd_model), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, 640, 640]
    with pytest.raises(Exception, match="index: 0 Got: 2 Expected: 1"):
        session.run(None, {session.get_inputs()[0].name: np.zeros((2, 3, 640, 640), np.float32)})
    detector = ScrfdDetector(scrfd_model, 640, 0.5)
    assert detector.max_batch == 1
    batched = detector.detect_batch(frames)
    assert [len(d) for d in batched] == [1] * 6 + [0]
    for image, detections in zip(frames, batched):
        _same(detections, detector.detect(image), tolerance=0)


def test_a_dynamic_batch_file_runs_one_pass_with_the_same_detections(scrfd_model, frames, tmp_path):
    single = ScrfdDetector(scrfd_model, 640, 0.5)
    dynamic = ScrfdDetector(_dynamic_batch_copy(scrfd_model, tmp_path / "scrfd_dynamic.onnx"), 640, 0.5)
    assert dynamic.max_batch is None
    calls = []
    session = dynamic._model.session
    run = session.run
    session.run = lambda names, feed: calls.append(next(iter(feed.values())).shape[0]) or run(names, feed)
    batched = dynamic.detect_batch(frames)
    assert calls == [len(frames)]  # one forward pass for all seven frames
    assert [len(d) for d in batched] == [1] * 6 + [0]
    for image, detections in zip(frames, batched):
        _same(detections, single.detect(image))
    assert dynamic.detect_batch([]) == []


def test_mediapipe_has_no_batch_api_and_loops(model_dir, frames):
    path = model_dir / "mediapipe" / "face_detection_short_range.tflite"
    if not path.is_file():
        pytest.skip("MediaPipe model not in the model dir")
    detector = MediaPipeDetector(path, 0.5)
    try:
        batched = detector.detect_batch(frames[:3])
        assert detector.max_batch == 1 and all(len(d) == 1 for d in batched)
        for image, detections in zip(frames[:3], batched):
            _same(detections, detector.detect(image), tolerance=0)
    finally:
        detector.close()
