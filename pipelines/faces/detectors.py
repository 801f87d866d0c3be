"""Face detectors behind one small protocol, chosen by ``faces.backend`` in the config."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pipelines.config import FaceDetectionConfig
from pipelines.models import ModelStore


Point = tuple[float, float]


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels
    score: float
    # Five landmarks in pixels, in SCRFD's order: the eye, the other eye, nose tip, one mouth
    # corner, the other (as the image shows them: left eye on the image's left first).
    # MediaPipe gives eyes, nose and one mouth centre: both corners are that centre.
    keypoints: tuple[Point, Point, Point, Point, Point] | None = None

    @property
    def longer_side(self) -> float:
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1])


class FaceDetector(Protocol):
    name: str
    model_sha256: str | None

    def detect(self, rgb: np.ndarray) -> list[Detection]: ...

    def close(self) -> None: ...


class ScrfdDetector:
    """InsightFace SCRFD loaded through ``insightface.model_zoo`` from an ONNX file."""

    def __init__(self, model_path, input_size: int, score_threshold: float, model_sha256: str | None = None):
        from insightface.model_zoo import get_model

        self.name = f"insightface-scrfd:{model_path.name}"
        self.model_sha256 = model_sha256
        self._model = get_model(str(model_path), providers=["CPUExecutionProvider"])
        if self._model is None:
            raise RuntimeError(f"insightface could not load {model_path} as a detector")
        self._model.prepare(ctx_id=-1, input_size=(input_size, input_size), det_thresh=score_threshold)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        boxes, kpss = self._model.detect(bgr)
        out = []
        for k, row in enumerate(boxes):
            points = tuple((float(x), float(y)) for x, y in kpss[k]) if kpss is not None else None
            out.append(Detection(tuple(float(v) for v in row[:4]), float(row[4]), points))
        return out

    def close(self) -> None:
        self._model = None


class MediaPipeDetector:
    """MediaPipe Tasks ``FaceDetector`` (BlazeFace) from a local .tflite file."""

    def __init__(self, model_path, score_threshold: float, model_sha256: str | None = None):
        # MediaPipe's native logging prints INFO lines per graph start; keep warnings and up.
        os.environ.setdefault("GLOG_minloglevel", "2")
        from mediapipe.tasks.python import BaseOptions, vision

        self.name = f"mediapipe-blazeface:{model_path.name}"
        self.model_sha256 = model_sha256
        options = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_path=str(model_path)),
            min_detection_confidence=score_threshold,
        )
        self._detector = vision.FaceDetector.create_from_options(options)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        import mediapipe as mp

        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        result = self._detector.detect(image)
        out = []
        for det in result.detections:
            bb = det.bounding_box
            score = det.categories[0].score if det.categories else 0.0
            out.append(Detection((float(bb.origin_x), float(bb.origin_y),
                                  float(bb.origin_x + bb.width), float(bb.origin_y + bb.height)), float(score),
                                 _mediapipe_points(det.keypoints, rgb.shape[1], rgb.shape[0])))
        return out

    def close(self) -> None:
        if self._detector is not None:
            self._detector.close()
            self._detector = None


def _mediapipe_points(keypoints, width: int, height: int):
    """BlazeFace's six normalised keypoints (eye, eye, nose tip, mouth centre, ear, ear, in the
    model card's order) as the five-point layout: both mouth corners become the mouth centre."""
    if not keypoints or len(keypoints) < 4:
        return None
    eye_a, eye_b, nose, mouth = [(float(k.x) * width, float(k.y) * height) for k in keypoints[:4]]
    first, second = sorted((eye_a, eye_b))
    return first, second, nose, mouth, mouth


def build_detector(config: FaceDetectionConfig, models: ModelStore) -> FaceDetector:
    """The configured detector, loaded from verified files in the model directory."""
    if config.backend == "scrfd":
        status = models.status("scrfd_500m")
        path = models.path("scrfd_500m")
        return ScrfdDetector(path, config.scrfd_input_size, config.score_threshold, status.sha256)
    name = f"mediapipe_{config.mediapipe_model}"
    path = models.path(name)
    return MediaPipeDetector(path, config.score_threshold, models.status(name).sha256)


def filter_detections(detections: list[Detection], config: FaceDetectionConfig) -> list[Detection]:
    return [d for d in detections if d.score >= config.score_threshold and d.longer_side >= config.min_face_size_px]
