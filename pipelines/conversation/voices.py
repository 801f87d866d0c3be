"""Whose voice holds when in a shared video: voice vectors enrolled from Light-ASD.

Light-ASD says well *which* face speaks over a turn but not *when* the turn changes hands: on the
composed GRID two-shots (bench/eval_two_shot_roles.py) its probability moves each change by 2 to 11
frames, and on a turn it does not recognise it stays low on both faces. The voice itself changes
exactly at the change. So, per source:

1. **Enrollment.** A face's enrollment is the voiced time where its speaking probability exceeds
   every other face's by ``conversation.voice_enroll_margin`` and reaches ``voice_enroll_share`` of
   its own speaking level (its 95th percentile over voiced time), less ``voice_enroll_erosion_s``
   at each edge (where Light-ASD's curve is unsure). Voiced time where every face stays under
   ``voice_offscreen_share`` of its own level (eroded the same way) enrolls an off-screen voice, used
   only when a single face has a voiceprint (a guest on screen, the host off it). A class with at
   least ``voice_min_enroll_s`` of enrollment gets a voiceprint: the mean of its windows' voice
   vectors.
2. **Labels.** Every voiced time gets the class whose voiceprint is closest (cosine) to the voice
   vector of the ``voice_window_s`` window centred on it: first every ``voice_coarse_step_s``,
   then every ``voice_step_s`` around each change of the coarse labels. An off-screen stretch
   where one face is sure to speak for most of it goes to that face.

With fewer than two voiceprints there is nothing to tell apart: :func:`voice_turns` returns None
and the pairing keeps the per-frame Light-ASD rule (pipelines/conversation/roles.py).

The voice vectors come from Resemblyzer's GE2E speaker encoder (Wan et al., 2018), whose weights
ship in the Resemblyzer wheel (model registry ``resemblyzer_voice_encoder``). The network and its
input are rebuilt here to the published code, github.com/resemble-ai/Resemblyzer v0.1.4:
``resemblyzer/voice_encoder.py`` (``VoiceEncoder``: LSTM(40, 256, 3 layers, batch_first), Linear(256,
256), ReLU on the last layer's final hidden state, L2 norm), ``resemblyzer/audio.py``
(``wav_to_mel_spectrogram``: librosa power mel, n_fft 400, hop 160, 40 bands, not logged;
``normalize_volume`` to -30 dBFS, increase only) and ``resemblyzer/hparams.py``. The package's own
``__init__`` is never imported (it needs webrtcvad, for silence trimming we do not use).

Limits, measured while building this (issue 16): voiceprints of two GRID sentences by the same man,
from separate recordings, are further apart (cosine 0.61) than his and a woman's (0.78), so a
voiceprint is only compared with voices of the same recording, never across sources; within one
mix, halves of one person's turn give 0.83-0.89 and halves of two people's 0.55-0.84, too close
to tell an off-screen voice from a face's own by a threshold (hence off-screen only beside one
face); the composed conversations are all a man and a woman from separate GRID recordings, so
same-gender pairs in one room are not measured. A second voice under the one that holds (overlap)
is seen only where its face speaks (pairing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.config import AUDIO_SAMPLE_RATE_HZ, ConversationConfig
from pipelines.conversation.roles import Timeline, runs

OFF_SCREEN = -1  # the label of a voice no face on screen speaks with
NO_VOICE = -2  # unvoiced time
SAMPLE_RATE = AUDIO_SAMPLE_RATE_HZ  # 16 kHz, resemblyzer/hparams.py sampling_rate too
MEL_HOP_S = 0.01  # mel_window_step 10 ms
MEL_BANDS = 40  # mel_n_channels
NORM_TARGET_DBFS = -30.0  # audio_norm_target_dBFS
EMBEDDING_SIZE = 256  # model_embedding_size


class VoiceEncoder:
    """GE2E voice vectors of 16 kHz mono float audio (resemblyzer/voice_encoder.py ``VoiceEncoder``)."""

    def __init__(self, weights: str | Path, device: str = "cpu", batch_size: int = 64):
        import torch
        from torch import nn

        class _Network(nn.Module):
            def __init__(self):
                super().__init__()
                self.lstm = nn.LSTM(MEL_BANDS, 256, 3, batch_first=True)
                self.linear = nn.Linear(256, EMBEDDING_SIZE)
                self.relu = nn.ReLU()

            def forward(self, mels):
                _, (hidden, _) = self.lstm(mels)
                raw = self.relu(self.linear(hidden[-1]))
                return raw / torch.norm(raw, dim=1, keepdim=True)

        self._torch = torch
        self.device = torch.device(device)
        self.batch_size = batch_size
        checkpoint = torch.load(Path(weights), map_location="cpu", weights_only=True)
        network = _Network()
        # strict=False as in resemblyzer: the checkpoint also holds the GE2E loss's similarity
        # weight and bias, which inference does not use; every network weight must be there.
        missing = network.load_state_dict(checkpoint["model_state"], strict=False).missing_keys
        if missing:
            raise ValueError(f"{weights}: not a Resemblyzer voice encoder checkpoint (missing {missing})")
        self.network = network.to(self.device).eval()

    @staticmethod
    def mel(audio: np.ndarray) -> np.ndarray:
        """(frames, 40) float32 power mel spectrogram, one frame per 10 ms, of float audio at 16 kHz,
        its volume first raised to -30 dBFS when quieter (resemblyzer.audio ``normalize_volume``,
        ``increase_only=True``, then ``wav_to_mel_spectrogram``)."""
        import librosa

        audio = np.asarray(audio, dtype=np.float32)
        if not len(audio):
            return np.zeros((0, MEL_BANDS), np.float32)
        rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
        if rms > 0:
            gain_db = NORM_TARGET_DBFS - 20 * math.log10(rms)
            if gain_db > 0:
                audio = audio * np.float32(10 ** (gain_db / 20))
        mel = librosa.feature.melspectrogram(y=audio, sr=SAMPLE_RATE, n_fft=int(SAMPLE_RATE * 0.025),
                                             hop_length=int(SAMPLE_RATE * MEL_HOP_S), n_mels=MEL_BANDS)
        return mel.astype(np.float32).T

    def embed(self, mel: np.ndarray, windows: list[tuple[int, int]]) -> np.ndarray:
        """(len(windows), 256) unit voice vectors of the mel frame ranges [start, end) (each non-empty)."""
        out = np.zeros((len(windows), EMBEDDING_SIZE), np.float32)
        by_length: dict[int, list[int]] = {}
        for index, (start, end) in enumerate(windows):
            if end <= start:
                raise ValueError(f"empty voice window {start}..{end}")
            by_length.setdefault(end - start, []).append(index)
        torch = self._torch
        with torch.inference_mode():
            for indices in by_length.values():
                for first in range(0, len(indices), self.batch_size):
                    batch = indices[first:first + self.batch_size]
                    mels = np.stack([mel[windows[i][0]:windows[i][1]] for i in batch])
                    out[batch] = self.network(torch.from_numpy(mels).to(self.device)).float().cpu().numpy()
        return out


def erode(mask: np.ndarray, cells: int) -> np.ndarray:
    """``mask`` with ``cells`` cells taken off each end of each of its True runs."""
    out = np.asarray(mask, dtype=bool).copy()
    if cells <= 0:
        return out
    for start, end in runs(out):
        out[start:min(end, start + cells)] = False
        out[max(start, end - cells):end] = False
    return out


def enrollment_masks(probabilities: np.ndarray, voiced: np.ndarray, config: ConversationConfig,
                     step_s: float) -> list[np.ndarray]:
    """Per face (rows of ``probabilities``, faces x cells, 0 where a face is off screen), then one
    for the off-screen voice: the voiced cells that enroll it (module docstring, step 1)."""
    probabilities = np.atleast_2d(np.asarray(probabilities, dtype=np.float64))
    voiced = np.asarray(voiced, dtype=bool)
    cells = int(round(config.voice_enroll_erosion_s / step_s))
    # Each face's own speaking level: Light-ASD's scale differs from face to face (a GRID face it
    # is sure of peaks at 0.9, an unsure one at 0.4, and a silent one can sit at 0.2 throughout).
    peaks = np.array([np.percentile(row[voiced], 95) if voiced.any() else 0.0 for row in probabilities])
    masks = []
    for face in range(len(probabilities)):
        others = np.delete(probabilities, face, axis=0)
        rival = others.max(axis=0) if len(others) else np.zeros(probabilities.shape[1])
        sure = (probabilities[face] - rival >= config.voice_enroll_margin) & \
            (probabilities[face] >= config.voice_enroll_share * peaks[face])
        masks.append(erode(voiced & sure, cells))
    quiet = np.all(probabilities < config.voice_offscreen_share * peaks[:, None], axis=0)
    masks.append(erode(voiced & quiet, cells))
    return masks


@dataclass(frozen=True)
class VoiceTurns:
    """The class of the voice at each cell (Timeline values: a face's row, OFF_SCREEN or NO_VOICE),
    and how much enrollment each class had (seconds; rows, then the off-screen voice)."""

    labels: Timeline
    enrolled_s: tuple[float, ...]

    def at(self, times: np.ndarray) -> np.ndarray:
        return self.labels.at(times, NO_VOICE)


def _windows(centres: np.ndarray, frames: int, half: int) -> list[tuple[int, int]]:
    return [(max(0, min(int(c) - half, frames - 1)), max(1, min(int(c) + half, frames))) for c in centres]


def voice_turns(encoder: VoiceEncoder, audio: np.ndarray, audio_start_s: float, voiced: Timeline,
                probabilities, config: ConversationConfig) -> VoiceTurns | None:
    """Whose voice holds at each ``config.voice_step_s`` cell of a source's audio (module docstring).

    ``audio``: the source's float audio at 16 kHz starting at ``audio_start_s`` on the source clock;
    ``voiced``: where anyone speaks (bool or count Timeline on the source clock); ``probabilities``:
    a callable mapping times (s, source clock) to the faces' speaking probabilities (faces x times,
    0 off screen). None when fewer than two voices can be enrolled.
    """
    step = config.voice_step_s
    mel = encoder.mel(audio)
    frames = len(mel)
    cells = int(math.floor(frames * MEL_HOP_S / step))
    if cells == 0:
        return None
    times = audio_start_s + (np.arange(cells) + 0.5) * step
    is_voiced = np.asarray(voiced.at(times, 0)) >= 1
    probs = np.atleast_2d(np.asarray(probabilities(times), dtype=np.float64))
    masks = enrollment_masks(probs, is_voiced, config, step)
    mel_of_cell = np.minimum(((np.arange(cells) + 0.5) * step / MEL_HOP_S).astype(np.int64), frames - 1)
    half = max(1, int(round(config.voice_window_s / 2 / MEL_HOP_S)))
    enrolled = tuple(round(float(m.sum()) * step, 3) for m in masks)
    prints, classes = [], []
    enough = [mask.sum() * step + 1e-9 >= config.voice_min_enroll_s for mask in masks]
    # An off-screen voice only beside a single face that speaks: with two, time where neither is
    # sure is mostly one of them where Light-ASD is late or lost (measured on the composed two-shots:
    # the second half of lrwp9a's sentence enrolled as "off screen"), and GE2E voiceprints of one
    # voice and of two differ too little to tell those apart (bench/results/two_shot_roles.md).
    enough[-1] = enough[-1] and sum(enough[:-1]) == 1
    for index, mask in enumerate(masks):
        if not enough[index]:
            continue
        # Enough windows to average, not one per 20 ms cell of a long recording.
        chosen = np.flatnonzero(mask)[:: max(1, int(round(config.voice_coarse_step_s / step)))]
        vectors = encoder.embed(mel, _windows(mel_of_cell[chosen], frames, half))
        mean = vectors.mean(axis=0)
        prints.append(mean / np.linalg.norm(mean))
        classes.append(index if index < len(probs) else OFF_SCREEN)
    if len(prints) < 2:
        return None
    voiceprints = np.stack(prints)
    names = np.asarray(classes, dtype=np.int64)

    def label(indices: np.ndarray) -> np.ndarray:
        vectors = encoder.embed(mel, _windows(mel_of_cell[indices], frames, half))
        return names[np.argmax(vectors @ voiceprints.T, axis=1)]

    labels = np.full(cells, NO_VOICE, dtype=np.int64)
    coarse = max(1, int(round(config.voice_coarse_step_s / step)))
    voiced_cells = np.flatnonzero(is_voiced)
    if len(voiced_cells):
        sampled = voiced_cells[::coarse]
        sampled_labels = label(sampled)
        # Every voiced cell takes its nearest sampled cell's label (a tie: the earlier one) ...
        labels[voiced_cells] = sampled_labels[np.searchsorted((sampled[1:] + sampled[:-1]) / 2, voiced_cells)]
        # ... then the cells between two sampled cells whose labels differ are labelled one by one.
        changes = np.flatnonzero(sampled_labels[1:] != sampled_labels[:-1])
        fine = np.unique(np.concatenate([np.arange(sampled[k], sampled[k + 1] + 1) for k in changes]
                                        or [np.zeros(0, np.int64)]))
        fine = fine[is_voiced[fine]]
        if len(fine):
            labels[fine] = label(fine)
    labels = _claimed_by_faces(labels, probs, masks[:-1] if len(probs) else [], classes)
    return VoiceTurns(Timeline(audio_start_s, step, labels), enrolled)


def _claimed_by_faces(labels: np.ndarray, probs: np.ndarray, sure: list[np.ndarray], classes: list[int]) -> np.ndarray:
    """Off-screen turns where a face surely speaks for most of the turn go to that face: the
    off-screen voiceprint can take in a face's own voice where Light-ASD was late on it."""
    out = labels.copy()
    if OFF_SCREEN not in classes:
        return out
    for start, end in runs(labels == OFF_SCREEN):
        shares = [float(mask[start:end].mean()) for mask in sure]
        if shares and max(shares) > 0.5:
            out[start:end] = int(np.argmax(shares))
    return out
