"""Speaker activity (voice activity and overlap) from a pyannote segmentation model.

A pyannote segmentation model looks at a short window (5 s for pyannote/segmentation v2,
10 s for segmentation-3.0) and says, frame by frame, which of its few local speakers
(3) are active. Local speaker identities are not consistent from one window to the next,
so the activations themselves cannot be averaged across windows; the *number* of active
speakers can. This backend therefore, as pyannote's own diarization pipeline does for its
speaker count:

1. slides the model over the audio (``step_s`` between windows),
2. binarises each window's activations at ``onset``,
3. counts active speakers per frame in each window,
4. averages the counts of all windows that cover a frame and rounds to an integer.

The result is a speaker-count timeline on the model's own frame grid (about 17 ms for
segmentation v2): 0 = silence, 1 = one speaker, >= 2 = overlapped speech. No turns are
derived (speaker identities would need clustering: that is the diarization backend).

The default model is the pyannote/segmentation v2 checkpoint that ships inside the whisperx
wheel (``whisperx/assets/pytorch_model.bin``): it runs fully offline. On pyannote.audio's
own sample (30 s, 8.4% of speech overlapped per its RTTM) this backend measures 9.7% with
the defaults (onset 0.5, step 0.5 s) at about 0.02-0.05 s of CPU time per second of audio.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from pathlib import Path

import numpy as np

from pipelines.speech.base import SAMPLE_RATE, SpeakerActivity

# pyannote.audio 4 sends usage telemetry (model/pipeline loads, audio durations) to
# otel.pyannote.ai unless this is false. A data pipeline must not phone home: off unless the
# user has set it explicitly before this module is imported.
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")

DEFAULT_ONSET = 0.5
# Step between windows as a fraction of the window (pyannote's own default, 0.5 s for 5 s).
DEFAULT_STEP_RATIO = 0.1


@contextlib.contextmanager
def quiet_checkpoint_upgrade():
    """Mute Lightning's "automatically upgraded your loaded checkpoint" notice while loading.

    pyannote checkpoints saved by older Lightning versions (segmentation v2: 1.5.4) are
    migrated in memory on every load; the notice suggests rewriting a file inside a wheel.
    """
    logger = logging.getLogger("lightning.pytorch.utilities.migration.utils")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


class SegmentationModelError(RuntimeError):
    """The segmentation checkpoint is missing or cannot be loaded."""


def bundled_segmentation_model_path() -> Path:
    """The pyannote/segmentation (v2) checkpoint shipped inside the installed whisperx wheel."""
    spec = importlib.util.find_spec("whisperx")
    if spec is None or not spec.submodule_search_locations:
        raise SegmentationModelError(
            "whisperx is not installed, so its bundled pyannote segmentation model "
            "(whisperx/assets/pytorch_model.bin) is not available: install whisperx==3.8.6 "
            "(pip install --no-deps whisperx==3.8.6) or pass model_path= to a local "
            "pyannote segmentation checkpoint (pytorch_model.bin).")
    for location in spec.submodule_search_locations:
        path = Path(location) / "assets" / "pytorch_model.bin"
        if path.is_file():
            return path
    raise SegmentationModelError(
        f"whisperx is installed ({list(spec.submodule_search_locations)}) but has no "
        "assets/pytorch_model.bin: reinstall whisperx==3.8.6 or pass model_path= explicitly.")


def _backend_name(path: Path, bundled: bool) -> str:
    if bundled:
        return "pyannote-segmentation:whisperx/pytorch_model.bin"
    # "pytorch_model.bin" alone says nothing: keep the folder that names the model.
    if path.is_file() and path.name == "pytorch_model.bin":
        return f"pyannote-segmentation:{path.parent.name}/{path.name}"
    return f"pyannote-segmentation:{path.name}"


class PyannoteSegmentationActivity:
    """ActivityBackend: speaker counts per frame from a pyannote segmentation model.

    ``model_path``: a pyannote.audio checkpoint file (``pytorch_model.bin``) or a folder
    holding one; None = the model bundled in whisperx. ``step_s``: seconds between windows
    (None = 10% of the model's window). ``onset``: activation threshold per speaker.
    ``device``: "cpu", "cuda", "cuda:1"... Output is deterministic for a given device.
    """

    def __init__(self, model_path: str | Path | None = None, *, step_s: float | None = None,
                 onset: float = DEFAULT_ONSET, device: str = "cpu", batch_size: int = 32):
        bundled = model_path is None
        path = bundled_segmentation_model_path() if bundled else Path(model_path).expanduser()
        if not path.exists():
            raise SegmentationModelError(
                f"pyannote segmentation checkpoint {path} does not exist: pass the path of a "
                "pyannote.audio checkpoint file (pytorch_model.bin) or of a folder holding one.")
        if path.is_dir() and not (path / "pytorch_model.bin").is_file():
            raise SegmentationModelError(f"folder {path} has no pytorch_model.bin (pyannote segmentation checkpoint)")
        if not 0.0 < onset < 1.0:
            raise ValueError(f"onset must be in (0, 1), got {onset}")

        import torch
        from pyannote.audio import Inference, Model
        from pyannote.core import SlidingWindowFeature

        self._torch = torch
        self._swf = SlidingWindowFeature
        self._aggregate = Inference.aggregate
        try:
            # Model.from_pretrained takes a local file or folder; with a path it never
            # touches the hub.
            with quiet_checkpoint_upgrade():
                model = Model.from_pretrained(str(path), map_location=torch.device(device))
        except Exception as exc:  # noqa: BLE001 - re-raised with the path that failed
            raise SegmentationModelError(f"could not load pyannote segmentation checkpoint {path}: {exc}") from exc
        if model is None:
            raise SegmentationModelError(f"could not load pyannote segmentation checkpoint {path}")

        spec = model.specifications
        if isinstance(spec, tuple) or spec.resolution.name != "FRAME" or not spec.permutation_invariant:
            raise SegmentationModelError(
                f"{path} is not a speaker segmentation model (frame-level, permutation-invariant): {spec}")

        self.name = _backend_name(path, bundled)
        self.model_path = path
        self.window_s = float(spec.duration)
        self.step_s = float(step_s) if step_s is not None else DEFAULT_STEP_RATIO * self.window_s
        if not 0.0 < self.step_s <= self.window_s:
            raise ValueError(f"step_s must be in (0, {self.window_s}], got {self.step_s}")
        self.onset = float(onset)
        self.device = device
        self.max_speakers_per_window = len(spec.classes)
        self._model = model
        # Powerset models (segmentation-3.0) are converted to multi-label 0/1 by Inference.
        self._inference = Inference(model, window="sliding", duration=self.window_s, step=self.step_s,
                                    skip_aggregation=True, batch_size=batch_size,
                                    device=torch.device(device))
        frames = model.receptive_field  # one output frame: SlidingWindow(start, duration, step)
        self.frame_step_s = float(frames.step)
        # Output frame i of a window starting at t is centred on t + i * step + duration / 2
        # (aggregation puts windows on this grid). SpeakerActivity cells are [start + i * step,
        # start + (i + 1) * step): centre each cell on its frame.
        self._cell_start_s = float(frames.start + frames.duration / 2 - frames.step / 2)

    def activity(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> SpeakerActivity:
        audio = np.ascontiguousarray(np.asarray(audio, dtype=np.float32).reshape(-1))
        duration_s = len(audio) / float(sample_rate)
        if len(audio) == 0:
            return SpeakerActivity(self._cell_start_s, self.frame_step_s, np.zeros(0, dtype=np.int64), self.name)

        torch = self._torch
        file = {"waveform": torch.from_numpy(audio)[None], "sample_rate": int(sample_rate)}
        with torch.inference_mode():
            segmentations = self._inference(file)  # (chunks, frames, local speakers), padded last chunk
        active = np.nan_to_num(segmentations.data, nan=0.0) > self.onset
        counts_per_chunk = active.sum(axis=-1, keepdims=True).astype(np.float32)
        aggregated = self._aggregate(self._swf(counts_per_chunk, segmentations.sliding_window),
                                     self._model.receptive_field, hamming=False, missing=0.0)
        counts = np.rint(np.nan_to_num(aggregated.data[:, 0], nan=0.0)).astype(np.int64)

        frames = aggregated.sliding_window
        start_s = float(frames.start) + self._cell_start_s
        step_s = float(frames.step)
        # Drop frames that only cover the zero padding of the last window.
        keep = max(0, int(np.ceil((duration_s - start_s) / step_s)))
        counts = counts[:keep]
        if len(counts) < keep:  # cannot happen with pyannote's aggregation; keep the grid whole anyway
            counts = np.concatenate([counts, np.zeros(keep - len(counts), dtype=np.int64)])
        return SpeakerActivity(start_s, step_s, np.clip(counts, 0, None), self.name)
