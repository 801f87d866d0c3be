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

from dataclasses import dataclass
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


@dataclass(frozen=True)
class _Window:
    """One inference window of one track: frames [start, start + length)."""

    track: int
    start: int
    length: int
    first: bool
    last: bool
    overlapped: bool  # the track has more than one window

    def weights(self, overlap: int) -> np.ndarray:
        return _cross_fade_weights(self.length, overlap if self.overlapped else 0, self.first, self.last)


class ActiveSpeakerScorer:
    """Light-ASD speaking probability per frame of a face track (CPU or CUDA).

    ``faces``: (T, 112, 112) uint8 grayscale crops from :func:`pipelines.asd.features.face_crop_112`
    at 25 fps; ``audio``: int16 mono 16 kHz samples starting at the first face frame's time.
    ``batch_windows`` windows go through the network at once (default: 8 on a GPU, 1 on CPU; the
    stage passes ``asd.batch_windows_cpu`` / ``batch_windows_cuda``); the ``*_many`` methods fill
    those batches with the windows of several tracks, so a source with many short face tracks
    costs few forward passes.
    """

    def __init__(self, model_path: str | Path, device: str = "cpu", window_frames: int = 100,
                 overlap_frames: int = 25, batch_windows: int | None = None):
        if window_frames < 1 or not 0 <= overlap_frames < window_frames:
            raise ValueError(f"need window_frames >= 1 and 0 <= overlap_frames < window_frames, "
                             f"got {window_frames} and {overlap_frames}")
        self.device = torch.device(device)
        if batch_windows is None:
            # The stage passes the config's per-device sizes; alone, one window per pass on CPU
            # (bench/results/batching.md: a CPU gains only where long windows share a pass).
            batch_windows = 1 if self.device.type == "cpu" else 8
        if batch_windows < 1:
            raise ValueError(f"batch_windows must be >= 1, got {batch_windows}")
        self.window_frames = window_frames
        self.overlap_frames = overlap_frames
        self.batch_windows = batch_windows
        self.model = load_light_asd(model_path, self.device)

    def window_count(self, frames: int) -> int:
        """Windows a track of ``frames`` 25 fps frames is scored in."""
        return len(window_starts(frames, min(self.window_frames, frames), self.overlap_frames)) if frames else 0

    def logits(self, faces: np.ndarray, audio: np.ndarray) -> np.ndarray:
        """(T, 2) float32 audio-visual logits (index 1: speaking)."""
        return self.logits_many([(faces, audio)])[0]

    def probabilities(self, faces: np.ndarray, audio: np.ndarray) -> np.ndarray:
        """(T,) float32 probability that the face is speaking, per frame."""
        return probability_from_logits(self.logits(faces, audio))

    def probabilities_many(self, tracks: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """:meth:`probabilities` of several (faces, audio) tracks, their windows batched together."""
        return [probability_from_logits(logits) for logits in self.logits_many(tracks)]

    def logits_many(self, tracks: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """:meth:`logits` of several (faces, audio) tracks, their windows batched together."""
        tracks = [(self._check_faces(faces), audio) for faces, audio in tracks]
        return self._windowed_logits([(faces, audio_features_for_frames(audio, len(faces))) for faces, audio in tracks])

    def logits_from_features(self, audio_mfcc: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """Windowed inference on ready features: MFCC (4T, 13) and faces (T, 112, 112)."""
        faces = self._check_faces(faces)
        frames = len(faces)
        if audio_mfcc.shape != (MFCC_PER_VIDEO_FRAME * frames, 13):
            raise ValueError(f"expected MFCC of shape ({MFCC_PER_VIDEO_FRAME * frames}, 13) for {frames} frames, "
                             f"got {audio_mfcc.shape}")
        return self._windowed_logits([(faces, audio_mfcc)])[0]

    def _windowed_logits(self, tracks: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        windows = self._plan([len(faces) for faces, _ in tracks])
        totals = [np.zeros((len(faces), 2), dtype=np.float64) for faces, _ in tracks]
        weight_sums = [np.zeros(len(faces), dtype=np.float64) for faces, _ in tracks]
        with torch.no_grad():
            for batch in self._batches(windows):
                video = torch.from_numpy(np.stack([tracks[w.track][0][w.start:w.start + w.length] for w in batch]))
                audio = torch.from_numpy(np.stack([
                    tracks[w.track][1][MFCC_PER_VIDEO_FRAME * w.start:MFCC_PER_VIDEO_FRAME * (w.start + w.length)]
                    for w in batch]))
                video = video.to(self.device, dtype=torch.float32)
                audio = audio.to(self.device, dtype=torch.float32)
                out = self.model(audio, video).float().cpu().numpy().astype(np.float64)
                for row, w in zip(out, batch):
                    weights = w.weights(self.overlap_frames)
                    totals[w.track][w.start:w.start + w.length] += row * weights[:, None]
                    weight_sums[w.track][w.start:w.start + w.length] += weights
        return [(total / np.maximum(weight_sum, 1e-12)[:, None]).astype(np.float32)
                for total, weight_sum in zip(totals, weight_sums)]

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
        return self.shifted_scores_many([(faces, audio)], max_shift)[0]

    def shifted_scores_many(self, tracks: list[tuple[np.ndarray, np.ndarray]],
                            max_shift: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`shifted_scores` of several (faces, audio) tracks: the windows of all of them go
        through the network ``batch_windows`` at a time (windows of equal length only: the
        temporal convolutions and the GRU see the whole window, so padding would change the
        scores; tracks of at least ``window_frames`` frames all have full-length windows)."""
        if max_shift < 0:
            raise ValueError(f"max_shift must be >= 0, got {max_shift}")
        shifts = 2 * max_shift + 1
        faces_of = [self._check_faces(faces) for faces, _ in tracks]
        mfcc_of = [audio_features_for_frames(audio, len(faces) + 2 * max_shift) if len(faces) else None
                   for faces, (_, audio) in zip(faces_of, tracks)]
        totals = [np.zeros((shifts, len(faces), 2), dtype=np.float64) for faces in faces_of]
        seens = [np.zeros(len(faces), dtype=np.float64) for faces in faces_of]
        weight_sums = [np.zeros(len(faces), dtype=np.float64) for faces in faces_of]
        with torch.no_grad():
            for batch in self._batches(self._plan([len(faces) for faces in faces_of])):
                out, visual = self._shifted_windows(
                    np.stack([faces_of[w.track][w.start:w.start + w.length] for w in batch]),
                    np.stack([mfcc_of[w.track][MFCC_PER_VIDEO_FRAME * w.start:
                                                MFCC_PER_VIDEO_FRAME * (w.start + w.length + 2 * max_shift)]
                              for w in batch]), max_shift)
                for w, logits, seen in zip(batch, out, visual):
                    weights = w.weights(self.overlap_frames)
                    totals[w.track][:, w.start:w.start + w.length] += logits * weights[None, :, None]
                    seens[w.track][w.start:w.start + w.length] += seen * weights
                    weight_sums[w.track][w.start:w.start + w.length] += weights
        results = []
        for total, seen, weight_sum in zip(totals, seens, weight_sums):
            weight_sum = np.maximum(weight_sum, 1e-12)  # only an empty track has no weight
            results.append(((total / weight_sum[None, :, None]).astype(np.float32),
                            (seen / weight_sum).astype(np.float32)))
        return results

    def _shifted_windows(self, faces: np.ndarray, audio_mfcc: np.ndarray,
                         max_shift: int) -> tuple[np.ndarray, np.ndarray]:
        """B windows' (B, 2N + 1, W, 2) logits and (B, W) visual-only margins: faces (B, W, 112, 112),
        MFCC (B, 4 (W + 2N), 13)."""
        count, window = faces.shape[:2]
        shifts = 2 * max_shift + 1
        video = torch.from_numpy(np.ascontiguousarray(faces)).to(self.device, dtype=torch.float32)
        mfcc_rows = torch.from_numpy(np.ascontiguousarray(audio_mfcc)).to(self.device, dtype=torch.float32)
        visual = self.model.encode_visual(video)  # (B, W, 128)
        heard = self.model.encode_audio(mfcc_rows)  # (B, W + 2N, 128)
        # Row j = k + N holds the audio of frames [j, j + W) of the widened window, i.e. window frame t + k.
        audio = torch.stack([heard[:, j:j + window] for j in range(shifts)], dim=1)  # (B, 2N + 1, W, 128)
        paired = visual[:, None].expand(-1, shifts, -1, -1)
        logits = self.model.logits_from_embeddings(audio.reshape(count * shifts, window, -1),
                                                   paired.reshape(count * shifts, window, -1))
        # Light-ASD's visual head (trained as an auxiliary loss on the visual embedding): the
        # face's own speaking activity, independent of any audio, for the offset curve.
        seen = self.model.lossV.FC(visual).float().cpu().numpy().astype(np.float64)  # (B, W, 2)
        logits = logits.float().cpu().numpy().astype(np.float64).reshape(count, shifts, window, 2)
        return logits, seen[..., 1] - seen[..., 0]

    def _plan(self, lengths: list[int]) -> list[_Window]:
        """Every window of every track (empty tracks have none)."""
        windows = []
        for track, frames in enumerate(lengths):
            if frames == 0:
                continue
            length = min(self.window_frames, frames)
            starts = window_starts(frames, length, self.overlap_frames)
            windows.extend(_Window(track, start, length, index == 0, index == len(starts) - 1, len(starts) > 1)
                           for index, start in enumerate(starts))
        return windows

    def _batches(self, windows: list[_Window]) -> list[list[_Window]]:
        """Windows of equal length in groups of up to ``batch_windows``, in track order."""
        by_length: dict[int, list[_Window]] = {}
        for w in windows:
            by_length.setdefault(w.length, []).append(w)
        return [group[first:first + self.batch_windows] for group in by_length.values()
                for first in range(0, len(group), self.batch_windows)]

    @staticmethod
    def _check_faces(faces: np.ndarray) -> np.ndarray:
        faces = np.asarray(faces)
        if faces.ndim != 3 or faces.shape[1:] != (CROP_SIZE, CROP_SIZE):
            raise ValueError(f"expected faces (T, {CROP_SIZE}, {CROP_SIZE}), got shape {faces.shape}")
        return faces
