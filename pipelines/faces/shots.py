"""Shot cuts for the face stage: a whole-frame cut detector and a per-face appearance check.

Two complementary signals end a face track at a cut:

* :class:`ShotCutDetector` feeds the decoded frames, shrunk to ``shots.analysis_width_px``
  (straight from the decoded planes), to one of PySceneDetect's detectors. It finds cuts
  where the whole picture changes, but not reliably a cut between two people framed alike
  in front of the same backdrop: on GRID bbaf2n -> brbk7n, content and histogram at their
  defaults miss it (adaptive and hash catch that pair; the issue's author measured a pair
  that all four miss), see bench/eval_cuts.py.
* :func:`face_signature` / :func:`signature_distance` describe the face itself, so the tracker
  (pipelines/faces/tracking.py) refuses an IoU match when the face changes abruptly.

The face signature (CALIBRATION below): the face is warped by a similarity transform fitted
to its five SCRFD keypoints onto a 32x32 grey template (ArcFace's standard five-point layout,
scaled), so zoom, small head motion and position drop out. The template is low-passed
(Gaussian) so blur and recompression barely move it, and zero-mean / unit-norm so exposure
and contrast do not matter; the distance is 1 - correlation (0 same, 1 unrelated, 2
inverted). Large faces are shrunk with area averaging before the warp: sampling a 300 px
face at 32 points without it aliases, and a zoom cut would then look like another face.
Without keypoints the box is resized to the template instead (coarser, still aligned to
the box).

Calibration (bench/eval_cuts.py, six GRID clips, SCRFD-500M keypoints, 1 - correlation):
same speaker, consecutive frames (speech, blinks; also zoomed 1.5x, blurred sigma 1.5,
recompressed at crf 38) and each frame against its zoomed/blurred/recompressed self: max
~0.09 (p50 <= 0.011). Different speakers at the same place (15 pairs, frame by frame): min
~0.20 (p50 0.52). The threshold 0.13 is their geometric mean: 1.5x above the worst
same-speaker distance, 1.5x below the best different-speaker one. The tracker compares with a
mean of recent signatures, which only narrows the same-speaker side. Cost: ~0.25 ms per face
on a 1080p frame (the crop is strided, never the whole frame converted).
"""

from __future__ import annotations

import cv2
import numpy as np
from scenedetect import FrameTimecode
from scenedetect.detectors import AdaptiveDetector, ContentDetector, HashDetector, HistogramDetector

from pipelines.config import ShotConfig
from pipelines.faces.detectors import Detection
from pipelines.media.decode import Frame, shrunk_rgb_to_bgr

TEMPLATE_PX = 32
# The recommended shots.max_face_distance: the geometric mean of the worst same-speaker and the
# best different-speaker distance measured by bench/eval_cuts.py (figures in the docstring).
CALIBRATED_MAX_FACE_DISTANCE = 0.13
# ArcFace's five-point reference layout for a 112 px crop (eyes, nose tip, mouth corners),
# scaled to the template. Shrunk slightly towards the centre so the template holds mostly
# face, not backdrop: two speakers in front of the same wall must differ by their faces.
_ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                         [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)
_FACE_FILL = 1.25  # >1 zooms in on the face relative to ArcFace's crop
_TEMPLATE_POINTS = ((_ARCFACE_112 - 56.0) * _FACE_FILL + 56.0) * (TEMPLATE_PX / 112.0)
_BLUR_SIGMA_PX = 1.0  # in template pixels: removes what blur and recompression change


def _grey_roi(rgb: np.ndarray, box: tuple[float, float, float, float], margin: float,
              step: int = 1) -> tuple[np.ndarray, int, int]:
    """The grey crop of ``box`` grown by ``margin`` of its size on each side, clipped to the frame,
    every ``step``-th pixel, with the crop's top-left corner in frame pixels."""
    h, w = rgb.shape[:2]
    bw, bh = box[2] - box[0], box[3] - box[1]
    x0 = int(max(0, np.floor(box[0] - margin * bw)))
    y0 = int(max(0, np.floor(box[1] - margin * bh)))
    x1 = int(min(w, np.ceil(box[2] + margin * bw)))
    y1 = int(min(h, np.ceil(box[3] + margin * bh)))
    if x1 - x0 < 2 * step or y1 - y0 < 2 * step:
        return np.zeros((2, 2), np.uint8), x0, y0
    # Only the (strided) region is converted: a full 1080p cvtColor alone costs ~1 ms.
    return cv2.cvtColor(np.ascontiguousarray(rgb[y0:y1:step, x0:x1:step]), cv2.COLOR_RGB2GRAY), x0, y0


def _normalised(template: np.ndarray) -> np.ndarray:
    smooth = cv2.GaussianBlur(template.astype(np.float32), (0, 0), _BLUR_SIGMA_PX)
    vec = smooth.ravel() - smooth.mean()
    norm = float(np.linalg.norm(vec))
    return (vec / norm if norm > 1e-6 else vec).astype(np.float32)


def face_signature(rgb: np.ndarray, detection: Detection) -> np.ndarray:
    """A unit-norm, zero-mean vector describing the face's appearance (see the module docstring)."""
    if detection.keypoints is None:
        roi, _, _ = _grey_roi(rgb, detection.box, 0.0)
        return _normalised(cv2.resize(roi, (TEMPLATE_PX, TEMPLATE_PX), interpolation=cv2.INTER_AREA))
    points = np.asarray(detection.keypoints, dtype=np.float32)
    matrix, _ = cv2.estimateAffinePartial2D(points, _TEMPLATE_POINTS, method=cv2.LMEDS)
    if matrix is None:
        roi, _, _ = _grey_roi(rgb, detection.box, 0.0)
        return _normalised(cv2.resize(roi, (TEMPLATE_PX, TEMPLATE_PX), interpolation=cv2.INTER_AREA))
    scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))  # template px per frame px
    # Large faces: sample every k-th pixel (about 2 samples per template pixel) before the warp.
    # Area averaging would alias less but costs ~2 ms on a 1080p face; the template's Gaussian
    # absorbs what striding leaves (the zoom calibration below holds with it).
    step = max(1, int(1.0 / (2.0 * scale)))
    roi, x0, y0 = _grey_roi(rgb, detection.box, 0.15, step)
    shift = np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1]], dtype=np.float64)
    stride = np.diag([float(step), float(step), 1.0])
    matrix = matrix @ shift @ stride
    template = cv2.warpAffine(roi, matrix, (TEMPLATE_PX, TEMPLATE_PX), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
    return _normalised(template)


def signature_distance(a: np.ndarray, b: np.ndarray) -> float:
    """1 - correlation of two signatures: 0 for the same face, about 1 for unrelated images."""
    return float(1.0 - np.dot(a, b))


_DETECTORS = {"content": (ContentDetector, "threshold", 27.0),
              "adaptive": (AdaptiveDetector, "adaptive_threshold", 3.0),
              "hash": (HashDetector, "threshold", 0.35),
              "histogram": (HistogramDetector, "threshold", 0.20)}


class ShotCutDetector:
    """Whole-frame shot cuts from one of PySceneDetect's detectors, fed frame by frame.

    ``step`` returns the indices of frames that start a new shot. The adaptive detector
    compares each frame with a window after it, so it reports a cut ``delay_frames`` frames
    late; the others report it on the frame itself.
    """

    def __init__(self, config: ShotConfig, fps: float):
        self.config = config
        self.fps = float(fps)
        self._min_gap_frames = config.min_shot_s * self.fps
        self._last_cut: int | None = None
        self._detector = None
        if config.detector == "none":
            self.name = "none"
            return
        cls, threshold_arg, default = _DETECTORS[config.detector]
        threshold = config.threshold if config.threshold is not None else default
        # min_scene_len=0: PySceneDetect's own filter would delay content cuts (its merge
        # mode waits out the length); min_shot_s is applied here instead, the same for all four.
        self._detector = cls(**{threshold_arg: threshold, "min_scene_len": 0})
        self.name = f"pyscenedetect-{config.detector}:{threshold:g}"

    @property
    def delay_frames(self) -> int:
        if isinstance(self._detector, AdaptiveDetector):
            return int(self._detector.window_width)
        return 0

    def analysis_size(self, width: int, height: int) -> tuple[int, int]:
        """The picture the detector compares for a width x height frame: ``analysis_width_px`` wide
        (never enlarged), same aspect."""
        analysed = min(width, self.config.analysis_width_px)
        return analysed, max(1, int(round(height * analysed / width)))

    def step(self, frame_index: int, rgb: np.ndarray) -> list[int]:
        """Feed one whole RGB frame (any size: it is shrunk to the analysis size here)."""
        if self._detector is None:
            return []
        return self._step(frame_index, shrunk_rgb_to_bgr(rgb, *self.analysis_size(rgb.shape[1], rgb.shape[0])))

    def step_frame(self, frame: Frame) -> list[int]:
        """Feed one decoded frame: its analysis picture is made from the decoded planes in one
        libswscale call (:meth:`Frame.shrunk_bgr`), no full or detection-size RGB frame."""
        if self._detector is None:
            return []
        return self._step(frame.index, frame.shrunk_bgr(*self.analysis_size(frame.width, frame.height)))

    def _step(self, frame_index: int, bgr: np.ndarray) -> list[int]:
        cuts = self._detector.process_frame(FrameTimecode(frame_index, fps=self.fps), bgr)
        out = []
        for cut in sorted(int(tc.frame_num) for tc in cuts):
            if self._last_cut is not None and cut - self._last_cut < self._min_gap_frames - 1e-9:
                continue  # closer than min_shot_s to the previous cut
            self._last_cut = cut
            out.append(cut)
        return out
