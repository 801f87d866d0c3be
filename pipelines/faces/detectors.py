"""Face detectors behind one small protocol, chosen by ``faces.backend`` in the config."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pipelines.config import FaceDetectionConfig
from pipelines.models import ModelStore


Point = tuple[float, float]
SCRFD_STRIDE = 32  # SCRFD's coarsest feature stride: its input sides are multiples of it


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

    def detect_batch(self, images: list[np.ndarray]) -> list[list[Detection]]: ...

    def close(self) -> None: ...


class ScrfdDetector:
    """InsightFace SCRFD loaded through ``insightface.model_zoo`` from an ONNX file.

    :meth:`detect_batch` runs several images through one ``session.run`` when the file's input
    takes a dynamic batch dimension, and one image at a time when it is fixed at 1. Measured on
    the files here (bench/README.md, "Batching, CUDA and workers"): both mirrored files
    (scrfd_500m_kps.onnx, scrfd_2.5g_kps.onnx) declare a fixed input [1, 3, 640, 640] and
    onnxruntime refuses a batch of 2, so they run per image; their graphs compute every reshape
    from the tensor's own shape, and a copy whose batch dimension is made symbolic runs batches
    with outputs within 1.2e-6 of single images. InsightFace's ``det_500m.onnx`` (buffalo_sc)
    declares a dynamic batch and size. InsightFace's own ``SCRFD.batched`` flag only says that
    the outputs carry a leading batch axis; it always runs one image.

    ``fit_input``: the network runs at the image's own size (:meth:`network_input`) from an
    in-memory copy of the graph with a free height and width, instead of letterboxing every image
    into the ``input_size`` square; on a 360x288 GRID frame that is a 384x288 input instead of
    640x640 with the frame enlarged 1.78x (bench/results/detector_input.md).
    """

    def __init__(self, model_path, input_size: int, score_threshold: float, model_sha256: str | None = None,
                 device: str = "cpu", fit_input: bool = False):
        from pipelines.devices import onnx_providers, onnx_session_options

        self.name = f"insightface-scrfd:{model_path.name}"
        self.model_sha256 = model_sha256
        self.providers = onnx_providers(device)
        self.input_size = int(input_size)
        self.fit_input = bool(fit_input)
        options = onnx_session_options()
        if self.fit_input:
            import onnxruntime
            from insightface.model_zoo.scrfd import SCRFD

            graph = scrfd_graph_with_free_axes(model_path, image_size=True)
            session = onnxruntime.InferenceSession(graph, options, providers=self.providers)
            self._model = SCRFD(model_file=None, session=session)
        else:
            from insightface.model_zoo import get_model

            self._model = get_model(str(model_path), providers=self.providers, sess_options=options)
        if self._model is None:
            raise RuntimeError(f"insightface could not load {model_path} as a detector")
        # ctx_id < 0 makes insightface reset the session to the CPU provider alone.
        self._model.prepare(ctx_id=0 if device == "cuda" else -1, input_size=(input_size, input_size),
                            det_thresh=score_threshold)
        self._score_threshold = score_threshold
        batch_dim = self._model.session.get_inputs()[0].shape[0]
        # A symbolic name or None is a dynamic dimension; an int is fixed.
        self.max_batch = None if not isinstance(batch_dim, int) else batch_dim

    @property
    def session_providers(self) -> list[str]:
        """The providers onnxruntime actually placed the session on."""
        return list(self._model.session.get_providers())

    def network_input(self, height: int, width: int) -> tuple[int, int]:
        """(width, height) of the network input for an image of this size: the ``input_size`` square
        the image is letterboxed into, or with ``fit_input`` the image's own size with each side
        rounded up to SCRFD's coarsest stride (32), scaled down first to fit the square when larger."""
        if not self.fit_input:
            return self.input_size, self.input_size
        scale = min(1.0, self.input_size / max(height, width))
        return (int(math.ceil(width * scale / SCRFD_STRIDE)) * SCRFD_STRIDE,
                int(math.ceil(height * scale / SCRFD_STRIDE)) * SCRFD_STRIDE)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        boxes, kpss = self._model.detect(bgr, input_size=self.network_input(*rgb.shape[:2]))
        return _scrfd_detections(boxes, kpss)

    def detect_batch(self, images: list[np.ndarray]) -> list[list[Detection]]:
        """:meth:`detect` of each RGB image, in one forward pass per ``max_batch`` images where the
        model file allows more than one (dynamic batch dimension), else one image at a time."""
        if self.max_batch == 1 or len(images) <= 1:
            return [self.detect(image) for image in images]
        step = self.max_batch or len(images)
        out: list[list[Detection]] = []
        for first in range(0, len(images), step):
            out.extend(self._detect_together(images[first:first + step]))
        return out

    def _detect_together(self, images: list[np.ndarray]) -> list[list[Detection]]:
        """One session.run over letterboxed images; decoded per image as insightface's ``detect``
        does (anchors, threshold, score order, rescale, NMS)."""
        from insightface.model_zoo.scrfd import distance2bbox, distance2kps

        model = self._model
        width, height = self.network_input(*images[0].shape[:2])
        if any(self.network_input(*image.shape[:2]) != (width, height) for image in images):
            return [self.detect(image) for image in images]  # one forward pass takes one input size
        blobs, scales = [], []
        for rgb in images:
            canvas, scale = _letterbox(rgb, width, height)
            blobs.append(((canvas.astype(np.float32) - model.input_mean) / model.input_std).transpose(2, 0, 1))
            scales.append(scale)
        outputs = model.session.run(model.output_names, {model.input_name: np.stack(blobs)})
        results = []
        for index, scale in enumerate(scales):
            scores_all, boxes_all, points_all = [], [], []
            for level, stride in enumerate(model._feat_stride_fpn):
                scores = outputs[level][index].reshape(-1)
                distances = outputs[level + model.fmc][index] * stride
                centres = _anchor_centres(height // stride, width // stride, stride, model._num_anchors)
                keep = np.flatnonzero(scores >= self._score_threshold)
                scores_all.append(scores[keep])
                boxes_all.append(distance2bbox(centres, distances)[keep])
                if model.use_kps:
                    points = distance2kps(centres, outputs[level + 2 * model.fmc][index] * stride)
                    points_all.append(points.reshape(len(points), -1, 2)[keep])
            scores = np.concatenate(scores_all)
            if len(scores) == 0:
                results.append([])
                continue
            order = np.argsort(-scores, kind="stable")
            candidates = np.hstack([np.concatenate(boxes_all) / scale, scores[:, None]]).astype(np.float32)[order]
            points = np.concatenate(points_all)[order] / scale if model.use_kps else None
            keep = model.nms(candidates)
            results.append(_scrfd_detections(candidates[keep], points[keep] if points is not None else None))
        return results

    def close(self) -> None:
        self._model = None


def scrfd_graph_with_free_axes(model_path, *, batch: bool = False, image_size: bool = False) -> bytes:
    """The SCRFD ONNX model's bytes with its batch axis and/or the height and width of its image
    input (with the anchor axis of its outputs) made symbolic, so onnxruntime takes any; the file
    itself is not changed.

    The mirrored SCRFD files declare a fixed [1, 3, 640, 640] input, but their graphs compute every
    reshape and upsampling size from the tensor's own shape (checked: each Reshape's and Resize's
    size comes from a Concat of Shape values), as InsightFace's own det_500m.onnx, which declares a
    dynamic batch and size, runs batches at any multiple of 32 (its det_size)."""
    import onnx

    model = onnx.load(str(model_path))
    if len(model.graph.input) != 1 or len(model.graph.input[0].type.tensor_type.shape.dim) != 4:
        raise ValueError(f"{model_path}: expected one NCHW image input")
    if batch:
        for value in [*model.graph.input, *model.graph.output]:
            value.type.tensor_type.shape.dim[0].dim_param = "batch"
    if image_size:
        for axis, name in ((2, "height"), (3, "width")):
            dim = model.graph.input[0].type.tensor_type.shape.dim[axis]
            dim.ClearField("dim_value")
            dim.dim_param = name
        for output in model.graph.output:
            dims = output.type.tensor_type.shape.dim
            if len(dims) >= 2:
                dims[len(dims) - 2].ClearField("dim_value")
                dims[len(dims) - 2].dim_param = f"{output.name}_anchors"
    return model.SerializeToString()


def _letterbox(rgb: np.ndarray, width: int, height: int) -> tuple[np.ndarray, float]:
    """The image resized to fit (width, height) keeping its aspect, at the top left of a black
    canvas (insightface's SCRFD preprocessing), and the scale applied."""
    import cv2

    if rgb.shape[0] / rgb.shape[1] > height / width:
        new_height, new_width = height, int(height / (rgb.shape[0] / rgb.shape[1]))
    else:
        new_width, new_height = width, int(width * rgb.shape[0] / rgb.shape[1])
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    canvas[:new_height, :new_width] = cv2.resize(rgb, (new_width, new_height))
    return canvas, new_height / rgb.shape[0]


def _anchor_centres(rows: int, cols: int, stride: int, anchors: int) -> np.ndarray:
    centres = (np.stack(np.mgrid[:rows, :cols][::-1], axis=-1).astype(np.float32) * stride).reshape(-1, 2)
    return np.repeat(centres, anchors, axis=0) if anchors > 1 else centres


def _scrfd_detections(boxes: np.ndarray, kpss: np.ndarray | None) -> list[Detection]:
    out = []
    for k, row in enumerate(boxes):
        points = tuple((float(x), float(y)) for x, y in kpss[k]) if kpss is not None else None
        out.append(Detection(tuple(float(v) for v in row[:4]), float(row[4]), points))
    return out


class MediaPipeDetector:
    """MediaPipe Tasks ``FaceDetector`` (BlazeFace) from a local .tflite file.

    MediaPipe's Python ``FaceDetector`` takes one image per call (``detect``,
    ``detect_for_video``) and has no batch API: ``detect_batch`` loops. It runs with the Tasks
    API's default CPU delegate; its GPU delegate is not wired or measured here, so
    ``device: cuda`` is refused rather than silently run on the CPU.
    """

    max_batch = 1

    def __init__(self, model_path, score_threshold: float, model_sha256: str | None = None, device: str = "cpu"):
        if device != "cpu":
            from pipelines.devices import DeviceUnavailable

            raise DeviceUnavailable(f"faces.device: {device}, but the MediaPipe face detector runs on the CPU only "
                                    "(use faces.backend: scrfd with onnxruntime-gpu for a GPU)")
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

    def detect_batch(self, images: list[np.ndarray]) -> list[list[Detection]]:
        """:meth:`detect` of each image (MediaPipe has no batch API)."""
        return [self.detect(image) for image in images]

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
        return ScrfdDetector(path, config.scrfd_input_size, config.score_threshold, status.sha256, config.device,
                             fit_input=config.scrfd_fit_input)
    name = f"mediapipe_{config.mediapipe_model}"
    path = models.path(name)
    return MediaPipeDetector(path, config.score_threshold, models.status(name).sha256, config.device)


def filter_detections(detections: list[Detection], config: FaceDetectionConfig) -> list[Detection]:
    return [d for d in detections if d.score >= config.score_threshold and d.longer_side >= config.min_face_size_px]
