"""SyncNet (Chung & Zisserman, "Out of time: automated lip sync in the wild", ACCV workshops 2016):
audio-video offset and sync confidence of one face track, the measure LatentSync filters its
training data with.

Everything here follows the authors' release, github.com/joonson/syncnet_python at commit
6efbb1c305c23f47a62b09cf4215a8ac45e97d49 (written anew here, facts and shapes carried over):

- Network ``S`` (SyncNetModel.py:16-101): four ``nn.Sequential`` members ``netcnnaud``,
  ``netfcaud``, ``netcnnlip``, ``netfclip``; the layer order below is theirs, so the state dict
  keys ("netcnnaud.0.weight", "netcnnlip.1.running_mean", ...) are the published ones.
  Audio (N, 1, 13, 20) MFCC -> (N, 512, 1, 1) -> 1024; video (N, 3, 5, 224, 224) -> (N, 512, 1, 1, 1)
  -> 1024 (forward_aud / forward_lip, SyncNetModel.py:103-117).
- Weights: ``loadParameters`` (SyncNetInstance.py:201-208) copies every key of the loaded dict
  into ``S().state_dict()`` by its own name: no prefix. LatentSync loads the same file with
  ``weights_only=True`` (bytedance/LatentSync@a229c39, eval/syncnet/syncnet_eval.py:214), so it
  is a plain dict of tensors. :func:`load_syncnet` loads it strictly.
- Video input (SyncNetInstance.py:65-77, 103-110): the 224x224 face-crop video at 25 fps, frames
  as cv2 reads them (BGR, uint8 values as float, no normalisation), windows of 5 frames starting
  at every frame 0 .. min_length - 6.
- Audio input (SyncNetInstance.py:83-88, 115): 16 kHz mono int16, ``python_speech_features.mfcc``
  with its defaults (13 cepstra, 25 ms window, 10 ms step), laid out (1, 1, 13, frames); window i
  is MFCC frames 4i .. 4i + 19 (0.2 s starting at video frame i).
- Length (SyncNetInstance.py:97, 103): min_length = min(video frames, floor(samples / 640)); the
  windows are range(0, min_length - 5).
- Crop (run_pipeline.py:111-147): per detection box s = max(w, h) / 2 and centre (x, y), each
  median-filtered over 13 frames (scipy.signal.medfilt); with cs = 0.4 (``--crop_scale``,
  run_pipeline.py:29) the frame padded by int(s(1 + 2cs)) with value 110 is cut at rows
  [y - s, y + s(1 + 2cs)), columns [x - s(1 + cs), x + s(1 + cs)) and resized to 224x224
  (cv2.resize, bilinear).
- Offset (SyncNetInstance.py:19-31, 129-135): ``calc_pdist`` pads the audio embeddings with
  ``vshift`` zero rows at each end and, for each video window i, takes the Euclidean distance
  (torch pairwise_distance, eps 1e-6) to audio windows i - vshift .. i + vshift; the mean over i
  gives the curve mdist (2 vshift + 1,); their offset = vshift - argmin, confidence =
  median(mdist) - min(mdist). vshift = 15 in run_syncnet.py:13 and LatentSync's
  syncnet_eval.py:47.

Sign: their row j pairs video window i with audio window i + j - vshift, and their offset is
vshift - j, so audio heard d frames late (best at j = vshift + d) reads -d there (LatentSync's
preprocess/sync_av.py:42-43 fixes a clip by delaying its audio by that offset). This module
uses the project's convention (pipelines/asd/sync.py): positive = audio late, i.e. ours =
argmin - vshift = -theirs.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

SYNCNET_FPS = 25.0  # SyncNetInstance.py:3 "Video 25 FPS, Audio 16000HZ"
SYNCNET_RATE = 16000
SAMPLES_PER_FRAME = 640  # 16000 / 25 (SyncNetInstance.py:97)
WINDOW_FRAMES = 5  # video frames per window (SyncNetInstance.py:110)
MFCC_PER_FRAME = 4  # 100 MFCC frames/s over 25 video frames/s (SyncNetInstance.py:115)
MFCC_WINDOW = 20  # MFCC frames per audio window (SyncNetInstance.py:115)
CROP_PX = 224
CROP_SCALE = 0.4  # run_pipeline.py:29 --crop_scale
CROP_PAD_VALUE = 110  # run_pipeline.py:141
BOX_MEDFILT = 13  # run_pipeline.py:127-129
VSHIFT = 15  # run_syncnet.py:13; LatentSync eval/syncnet/syncnet_eval.py:47 (the threshold below is read at 15)
EMBEDDING = 1024  # num_layers_in_fc_layers (SyncNetModel.py:17)
BATCH = 20  # run_syncnet.py:12 --batch_size

# The rejection threshold is config (sync.syncnet_min_confidence, default 3): LatentSync keeps a
# training clip only when conf >= 3 and |offset| <= 6 (bytedance/LatentSync@a229c39
# preprocess/sync_av.py:65; the 3 is --sync_conf_threshold, data_processing_pipeline.sh:7 and
# preprocess/data_processing_pipeline.py:78), read with syncnet_v2.model and VSHIFT = 15.

REGISTRY_NAME = "syncnet"


def build_network(embedding: int = EMBEDDING):
    """The ``S`` network of SyncNetModel.py:16-101, with its parameter names."""
    from torch import nn

    def conv2(cin, cout, kernel, stride=(1, 1), padding=(1, 1), inplace=True):
        return [nn.Conv2d(cin, cout, kernel_size=kernel, stride=stride, padding=padding), nn.BatchNorm2d(cout),
                nn.ReLU(inplace=inplace)]

    def conv3(cin, cout, kernel, stride=(1, 1, 1), padding=(0, 1, 1)):
        return [nn.Conv3d(cin, cout, kernel_size=kernel, stride=stride, padding=padding), nn.BatchNorm3d(cout),
                nn.ReLU(inplace=True)]

    def head():
        return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embedding))

    class S(nn.Module):
        def __init__(self):
            super().__init__()
            # Indices matter: they are the state dict's key names (pools and ReLUs hold none).
            self.netcnnaud = nn.Sequential(
                *conv2(1, 64, (3, 3)), nn.MaxPool2d(kernel_size=(1, 1), stride=(1, 1)),  # 0-3
                *conv2(64, 192, (3, 3)), nn.MaxPool2d(kernel_size=(3, 3), stride=(1, 2)),  # 4-7
                *conv2(192, 384, (3, 3)),  # 8-10
                *conv2(384, 256, (3, 3)),  # 11-13
                *conv2(256, 256, (3, 3)), nn.MaxPool2d(kernel_size=(3, 3), stride=(2, 2)),  # 14-17
                *conv2(256, 512, (5, 4), padding=(0, 0), inplace=False),  # 18-20
            )
            self.netfcaud = head()
            self.netfclip = head()
            self.netcnnlip = nn.Sequential(
                *conv3(3, 96, (5, 7, 7), stride=(1, 2, 2), padding=0),
                nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),  # 0-3
                *conv3(96, 256, (1, 5, 5), stride=(1, 2, 2)),
                nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),  # 4-7
                *conv3(256, 256, (1, 3, 3)),  # 8-10
                *conv3(256, 256, (1, 3, 3)),  # 11-13
                *conv3(256, 256, (1, 3, 3)), nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),  # 14-17
                *conv3(256, 512, (1, 6, 6), padding=0),  # 18-20
            )

        def forward_aud(self, x):
            return self.netfcaud(self.netcnnaud(x).flatten(1))

        def forward_lip(self, x):
            return self.netfclip(self.netcnnlip(x).flatten(1))

    return S()


class SyncNetWeightsError(ValueError):
    """A weights file that is not a state dict of the published ``S`` layout."""


def load_syncnet(path: Path | str, device: str = "cpu"):
    """``S`` with the weights at ``path`` (the published ``syncnet_v2.model``), in eval mode.

    Strict: every key and shape of the file must be the network's. The one allowance is
    BatchNorm's ``num_batches_tracked`` counters, which PyTorch added (0.4.1) after the 2016
    release and which inference never reads: missing ones are filled with 0.
    """
    import torch

    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SyncNetWeightsError(f"{path}: expected a state dict of tensors (SyncNetModel.py S), got {type(state).__name__}")
    net = build_network()
    expected = net.state_dict()
    state = dict(state)
    for key in expected:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros((), dtype=torch.long)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise SyncNetWeightsError(
            f"{path}: not the syncnet_v2.model layout (keys of SyncNetModel.py S, no prefix): "
            f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
             if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise SyncNetWeightsError(f"{path}: tensor shapes differ from SyncNetModel.py S: {', '.join(wrong[:5])}")
    net.load_state_dict(state, strict=True)
    return net.to(device).eval()


_LOADED: dict[tuple[str, str], object] = {}
_LOADED_LOCK = threading.Lock()


def cached_syncnet(path: Path | str, device: str = "cpu"):
    """:func:`load_syncnet`, once per (file, device) in this process."""
    key = (str(Path(path).resolve()), device)
    with _LOADED_LOCK:
        if key not in _LOADED:
            _LOADED[key] = load_syncnet(path, device)
        return _LOADED[key]


# ---- inputs ---------------------------------------------------------------------------------


def smoothed_boxes(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(s, x, y) per frame of (T, 4) x1, y1, x2, y2 boxes: half the longer side and the centre, each
    median-filtered over 13 frames as run_pipeline.py:121-129 does."""
    from scipy.signal import medfilt

    b = np.asarray(boxes, dtype=np.float64)
    s = np.maximum(b[:, 3] - b[:, 1], b[:, 2] - b[:, 0]) / 2
    x, y = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    return tuple(medfilt(v, kernel_size=BOX_MEDFILT) for v in (s, x, y))  # type: ignore[return-value]


def face_crop_224(frame_bgr: np.ndarray, s: float, x: float, y: float) -> np.ndarray:
    """The (224, 224, 3) crop of run_pipeline.py:134-147 for half-size ``s`` and centre (x, y)."""
    if not s > 0:
        raise ValueError(f"empty face box (half side {s})")
    pad = int(s * (1 + 2 * CROP_SCALE))
    frame = np.pad(frame_bgr, ((pad, pad), (pad, pad), (0, 0)), mode="constant", constant_values=CROP_PAD_VALUE)
    my, mx = y + pad, x + pad
    face = frame[int(my - s):int(my + s * (1 + 2 * CROP_SCALE)),
                 int(mx - s * (1 + CROP_SCALE)):int(mx + s * (1 + CROP_SCALE))]
    return cv2.resize(face, (CROP_PX, CROP_PX))


def frames_at_25(n: int, fps: float) -> np.ndarray:
    """Indices of ``n`` frames at ``fps`` shown at each 25 fps instant (sampling by time, as
    pipelines/asd/stage.py face_track_25 does for Light-ASD)."""
    t25 = np.arange(int(np.floor(n / fps * SYNCNET_FPS + 1e-6))) / SYNCNET_FPS
    return np.minimum((t25 * fps + 1e-9).astype(int), n - 1)


def face_video_25(frames_rgb, boxes: np.ndarray, fps: float) -> np.ndarray:
    """(T25, 224, 224, 3) uint8 BGR SyncNet crops of a track: ``frames_rgb`` (an iterable of RGB
    frames, e.g. our 384 px clip) with ``boxes`` (T, 4) in the same pixels, sampled at 25 fps."""
    s, x, y = smoothed_boxes(boxes)
    crops = [face_crop_224(cv2.cvtColor(np.asarray(frame), cv2.COLOR_RGB2BGR), s[j], x[j], y[j])
             for j, frame in zip(range(len(boxes)), frames_rgb)]
    return np.stack([crops[j] for j in frames_at_25(len(crops), fps)])


def audio_mfcc(audio_int16: np.ndarray) -> np.ndarray:
    """(13, frames) MFCC of 16 kHz int16 audio, python_speech_features' defaults (SyncNetInstance.py:84-85)."""
    import python_speech_features

    audio = np.asarray(audio_int16)
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio, got shape {audio.shape}")
    return np.asarray(python_speech_features.mfcc(audio, SYNCNET_RATE), dtype=np.float32).T


def window_count(video_frames: int, audio_samples: int) -> int:
    """Windows SyncNetInstance.evaluate embeds: min_length - 5 (lines 97, 103, 108)."""
    return max(0, min(video_frames, audio_samples // SAMPLES_PER_FRAME) - WINDOW_FRAMES)


def embeddings(net, video_bgr: np.ndarray, audio_int16: np.ndarray, batch: int = BATCH):
    """(video (W, 1024), audio (W, 1024)) float32 tensors of the W windows of a (T, 224, 224, 3)
    BGR crop video at 25 fps and its 16 kHz audio (starting with the first frame)."""
    import torch

    video = np.asarray(video_bgr)
    if video.ndim != 4 or video.shape[1:] != (CROP_PX, CROP_PX, 3):
        raise ValueError(f"expected (T, 224, 224, 3) crops, got {video.shape}")
    count = window_count(len(video), len(audio_int16))
    if count == 0:
        raise ValueError(f"too short for SyncNet: {len(video)} frames, {len(audio_int16)} samples "
                         f"(needs {WINDOW_FRAMES + 1} frames of both)")
    mfcc = torch.from_numpy(audio_mfcc(audio_int16))[None, None]  # (1, 1, 13, F)
    device = next(net.parameters()).device
    lips, auds = [], []
    with torch.inference_mode():
        for start in range(0, count, batch):
            idx = range(start, min(count, start + batch))
            clip = torch.stack([torch.from_numpy(video[i:i + WINDOW_FRAMES]) for i in idx])  # (B, 5, H, W, C)
            lips.append(net.forward_lip(clip.permute(0, 4, 1, 2, 3).float().to(device)).cpu())
            aud = torch.cat([mfcc[..., i * MFCC_PER_FRAME:i * MFCC_PER_FRAME + MFCC_WINDOW] for i in idx])
            auds.append(net.forward_aud(aud.to(device)).cpu())
    return torch.cat(lips), torch.cat(auds)


# ---- offset -----------------------------------------------------------------------------------


def calc_pdist(video_feat, audio_feat, vshift: int = VSHIFT):
    """(2 vshift + 1, W) distances: row j, column i = ||video_i - audio_{i + j - vshift}|| with zero
    vectors beyond the ends (SyncNetInstance.py:19-31, the same eps), all shifts in one call."""
    import torch

    video_feat, audio_feat = torch.as_tensor(video_feat), torch.as_tensor(audio_feat)
    count = len(video_feat)
    padded = torch.nn.functional.pad(audio_feat, (0, 0, vshift, vshift))
    # (W, 2v + 1, D): window i's audio rows i .. i + 2v of the padded features.
    windows = padded.unfold(0, 2 * vshift + 1, 1)[:count].transpose(1, 2)
    dists = torch.nn.functional.pairwise_distance(video_feat[:, None, :].expand_as(windows), windows, eps=1e-6)
    return dists.T


@dataclass(frozen=True)
class SyncNetReading:
    """SyncNet's reading of one face track (25 fps frames; positive offset: the audio is late)."""

    offset_frames: int
    min_distance: float
    confidence: float
    curve: np.ndarray  # (2 vshift + 1,) mean distance per shift, shift k = -vshift..vshift (ours)

    @property
    def offset_s(self) -> float:
        return self.offset_frames / SYNCNET_FPS

    def summary(self) -> dict:
        vshift = len(self.curve) // 2
        return {"method": "syncnet", "model": "syncnet_v2", "shifts": list(range(-vshift, vshift + 1)),
                "mean_distance": [round(float(v), 4) for v in self.curve], "fps": SYNCNET_FPS,
                "offset_frames": self.offset_frames, "min_distance": round(self.min_distance, 4),
                "confidence": round(self.confidence, 4)}


def offset_and_confidence(dists) -> SyncNetReading:
    """The reading of a (2 vshift + 1, W) distance table (rows in calc_pdist's order, i.e.
    the authors' shift order): mean over windows, min, median - min, and the argmin as our
    offset argmin - vshift (theirs, SyncNetInstance.py:134, is vshift - argmin)."""
    table = np.asarray(dists, dtype=np.float64)
    if table.ndim != 2 or table.shape[0] % 2 != 1 or table.shape[1] == 0:
        raise ValueError(f"expected (2 vshift + 1, windows) distances, got shape {table.shape}")
    curve = table.mean(axis=1)
    index = int(np.argmin(curve))  # torch.min: the first minimum
    vshift = len(curve) // 2
    return SyncNetReading(offset_frames=index - vshift, min_distance=float(curve[index]),
                          confidence=float(np.median(curve) - curve[index]), curve=curve)


def measure(net, video_bgr: np.ndarray, audio_int16: np.ndarray, vshift: int = VSHIFT) -> SyncNetReading:
    """SyncNet's offset and confidence of a (T, 224, 224, 3) BGR crop video and its audio (16 kHz,
    first sample at the first frame): embeddings once, then the distances at every shift."""
    video_feat, audio_feat = embeddings(net, video_bgr, audio_int16)
    return offset_and_confidence(calc_pdist(video_feat, audio_feat, vshift).numpy())
