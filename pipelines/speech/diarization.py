"""Speaker activity and turns from a local pyannote.audio 4 speaker-diarization pipeline.

The pipeline is loaded from a LOCAL folder laid out like pyannote's published pipelines
(e.g. pyannote/speaker-diarization-community-1, which is gated on the hub: fetch it once
elsewhere with a token and copy the folder into the model directory)::

    <folder>/config.yaml                      pipeline: name: pyannote.audio.pipelines.SpeakerDiarization
    <folder>/segmentation/pytorch_model.bin   params: segmentation: $model/segmentation
    <folder>/embedding/pytorch_model.bin              embedding: $model/embedding
    <folder>/plda/xvec_transform.npz, plda.npz        plda: $model/plda

``$model/<sub>`` entries resolve inside the folder; absolute paths to local checkpoints work
too. Entries that would be fetched from the hub are refused up front (``allow_download``
lifts that, for a machine with network and a token). The optional Hugging Face token is
read from the environment variable named by ``hf_token_env``, handed to pyannote only, and
never logged or stored in anything printable.

pyannote 4 returns a ``DiarizeOutput``; its ``speaker_diarization`` (a
``pyannote.core.Annotation`` whose turns may overlap) becomes ``Turn``s, and the turns become
a ``SpeakerActivity`` through ``overlap.activity_from_turns``, so the overlap ratio means the
same thing as for the segmentation backend.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.speech.base import SAMPLE_RATE, SpeakerActivity, Turn
from pipelines.speech.overlap import DEFAULT_STEP_S, activity_from_turns
from pipelines.speech.segmentation import quiet_checkpoint_upgrade

# pyannote.audio 4 sends usage telemetry to otel.pyannote.ai unless this is false (see
# segmentation.py): off unless set explicitly before this module is imported.
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")

CONFIG_NAME = "config.yaml"
DEFAULT_TOKEN_ENV = "HF_TOKEN"

_LAYOUT_HELP = (
    "a local pyannote.audio 4 pipeline folder: config.yaml (pipeline: name: "
    "pyannote.audio.pipelines.SpeakerDiarization, params: segmentation / embedding / plda) plus "
    "the checkpoints it names, e.g. segmentation/pytorch_model.bin, embedding/pytorch_model.bin "
    "and plda/xvec_transform.npz + plda/plda.npz for '$model/<subfolder>' entries "
    "(the layout of pyannote/speaker-diarization-community-1)")

# What each pipeline parameter must find on disk: model checkpoints or the two PLDA files.
_LOCAL_FILES = {
    "segmentation": ("pytorch_model.bin",),
    "embedding": ("pytorch_model.bin",),
    "plda": ("xvec_transform.npz", "plda.npz"),
}


class DiarizationPipelineError(RuntimeError):
    """The local diarization pipeline folder is missing, incomplete or cannot be loaded."""


def resolve_pipeline_config(path: str | Path) -> Path:
    """The config.yaml of a pipeline given as its folder or as the file itself."""
    path = Path(path).expanduser()
    if path.is_dir():
        config = path / CONFIG_NAME
        if not config.is_file():
            raise DiarizationPipelineError(f"diarization pipeline folder {path} has no {CONFIG_NAME}: expected {_LAYOUT_HELP}")
        return config
    if path.is_file():
        return path
    raise DiarizationPipelineError(f"diarization pipeline {path} does not exist: expected {_LAYOUT_HELP}")


def _check_local(key: str, value: Any, root: Path) -> str | None:
    """Why ``value`` (a pipeline parameter) is not a complete local checkpoint, or None."""
    if isinstance(value, dict):
        if "subfolder" in value and isinstance(value.get("checkpoint"), str) and os.path.isdir(value["checkpoint"]):
            value = str(Path(value["checkpoint"]) / value["subfolder"])
        else:
            value = value.get("checkpoint")
    if not isinstance(value, str):
        return None  # not a path (a number, a flag...): nothing to check
    if value.startswith("$model/"):
        target = root / value[len("$model/"):].split("@")[0]
    else:
        target = Path(value).expanduser()
        if not target.exists():
            return f"{key}: {value!r} is not a local path (it would be fetched from the Hugging Face hub)"
        # pyannote picks the embedding loader by substring of a plain string (see
        # PretrainedSpeakerEmbedding): such a path would not load as a pyannote checkpoint.
        if key == "embedding" and "pyannote" not in value:
            for word in ("speechbrain", "nvidia", "wespeaker"):
                if word in value:
                    return (f"embedding: {value!r} contains {word!r}, so pyannote would load it as a {word} model, "
                            "not a pyannote checkpoint: use '$model/<subfolder>' or rename the folder")
    if target.is_file():
        return None
    missing = [name for name in _LOCAL_FILES.get(key, ()) if not (target / name).is_file()]
    if not target.is_dir() or missing:
        return f"{key}: {target} lacks {', '.join(missing or _LOCAL_FILES.get(key, ('the checkpoint',)))}"
    return None


def check_pipeline_folder(config_path: Path) -> list[str]:
    """Problems that would make loading ``config_path`` reach for the hub or fail: [] when none."""
    import yaml

    try:
        config = yaml.safe_load(config_path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        return [f"cannot read {config_path}: {exc}"]
    if not isinstance(config, dict) or not isinstance(config.get("pipeline"), dict) or "name" not in config["pipeline"]:
        return [f"{config_path} has no 'pipeline: name:' entry"]
    params = config["pipeline"].get("params") or {}
    problems = []
    for key in _LOCAL_FILES:
        if key not in params:
            if config["pipeline"]["name"].endswith("SpeakerDiarization"):
                problems.append(f"{key}: not set (SpeakerDiarization would fetch its default from the hub)")
            continue
        problem = _check_local(key, params[key], config_path.parent)
        if problem:
            problems.append(problem)
    return problems


class PyannoteDiarizationActivity:
    """ActivityBackend: pyannote.audio 4 speaker diarization from a local pipeline folder.

    ``pipeline_path``: the folder (or its config.yaml). ``num_speakers`` / ``min_speakers`` /
    ``max_speakers`` are passed to the pipeline on every call. ``step_s``: grid of the
    returned SpeakerActivity. ``device``: "cpu", "cuda"...
    """

    def __init__(self, pipeline_path: str | Path, *, device: str = "cpu", hf_token_env: str | None = DEFAULT_TOKEN_ENV,
                 num_speakers: int | None = None, min_speakers: int | None = None,
                 max_speakers: int | None = None, step_s: float = DEFAULT_STEP_S,
                 allow_download: bool = False):
        config_path = resolve_pipeline_config(pipeline_path)
        if not allow_download:
            problems = check_pipeline_folder(config_path)
            if problems:
                raise DiarizationPipelineError(
                    f"diarization pipeline {config_path} is not fully local: " + "; ".join(problems)
                    + f". Expected {_LAYOUT_HELP}.")

        import torch
        from pyannote.audio import Pipeline

        self._torch = torch
        folder = config_path.parent
        self.name = f"pyannote-diarization:{folder.name}"
        self.config_path = config_path
        self.device = device
        self.step_s = float(step_s)
        self._speakers = {key: value for key, value in (("num_speakers", num_speakers), ("min_speakers", min_speakers),
                                                         ("max_speakers", max_speakers)) if value is not None}
        token = (os.environ.get(hf_token_env) or None) if hf_token_env else None
        try:
            # A config.yaml path: "$model/<sub>" entries resolve against its folder.
            with quiet_checkpoint_upgrade():
                pipeline = Pipeline.from_pretrained(str(config_path), token=token)
        except Exception as exc:  # noqa: BLE001 - re-raised naming the folder (never the token)
            raise DiarizationPipelineError(f"could not load diarization pipeline {config_path}: "
                                           f"{type(exc).__name__}: {exc}") from exc
        finally:
            del token
        if pipeline is None:
            raise DiarizationPipelineError(f"could not load diarization pipeline {config_path}")
        self._pipeline = pipeline.to(torch.device(device))

    def diarize(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> list[Turn]:
        """Speaker turns (possibly overlapping), sorted by start, clipped to the audio."""
        audio = np.ascontiguousarray(np.asarray(audio, dtype=np.float32).reshape(-1))
        duration_s = len(audio) / float(sample_rate)
        if len(audio) == 0:
            return []
        torch = self._torch
        file = {"waveform": torch.from_numpy(audio)[None], "sample_rate": int(sample_rate), "uri": "audio"}
        with torch.inference_mode():
            output = self._pipeline(file, **self._speakers)
        # pyannote 4: DiarizeOutput(speaker_diarization, exclusive_speaker_diarization,
        # speaker_embeddings); a pipeline built with legacy=True returns the Annotation itself.
        annotation = getattr(output, "speaker_diarization", output)
        turns = []
        for segment, _, label in annotation.itertracks(yield_label=True):
            start, end = max(0.0, float(segment.start)), min(duration_s, float(segment.end))
            if end > start:
                turns.append(Turn(str(label), start, end))
        turns.sort(key=lambda t: (t.start, t.end, t.speaker))
        return turns

    def activity(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> SpeakerActivity:
        audio = np.asarray(audio).reshape(-1)
        turns = self.diarize(audio, sample_rate)
        return activity_from_turns(turns, len(audio) / float(sample_rate), self.name, step_s=self.step_s)
