"""Model registry: every model a stage can use, with its files and sha256.

Weights are read from a model directory (config ``paths.model_dir``, env
``TALKINGHEAD_MODEL_DIR``); nothing is ever downloaded. A missing or corrupt file is a
clear error that names the file and says how to obtain it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path


# A relpath starting with this prefix names a file inside an installed Python package
# ("package:whisperx/assets/pytorch_model.bin"): weights that ship in a wheel.
PACKAGE_PREFIX = "package:"


@dataclass(frozen=True)
class ModelFile:
    relpath: str
    # None: no reference hash is published for this file; it is used but reported unpinned.
    sha256: str | None

    def resolve(self, model_dir: Path) -> Path | None:
        if not self.relpath.startswith(PACKAGE_PREFIX):
            return model_dir / self.relpath
        package, _, inner = self.relpath[len(PACKAGE_PREFIX):].partition("/")
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(list(spec.submodule_search_locations)[0]) / inner


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str
    description: str
    # Alternatives in order of preference: the first one present is used.
    candidates: tuple[ModelFile, ...]
    how_to_obtain: str
    licence: str
    # Files that must sit beside the chosen candidate (a model folder's config, tokenizer...),
    # each verified like the candidate; any one missing or different fails the model.
    extra_files: tuple[ModelFile, ...] = field(default_factory=tuple)
    # The published release the pinned hashes come from ("owner/name@commit"), when known.
    revision: str | None = None


class ModelError(RuntimeError):
    """A model file is missing or does not match its registered hash."""


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="scrfd_500m",
            task="face_detection",
            description="InsightFace SCRFD-500M face detector with 5 keypoints (the detector of buffalo_sc).",
            candidates=(
                ModelFile("buffalo_sc/det_500m.onnx", None),
                ModelFile("scrfd/scrfd_500m_kps.onnx", "517cb1980c72422e676738fc45431700fb7cbee56d0f825b623ee427b3e5ce58"),
            ),
            how_to_obtain="unzip InsightFace's buffalo_sc.zip into <model_dir>/buffalo_sc/, "
            "or place scrfd_500m_kps.onnx under <model_dir>/scrfd/",
            licence="InsightFace weights: non-commercial research use only",
        ),
        ModelSpec(
            name="scrfd_2.5g",
            task="face_detection",
            description="SCRFD-2.5G with 5 keypoints: slower, better on small faces.",
            candidates=(
                ModelFile("scrfd/scrfd_2.5g_kps.onnx", "32d20c77b9e2dc1d07e94c2ab9d25bdd5cd05eddbe0b46e7b38e7a1eca22e99a"),
            ),
            how_to_obtain="place scrfd_2.5g_kps.onnx under <model_dir>/scrfd/",
            licence="InsightFace weights: non-commercial research use only",
        ),
        ModelSpec(
            name="mediapipe_short_range",
            task="face_detection",
            description="MediaPipe BlazeFace short-range detector for the Tasks API FaceDetector.",
            candidates=(
                ModelFile(
                    "mediapipe/face_detection_short_range.tflite",
                    "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
                ),
            ),
            how_to_obtain="`pip download --no-deps mediapipe==0.10.21`, then copy "
            "mediapipe/modules/face_detection/face_detection_short_range.tflite to <model_dir>/mediapipe/",
            licence="Apache-2.0",
        ),
        ModelSpec(
            name="mediapipe_full_range",
            task="face_detection",
            description="MediaPipe BlazeFace full-range (sparse) detector for faces far from the camera.",
            candidates=(
                ModelFile(
                    "mediapipe/face_detection_full_range_sparse.tflite",
                    "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
                ),
            ),
            how_to_obtain="as for mediapipe_short_range (face_detection_full_range_sparse.tflite)",
            licence="Apache-2.0",
        ),
        ModelSpec(
            name="light_asd_ava",
            task="active_speaker_detection",
            description="Light-ASD trained on AVA-ActiveSpeaker (PyTorch state_dict).",
            candidates=(
                ModelFile("light-asd/pretrain_AVA_CVPR.model", "d44bc3ea7baa8e0946fa3921311714a630ed8b90a1928fab0dbe30d918909317"),
            ),
            how_to_obtain="download weight/pretrain_AVA_CVPR.model from the Light-ASD repository into <model_dir>/light-asd/",
            licence="MIT",
        ),
        ModelSpec(
            name="light_asd_talkset",
            task="active_speaker_detection",
            description="Light-ASD fine-tuned on TalkSet.",
            candidates=(
                ModelFile("light-asd/finetuning_TalkSet.model", "efc375833887eefa9d209dc92810e18519b04c3c73ea35a549f2a7f40b7d94d5"),
            ),
            how_to_obtain="download weight/finetuning_TalkSet.model from the Light-ASD repository into <model_dir>/light-asd/",
            licence="MIT",
        ),
        ModelSpec(
            name="syncnet",
            task="av_sync",
            description="SyncNet (Chung & Zisserman 2016) syncnet_v2.model, a PyTorch state dict of "
            "SyncNetModel.py S: audio-video offset and sync confidence (pipelines/asd/syncnet.py); optional, "
            "the ASD stage uses it when present.",
            # No reference hash is published (github.com/joonson/syncnet_python@6efbb1c download_model.sh
            # only wgets the file): used and reported unpinned.
            candidates=(ModelFile("syncnet/syncnet_v2.model", None),),
            how_to_obtain="on a machine with internet access, download "
            "http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model (joonson/syncnet_python "
            "download_model.sh) into <model_dir>/syncnet/",
            licence="MIT (joonson/syncnet_python LICENSE.md)",
        ),
        ModelSpec(
            name="pyannote_segmentation_whisperx",
            task="speech_activity",
            description="pyannote/segmentation (v2, 3 speakers, 5 s windows) shipped inside the whisperx wheel; "
            "voice activity and overlapped speech offline.",
            candidates=(
                ModelFile("package:whisperx/assets/pytorch_model.bin",
                          "0b5b3216d60a2d32fc086b47ea8c67589aaeb26b7e07fcbe620d6d0b83e209ea"),
            ),
            how_to_obtain="`pip install --no-deps whisperx==3.8.6` (scripts/setup.sh does this)",
            licence="MIT",
        ),
        ModelSpec(
            name="resemblyzer_voice_encoder",
            task="voice_embedding",
            description="Resemblyzer's GE2E speaker encoder (3-layer LSTM, 40 mel bands, 256-d voice vectors), "
            "shipped inside the Resemblyzer wheel: whose voice holds when in a shared video "
            "(pipelines/conversation/voices.py).",
            candidates=(
                ModelFile("package:resemblyzer/pretrained.pt",
                          "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"),
            ),
            how_to_obtain="`pip install --no-deps resemblyzer==0.1.4` (scripts/setup.sh does this)",
            licence="Apache-2.0 (resemble-ai/Resemblyzer)",
        ),
        ModelSpec(
            name="faster_whisper_base",
            task="speech_recognition",
            description="OpenAI Whisper base (multilingual, 74 M params) converted to CTranslate2 float16 by "
            "Systran: language from the audio and word timestamps for the whisperx backend (speech.whisper_model "
            "faster-whisper-base, the default). Another Whisper folder set there is checked for its files only.",
            candidates=(ModelFile("faster-whisper-base/model.bin",
                                  "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"),),
            extra_files=(
                ModelFile("faster-whisper-base/config.json",
                          "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"),
                ModelFile("faster-whisper-base/tokenizer.json",
                          "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"),
                ModelFile("faster-whisper-base/vocabulary.txt",
                          "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913"),
            ),
            revision="Systran/faster-whisper-base@ebe41f70d5b6dfa9166e2c581c45c9c0cfc57b66",
            how_to_obtain="on a machine with hub access, `huggingface-cli download Systran/faster-whisper-base "
            "--revision ebe41f70d5b6dfa9166e2c581c45c9c0cfc57b66 --local-dir <model_dir>/faster-whisper-base` "
            "(model.bin, config.json, tokenizer.json, vocabulary.txt), then copy that folder here",
            licence="MIT (Whisper weights, OpenAI; conversion by Systran)",
        ),
        ModelSpec(
            name="pyannote_diarization",
            task="speaker_diarization",
            description="A pyannote.audio SpeakerDiarization pipeline folder whose config.yaml points at local "
            "segmentation and embedding checkpoints.",
            candidates=(ModelFile("pyannote-diarization/config.yaml", None),),
            how_to_obtain="on a machine with hub access and accepted conditions, download "
            "pyannote/speaker-diarization-community-1 (or 3.1) and its models into <model_dir>/pyannote-diarization/ "
            "and make config.yaml's paths relative to that folder; set speech.diarization_pipeline",
            licence="MIT / CC-BY-4.0 (pyannote models; gated)",
        ),
        ModelSpec(
            name="sheap",
            task="flame_regression",
            description="SHeaP TorchScript checkpoint: (N,3,224,224) RGB head crops in [0,1] -> FLAME parameters.",
            # The release's file names (github.com/nlml/SHeaP sheap/load_model.py MODEL_INFO), after sheap.pt.
            candidates=(ModelFile("sheap/sheap.pt", None), ModelFile("sheap/model_expressive.pt", None),
                        ModelFile("sheap/model_paper.pt", None)),
            how_to_obtain="download model_expressive.pt or model_paper.pt (CC BY-NC 4.0) from the SHeaP release "
            "(github.com/nlml/SHeaP, v1.0.0) into <model_dir>/sheap/ (sheap.pt, if present, is used first)",
            licence="CC BY-NC 4.0",
        ),
        ModelSpec(
            name="qwen_vl",
            task="captioning",
            description="A Qwen2-VL, Qwen2.5-VL or Qwen3-VL instruct checkpoint folder in Hugging Face layout for expression captions (the family is read from config.json model_type).",
            candidates=(ModelFile("qwen-vl/config.json", None),),
            how_to_obtain="on a machine with hub access, `huggingface-cli download Qwen/Qwen2.5-VL-7B-Instruct "
            "--local-dir <model_dir>/qwen-vl`; or serve it with vLLM and set captions.backend: openai_chat",
            licence="Apache-2.0 (Qwen2.5-VL-7B)",
        ),
    )
}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# Hashes computed in this process, by (resolved path, size, mtime): a 145 MB model file is
# read once per process however many stores, stages or clips ask; a replaced file is re-read.
_PROCESS_HASHES: dict[tuple[str, int, int], str] = {}
_PROCESS_HASHES_LOCK = threading.Lock()


def cached_sha256(path: Path) -> str:
    stat = Path(path).stat()
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    with _PROCESS_HASHES_LOCK:
        if key not in _PROCESS_HASHES:
            _PROCESS_HASHES[key] = sha256_file(path)
        return _PROCESS_HASHES[key]


@dataclass(frozen=True)
class ModelStatus:
    name: str
    state: str  # "ok", "unpinned", "missing", "hash_mismatch"
    path: Path | None
    sha256: str | None
    detail: str

    def as_dict(self) -> dict:
        return {"name": self.name, "state": self.state, "path": str(self.path) if self.path else None,
                "sha256": self.sha256, "detail": self.detail}


class ModelStore:
    """Resolves registry entries to verified files inside one model directory."""

    def __init__(self, model_dir: Path | str, registry: dict[str, ModelSpec] | None = None):
        self.model_dir = Path(model_dir)
        self.registry = registry if registry is not None else REGISTRY

    def spec(self, name: str) -> ModelSpec:
        try:
            return self.registry[name]
        except KeyError:
            raise ModelError(f"unknown model {name!r}; registered: {', '.join(sorted(self.registry))}") from None

    def _hash(self, path: Path) -> str:
        return cached_sha256(path)

    def _extra_problem(self, spec: ModelSpec) -> tuple[str, str] | None:
        """(state, detail) for the first extra file that is missing or differs, else None."""
        for extra in spec.extra_files:
            path = extra.resolve(self.model_dir)
            if path is None or not path.is_file():
                return "missing", f"missing {path or extra.relpath}; to obtain: {spec.how_to_obtain}"
            if extra.sha256 is not None and self._hash(path) != extra.sha256:
                return "hash_mismatch", (f"{path}: expected sha256 {extra.sha256}, got {self._hash(path)}; "
                                         f"replace the file ({spec.how_to_obtain})")
        return None

    def status(self, name: str) -> ModelStatus:
        spec = self.spec(name)
        for candidate in spec.candidates:
            path = candidate.resolve(self.model_dir)
            if path is None or not path.is_file():
                continue
            actual = self._hash(path)
            problem = self._extra_problem(spec)
            if candidate.sha256 is None:
                if problem is not None:
                    return ModelStatus(name, problem[0], path, actual, problem[1])
                return ModelStatus(name, "unpinned", path, actual, "present; no reference hash is registered for this file")
            if actual != candidate.sha256:
                return ModelStatus(
                    name, "hash_mismatch", path, actual,
                    f"expected sha256 {candidate.sha256}; replace the file ({spec.how_to_obtain})",
                )
            if problem is not None:
                return ModelStatus(name, problem[0], path, actual, problem[1])
            files = 1 + len(spec.extra_files)
            release = f" ({spec.revision})" if spec.revision else ""
            return ModelStatus(name, "ok", path, actual,
                               f"present, sha256 verified{release}" if files == 1 else
                               f"present, sha256 of all {files} files verified{release}")
        wanted = " or ".join(str(c.resolve(self.model_dir) or c.relpath) for c in spec.candidates)
        return ModelStatus(name, "missing", None, None, f"missing {wanted}; to obtain: {spec.how_to_obtain}")

    def path(self, name: str) -> Path:
        """The verified file for ``name``, or a :class:`ModelError` that says what to do."""
        status = self.status(name)
        if status.state in ("ok", "unpinned"):
            return status.path  # type: ignore[return-value]
        raise ModelError(f"model {name!r}: {status.detail}")

    def report(self) -> list[ModelStatus]:
        return [self.status(name) for name in sorted(self.registry)]


def format_report(statuses: list[ModelStatus], model_dir: Path) -> str:
    lines = [f"model directory: {model_dir}"]
    width = max(len(s.name) for s in statuses)
    for status in statuses:
        lines.append(f"  {status.name:<{width}}  {status.state:<13}  {status.detail}")
        if status.path:
            lines.append(f"  {'':<{width}}  {'':<13}  {status.path}")
    return "\n".join(lines)


def report_json(statuses: list[ModelStatus]) -> str:
    return json.dumps([s.as_dict() for s in statuses], indent=2)
