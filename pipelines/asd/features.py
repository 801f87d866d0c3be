"""Light-ASD inputs: MFCC audio features (100 frames/s) and 112x112 grayscale face crops (25 fps)."""

from __future__ import annotations

import cv2
import numpy as np
import python_speech_features

from pipelines.config import AUDIO_SAMPLE_RATE_HZ

SAMPLE_RATE = AUDIO_SAMPLE_RATE_HZ  # the rate Light-ASD's MFCC was trained on
MFCC_PER_SECOND = 100
MFCC_PER_VIDEO_FRAME = 4  # at 25 fps
WINDOW_SAMPLES = SAMPLE_RATE * 25 // 1000  # 25 ms
STEP_SAMPLES = SAMPLE_RATE * 10 // 1000  # 10 ms
CROP_SIZE = 112
PAD_VALUE = 110  # grey used for the part of a crop that falls outside the frame
CROP_SCALE = 0.4  # "cs" of the training-time crop rule


def mfcc(audio_int16_16k: np.ndarray) -> np.ndarray:
    """(N, 13) float32 MFCC of 16 kHz mono int16 audio, one row per 10 ms (the training setup).

    13 cepstra over 26 mel filters, 25 ms window, 10 ms step, nfft 512, preemphasis 0.97,
    lifter 22, c0 replaced by the log frame energy. The samples are used at their int16
    scale (not divided by 32768), as in training. N = 1 + ceil((samples - 400) / 160).
    """
    audio = np.asarray(audio_int16_16k)
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio (N,), got shape {audio.shape}")
    if len(audio) == 0:
        return np.zeros((0, 13), dtype=np.float32)
    features = python_speech_features.mfcc(
        audio.astype(np.float64), samplerate=SAMPLE_RATE, winlen=WINDOW_SAMPLES / SAMPLE_RATE,
        winstep=STEP_SAMPLES / SAMPLE_RATE, numcep=13, nfilt=26, nfft=512, preemph=0.97, ceplifter=22,
        appendEnergy=True)
    return np.asarray(features, dtype=np.float32)


def face_crop_112(frame_rgb: np.ndarray, box) -> np.ndarray:
    """The (112, 112) uint8 grayscale face crop Light-ASD was trained on, for one face box.

    Training-time rule, with (cx, cy) the box centre, s = max(w, h) / 2 and cs = 0.4: take
    rows [cy - s, cy + s(1 + 2cs)] and columns [cx - s(1 + cs), cx + s(1 + cs)] of the frame
    (padded with grey 110 where they fall outside it), a square of side 2.8s centred at
    (cx, cy + 0.4s); resize it to 224x224 and keep the central 112x112 (pixels 56..168).
    Keeping the middle half of a resized square is the same as cutting the middle half
    first: a square of side 1.4s centred at (cx, cy + 0.4s), i.e. rows [cy - 0.3s, cy + 1.1s]
    and columns [cx - 0.7s, cx + 0.7s], resized straight to 112x112. That is what is done
    here (bilinear, like the training resize), without building the 224x224 image.
    The frame is converted to grayscale before cropping rather than after resizing; the
    conversion is per pixel, so the order changes values by rounding only.
    """
    frame = np.asarray(frame_rgb)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got {frame.shape} {frame.dtype}")
    x1, y1, x2, y2 = (float(v) for v in box)
    s = max(x2 - x1, y2 - y1) / 2.0
    if not s > 0:
        raise ValueError(f"empty face box {box}")
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0 + CROP_SCALE * s
    half = s * (1.0 + CROP_SCALE) / 2.0  # half of the 1.4s side
    left, top = int(round(cx - half)), int(round(cy - half))
    side = max(1, int(round(2.0 * half)))
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    height, width = gray.shape
    crop = np.full((side, side), PAD_VALUE, dtype=np.uint8)
    # Copy the part of the square that lies inside the frame; the rest stays grey.
    src_x0, src_y0 = max(left, 0), max(top, 0)
    src_x1, src_y1 = min(left + side, width), min(top + side, height)
    if src_x1 > src_x0 and src_y1 > src_y0:
        crop[src_y0 - top:src_y1 - top, src_x0 - left:src_x1 - left] = gray[src_y0:src_y1, src_x0:src_x1]
    return cv2.resize(crop, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_LINEAR)
