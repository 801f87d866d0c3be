"""Per-frame speaking probability of one face track with Light-ASD, in overlapping windows.

The published Light-ASD score is the raw logit ``lossAV.FC(x)[:, 1]``, not a probability.
Here the probability of speaking is defined as the softmax of the audio-visual head's two
logits, taking the "speaking" entry: p = exp(l1) / (exp(l0) + exp(l1)) = sigmoid(l1 - l0).
A threshold such as 0.5 on p is then "speaking logit above not-speaking logit".

Long tracks run in windows of ``window_frames`` video frames that overlap by
``overlap_frames``; the windows are batched through the network and their logits combined
per frame with a linear cross-fade over each overlap (weights that rise across a window's
leading overlap and fall across its trailing one, normalised per frame). The network is
bidirectional over its window, so frames near a window edge see less context; the
cross-fade gives each overlap frame mostly to the window in which it lies further inside.
Everything is deterministic: fixed window placement and no sampling.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipelines.asd.features import CROP_SIZE, MFCC_PER_VIDEO_FRAME, STEP_SAMPLES, WINDOW_SAMPLES, mfcc
from pipelines.asd.model import load_light_asd


def probability_from_logits(logits) -> np.ndarray | torch.Tensor:
    """P(speaking) = softmax over the last axis' two logits, entry 1 (numpy or torch in, same out)."""
    if isinstance(logits, torch.Tensor):
        return torch.softmax(logits.float(), dim=-1)[..., 1]
    values = np.asarray(logits, dtype=np.float64)
    if values.shape[-1] != 2:
        raise ValueError(f"expected two logits on the last axis, got shape {values.shape}")
    # softmax(...)[1] of two logits is sigmoid(l1 - l0); the tanh form avoids exp overflow.
    diff = values[..., 1] - values[..., 0]
    return (0.5 * (1.0 + np.tanh(0.5 * diff))).astype(np.float32)


def audio_features_for_frames(audio_int16_16k: np.ndarray, frames: int) -> np.ndarray:
    """(4 * frames, 13) MFCC aligned to ``frames`` video frames at 25 fps from the audio's start.

    Audio shorter than the video is padded with digital silence (zero samples) before the
    MFCC, so that it yields at least 4 * frames rows; longer audio is cut. Row i covers
    samples [160 i, 160 i + 400), i.e. starts at i * 10 ms, as in training.
    """
    audio = np.asarray(audio_int16_16k)
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio (N,), got shape {audio.shape}")
    rows = MFCC_PER_VIDEO_FRAME * frames
    if rows == 0:
        return np.zeros((0, 13), dtype=np.float32)
    needed = STEP_SAMPLES * (rows - 1) + WINDOW_SAMPLES
    if len(audio) < needed:
        audio = np.concatenate([audio, np.zeros(needed - len(audio), dtype=audio.dtype)])
    else:
        audio = audio[:needed]
    features = mfcc(audio)
    if len(features) < rows:  # cannot happen with the padding above; kept as a guard
        features = np.concatenate([features, np.zeros((rows - len(features), 13), np.float32)])
    return features[:rows]


def window_starts(frames: int, window: int, overlap: int) -> list[int]:
    """Start frames of the windows covering ``frames``: stride window - overlap, last one flush with the end."""
    if frames <= window:
        return [0]
    stride = window - overlap
    starts = list(range(0, frames - window + 1, stride))
    if starts[-1] + window < frames:
        starts.append(frames - window)
    return starts


def _cross_fade_weights(length: int, overlap: int, first: bool, last: bool) -> np.ndarray:
    weights = np.ones(length, dtype=np.float64)
    ramp = np.arange(1, overlap + 1, dtype=np.float64) / (overlap + 1)  # strictly inside (0, 1)
    if overlap and not first:
        weights[:overlap] = ramp
    if overlap and not last:
        weights[length - overlap:] = ramp[::-1]
    return weights


class ActiveSpeakerScorer:
    """Light-ASD speaking probability per frame of a face track (CPU or CUDA).

    ``faces``: (T, 112, 112) uint8 grayscale crops from :func:`pipelines.asd.features.face_crop_112`
    at 25 fps; ``audio``: int16 mono 16 kHz samples starting at the first face frame's time.
    ``batch_windows`` windows go through the network at once (default: 8 on a GPU, 1 on CPU).
    """

    def __init__(self, model_path: str | Path, device: str = "cpu", window_frames: int = 100,
                 overlap_frames: int = 25, batch_windows: int | None = None):
        if window_frames < 1 or not 0 <= overlap_frames < window_frames:
            raise ValueError(f"need window_frames >= 1 and 0 <= overlap_frames < window_frames, "
                             f"got {window_frames} and {overlap_frames}")
        self.device = torch.device(device)
        if batch_windows is None:
            # On CPU a batch of windows is no faster per frame than one window at a time (the
            # activations of a 100-frame window already exceed the caches); a GPU gains from it.
            batch_windows = 1 if self.device.type == "cpu" else 8
        if batch_windows < 1:
            raise ValueError(f"batch_windows must be >= 1, got {batch_windows}")
        self.window_frames = window_frames
        self.overlap_frames = overlap_frames
        self.batch_windows = batch_windows
        self.model = load_light_asd(model_path, self.device)

    def logits(self, faces: np.ndarray, audio: np.ndarray) -> np.ndarray:
        """(T, 2) float32 audio-visual logits (index 1: speaking)."""
        faces = self._check_faces(faces)
        return self.logits_from_features(audio_features_for_frames(audio, len(faces)), faces)

    def probabilities(self, faces: np.ndarray, audio: np.ndarray) -> np.ndarray:
        """(T,) float32 probability that the face is speaking, per frame."""
        return probability_from_logits(self.logits(faces, audio))

    def logits_from_features(self, audio_mfcc: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """Windowed inference on ready features: MFCC (4T, 13) and faces (T, 112, 112)."""
        faces = self._check_faces(faces)
        frames = len(faces)
        if audio_mfcc.shape != (MFCC_PER_VIDEO_FRAME * frames, 13):
            raise ValueError(f"expected MFCC of shape ({MFCC_PER_VIDEO_FRAME * frames}, 13) for {frames} frames, "
                             f"got {audio_mfcc.shape}")
        if frames == 0:
            return np.zeros((0, 2), dtype=np.float32)
        window = min(self.window_frames, frames)
        starts = window_starts(frames, window, self.overlap_frames)
        total = np.zeros((frames, 2), dtype=np.float64)
        weight_sum = np.zeros(frames, dtype=np.float64)
        with torch.no_grad():
            for first in range(0, len(starts), self.batch_windows):
                batch = starts[first:first + self.batch_windows]
                video = torch.from_numpy(np.stack([faces[a:a + window] for a in batch]))
                audio = torch.from_numpy(np.stack([
                    audio_mfcc[MFCC_PER_VIDEO_FRAME * a:MFCC_PER_VIDEO_FRAME * (a + window)] for a in batch]))
                video = video.to(self.device, dtype=torch.float32)
                audio = audio.to(self.device, dtype=torch.float32)
                out = self.model(audio, video).float().cpu().numpy().astype(np.float64)
                for offset, a in enumerate(batch):
                    index = first + offset
                    weights = _cross_fade_weights(window, self.overlap_frames if len(starts) > 1 else 0,
                                                  first=index == 0, last=index == len(starts) - 1)
                    total[a:a + window] += out[offset] * weights[:, None]
                    weight_sum[a:a + window] += weights
        return (total / weight_sum[:, None]).astype(np.float32)

    def shifted_logits(self, faces: np.ndarray, audio: np.ndarray, max_shift: int) -> np.ndarray:
        """(2N + 1, T, 2) float32 logits of the face track against its audio shifted by k = -N..N frames
        (:meth:`shifted_scores` without the visual-only margin)."""
        return self.shifted_scores(faces, audio, max_shift)[0]

    def shifted_scores(self, faces: np.ndarray, audio: np.ndarray, max_shift: int) -> tuple[np.ndarray, np.ndarray]:
        """(2N + 1, T, 2) float32 logits of the face track against its audio shifted by k = -N..N frames,
        and (T,) the visual-only speaking margin (``lossV`` head on the visual embedding: logit 1 - logit 0).

        Row ``k + N`` pairs video frame t with the audio of frame t + k (k > 0: later audio, the
        alignment that matches sound arriving k frames late). ``audio`` (int16, 16 kHz) must start
        N frames (N * 40 ms) before the first face frame; it is cut or padded with silence to
        cover T + 2N frames. Per window the visual encoder runs once and the audio encoder once
        over the window widened by N frames each side; each shift is a slice of that output (the
        encoder maps 4 MFCC rows to one frame, so a one-frame shift is a 4-row shift of its
        input), and only the GRU and head run 2N + 1 times, as one batch.
        """
        faces = self._check_faces(faces)
        if max_shift < 0:
            raise ValueError(f"max_shift must be >= 0, got {max_shift}")
        frames, shifts = len(faces), 2 * max_shift + 1
        if frames == 0:
            return np.zeros((shifts, 0, 2), dtype=np.float32), np.zeros(0, dtype=np.float32)
        audio_mfcc = audio_features_for_frames(audio, frames + 2 * max_shift)
        window = min(self.window_frames, frames)
        starts = window_starts(frames, window, self.overlap_frames)
        total = np.zeros((shifts, frames, 2), dtype=np.float64)
        seen = np.zeros(frames, dtype=np.float64)
        weight_sum = np.zeros(frames, dtype=np.float64)
        with torch.no_grad():
            for index, a in enumerate(starts):
                out, visual = self._shifted_window(faces[a:a + window],
                                           audio_mfcc[MFCC_PER_VIDEO_FRAME * a:
                                                      MFCC_PER_VIDEO_FRAME * (a + window + 2 * max_shift)],
                                           max_shift)
                weights = _cross_fade_weights(window, self.overlap_frames if len(starts) > 1 else 0,
                                              first=index == 0, last=index == len(starts) - 1)
                total[:, a:a + window] += out * weights[None, :, None]
                seen[a:a + window] += visual * weights
                weight_sum[a:a + window] += weights
        return ((total / weight_sum[None, :, None]).astype(np.float32), (seen / weight_sum).astype(np.float32))

    def _shifted_window(self, faces: np.ndarray, audio_mfcc: np.ndarray,
                        max_shift: int) -> tuple[np.ndarray, np.ndarray]:
        """One window's (2N + 1, W, 2) logits and (W,) visual-only margin: faces (W, 112, 112),
        MFCC (4 (W + 2N), 13)."""
        window = len(faces)
        video = torch.from_numpy(np.ascontiguousarray(faces)[None]).to(self.device, dtype=torch.float32)
        mfcc_rows = torch.from_numpy(np.ascontiguousarray(audio_mfcc)[None]).to(self.device, dtype=torch.float32)
        visual = self.model.encode_visual(video)  # (1, W, 128)
        heard = self.model.encode_audio(mfcc_rows)[0]  # (W + 2N, 128)
        # Row j = k + N holds the audio of frames [j, j + W) of the widened window, i.e. window frame t + k.
        audio = torch.stack([heard[j:j + window] for j in range(2 * max_shift + 1)])
        logits = self.model.logits_from_embeddings(audio, visual.expand(len(audio), -1, -1))
        # Light-ASD's visual head (trained as an auxiliary loss on the visual embedding): the
        # face's own speaking activity, independent of any audio, for the offset curve.
        seen = self.model.lossV.FC(visual[0]).float().cpu().numpy().astype(np.float64)
        return logits.float().cpu().numpy().astype(np.float64), seen[:, 1] - seen[:, 0]

    @staticmethod
    def _check_faces(faces: np.ndarray) -> np.ndarray:
        faces = np.asarray(faces)
        if faces.ndim != 3 or faces.shape[1:] != (CROP_SIZE, CROP_SIZE):
            raise ValueError(f"expected faces (T, {CROP_SIZE}, {CROP_SIZE}), got shape {faces.shape}")
        return faces
