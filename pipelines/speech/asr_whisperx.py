"""Whisper transcription through whisperx (faster-whisper / CTranslate2), optionally word-aligned.

Everything is read from local folders; nothing is downloaded:

- the Whisper model is a CTranslate2 conversion (what faster-whisper loads): a folder with
  ``model.bin``, ``config.json``, ``vocabulary.*`` and ``tokenizer.json``;
- voice activity comes from whisperx's bundled pyannote segmentation model
  (``whisperx/assets/pytorch_model.bin``, inside the wheel) when ``vad_method="pyannote"``;
  ``"silero"`` makes whisperx call ``torch.hub.load("snakers4/silero-vad")``, which works only
  where that hub repository is already cached;
- word alignment (optional) uses a wav2vec2 CTC model folder in Hugging Face layout
  (``config.json``, weights, ``vocab.json``, ``preprocessor_config.json``), loaded through
  ``whisperx.load_align_model(language_code, device, model_name=<folder>)``.

Language: Whisper detects it from the audio (first 30 s) unless one is forced. The code is
Whisper's own (ISO 639-1 for nearly all languages; a few are longer, e.g. "haw", "yue").
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np

from pipelines.speech.base import SAMPLE_RATE, Transcript, Word

log = logging.getLogger(__name__)

VAD_METHODS = ("pyannote", "silero")
# Files a CTranslate2 Whisper folder must hold for faster-whisper to load it offline. Without
# tokenizer.json faster-whisper fetches "openai/whisper-tiny"'s tokenizer from the hub.
REQUIRED_MODEL_FILES = ("model.bin", "config.json", "tokenizer.json")
MODEL_HOWTO = (
    "put a CTranslate2 conversion of a Whisper model there: the files of a faster-whisper "
    "release (e.g. Systran/faster-whisper-large-v3: model.bin, config.json, tokenizer.json, "
    "vocabulary.json, preprocessor_config.json), or convert one yourself with "
    "`ct2-transformers-converter --model <whisper checkpoint> --output_dir <folder> "
    "--copy_files tokenizer.json preprocessor_config.json`"
)
ALIGN_HOWTO = (
    "put a wav2vec2 CTC model in Hugging Face layout there (config.json, model.safetensors or "
    "pytorch_model.bin, vocab.json, preprocessor_config.json, tokenizer_config.json), e.g. the "
    "files of jonatasgrosman/wav2vec2-large-xlsr-53-english, or leave the alignment model unset "
    "to time words from Whisper's segments"
)


class ModelFolderError(FileNotFoundError):
    """A configured model folder is missing or incomplete."""


def check_model_dir(path: Path) -> Path:
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ModelFolderError(f"faster-whisper model folder {path} does not exist: {MODEL_HOWTO}")
    missing = [name for name in REQUIRED_MODEL_FILES if not (path / name).is_file()]
    if not any(path.glob("vocabulary.*")):
        missing.append("vocabulary.json (or vocabulary.txt)")
    if missing:
        raise ModelFolderError(f"faster-whisper model folder {path} lacks {', '.join(missing)}: {MODEL_HOWTO}")
    return path


def check_alignment_dir(path: Path) -> Path:
    path = Path(path).expanduser()
    if not (path / "config.json").is_file():
        raise ModelFolderError(f"alignment model folder {path} has no config.json: {ALIGN_HOWTO}")
    if not any((path / name).is_file() for name in ("model.safetensors", "pytorch_model.bin")):
        raise ModelFolderError(
            f"alignment model folder {path} has no model.safetensors or pytorch_model.bin: {ALIGN_HOWTO}")
    if not (path / "vocab.json").is_file():
        raise ModelFolderError(f"alignment model folder {path} has no vocab.json: {ALIGN_HOWTO}")
    if not any((path / name).is_file() for name in ("preprocessor_config.json", "processor_config.json")):
        raise ModelFolderError(f"alignment model folder {path} has no preprocessor_config.json: {ALIGN_HOWTO}")
    return path


def as_mono_16k(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """float32 mono at 16 kHz, resampled if another rate is given."""
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio (1-D array), got shape {audio.shape}")
    if audio.dtype.kind in "iu":
        audio = audio.astype(np.float32) / float(np.iinfo(audio.dtype).max + 1)
    audio = audio.astype(np.float32, copy=False)
    if sample_rate != SAMPLE_RATE:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(int(sample_rate), SAMPLE_RATE)
        audio = resample_poly(audio, SAMPLE_RATE // g, int(sample_rate) // g).astype(np.float32)
    return np.ascontiguousarray(audio)


def spread_words(text: str, start: float, end: float) -> list[tuple[str, float, float]]:
    """Word times from a segment's span alone: the span is shared among the words in
    proportion to their character counts (no word-level timing is known)."""
    tokens = text.split()
    if not tokens:
        return []
    total = sum(len(t) for t in tokens)
    span = max(0.0, end - start)
    out, pos = [], start
    for token in tokens:
        length = span * len(token) / total
        out.append((token, pos, pos + length))
        pos += length
    return out


def _patch_sentence_splitter() -> None:
    """whisperx.align splits text into sentences with NLTK's punkt_tab data and, when that
    data is missing, calls nltk.download (network). Offline, use NLTK's untrained Punkt
    splitter instead: it only changes how aligned words are grouped into sentences, not
    their times."""
    import whisperx.alignment as alignment

    if getattr(alignment.nltk_load, "_talkinghead_fallback", False):
        return
    original = alignment.nltk_load

    def load(resource, *args, **kwargs):
        try:
            return original(resource, *args, **kwargs)
        except LookupError:
            from nltk.tokenize.punkt import PunktSentenceTokenizer

            log.warning("NLTK resource %s not installed: splitting sentences with untrained Punkt", resource)
            return PunktSentenceTokenizer()

    load._talkinghead_fallback = True
    alignment.nltk_load = load


class WhisperxTranscriber:
    """TranscriptionBackend on whisperx. Models load on first use and stay on the instance."""

    language_capable = True

    def __init__(self, model_dir: str | Path, *, device: str = "cpu", compute_type: str = "int8",
                 batch_size: int = 8, language: str | None = None,
                 alignment_model_dir: str | Path | dict[str, str | Path] | None = None,
                 vad_method: str = "pyannote", cpu_threads: int | None = None, asr_options: dict | None = None):
        """``alignment_model_dir``: one wav2vec2 folder used for every language, or a mapping
        language code -> folder (languages without an entry get segment-level word times).
        ``cpu_threads``: CTranslate2 threads on CPU (default: min(4, CPU count); more threads
        than cores makes decoding crawl). ``asr_options``: whisperx's asr_options (beam_size...)."""
        if vad_method not in VAD_METHODS:
            raise ValueError(f"vad_method must be one of {VAD_METHODS}, got {vad_method!r}")
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        self.model_dir = Path(model_dir).expanduser()
        self.name = f"whisperx:{self.model_dir.name}"
        self.device = device
        self.compute_type = compute_type
        self.batch_size = int(batch_size)
        self.language = language
        if isinstance(alignment_model_dir, dict):
            self.alignment_model_dirs = {k: Path(v).expanduser() for k, v in alignment_model_dir.items()}
        elif alignment_model_dir is not None:
            self.alignment_model_dirs = {"*": Path(alignment_model_dir).expanduser()}
        else:
            self.alignment_model_dirs = {}
        self.vad_method = vad_method
        self.cpu_threads = int(cpu_threads) if cpu_threads else min(4, os.cpu_count() or 1)
        self.asr_options = dict(asr_options or {})
        self._pipeline = None
        self._align_models: dict[Path, tuple] = {}
        self._lock = threading.Lock()

    # -- loading ---------------------------------------------------------------------------

    def pipeline(self):
        """The whisperx FasterWhisperPipeline, loaded once."""
        with self._lock:
            if self._pipeline is None:
                check_model_dir(self.model_dir)
                import whisperx

                self._pipeline = whisperx.load_model(
                    str(self.model_dir), device=self.device, compute_type=self.compute_type,
                    language=self.language, vad_method=self.vad_method, local_files_only=True,
                    threads=self.cpu_threads, asr_options=self.asr_options or None)
            return self._pipeline

    def alignment_dir(self, language: str) -> Path | None:
        return self.alignment_model_dirs.get(language, self.alignment_model_dirs.get("*"))

    def alignment_model(self, language: str):
        """(model, metadata) from whisperx.load_align_model for this language, or None.

        A folder is loaded once; used for several languages, only the metadata's language
        (which decides word splitting for ja/zh and the sentence splitter) changes."""
        folder = self.alignment_dir(language)
        if folder is None:
            return None
        with self._lock:
            if folder not in self._align_models:
                check_alignment_dir(folder)
                import whisperx

                _patch_sentence_splitter()
                # model_name is a local folder: transformers' from_pretrained reads it directly;
                # model_cache_only=True makes that local_files_only (never the hub).
                self._align_models[folder] = whisperx.load_align_model(
                    language_code=language, device=self.device, model_name=str(folder), model_cache_only=True)
            model, metadata = self._align_models[folder]
        return model, {**metadata, "language": language}

    # -- language --------------------------------------------------------------------------

    def detect_language(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> tuple[str | None, float]:
        """Whisper's spoken-language guess for this audio (its first 30 s) and its probability.

        One encoder pass plus one decoder step (faster-whisper's WhisperModel.detect_language).
        Returns (None, 0.0) for empty audio or an English-only model.
        """
        audio = as_mono_16k(audio, sample_rate)
        if audio.size == 0:
            return None, 0.0
        model = self.pipeline().model  # whisperx's WhisperModel subclasses faster_whisper's
        if not model.model.is_multilingual:
            return None, 0.0
        language, probability, _ = model.detect_language(audio=audio)
        return language, float(probability)

    # -- transcription ---------------------------------------------------------------------

    def transcribe(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Transcript:
        audio = as_mono_16k(audio, sample_rate)
        if audio.size == 0:
            return Transcript("", [], self.name, self.language, None, self.language_capable)
        pipeline = self.pipeline()
        if self.language is not None:
            language, probability = self.language, None  # forced: nothing was detected
        else:
            language, probability = self.detect_language(audio)
            if language is None:  # English-only model
                language, probability = "en", None
        result = pipeline.transcribe(audio, batch_size=self.batch_size, language=language)
        language = result.get("language") or language
        segments = [s for s in result["segments"] if s.get("text", "").strip()]

        words = self.words_for(segments, audio, language)
        text = " ".join(s["text"].strip() for s in segments)
        return Transcript(text, words, self.name, language, probability, self.language_capable)

    def words_for(self, segments: list[dict], audio: np.ndarray, language: str) -> list[Word]:
        """Timed words for whisperx segments ({"text", "start", "end"} in seconds) of ``audio``
        (16 kHz): forced-aligned when an alignment model is configured for ``language``, else
        spread over each segment's span."""
        segments = [s for s in segments if s.get("text", "").strip()]
        duration = audio.size / SAMPLE_RATE
        align = self.alignment_model(language) if segments else None
        aligned = None
        if align is not None:
            import whisperx

            model, metadata = align
            aligned = whisperx.align(segments, model, metadata, audio, self.device,
                                     return_char_alignments=False)["segments"]
        return self._words(aligned, segments, duration)

    @staticmethod
    def _words(aligned: list[dict] | None, segments: list[dict], duration: float) -> list[Word]:
        def clip(t, default: float) -> float:
            t = default if t is None or not np.isfinite(t) else float(t)
            return float(min(max(t, 0.0), duration))

        words: list[Word] = []
        if aligned is not None:
            for seg in aligned:
                seg_start = clip(seg.get("start"), 0.0)
                seg_end = clip(seg.get("end"), duration)
                seg_words = seg.get("words") or []
                if not seg_words and seg.get("text", "").strip():
                    # whisperx gave up on this segment ("resorting to original"): no word times.
                    seg_words = [{"word": t} for t in seg["text"].split()]
                # Words the aligner could not time (no character of them in the model's
                # dictionary and no timed neighbour to interpolate from) get their share of the
                # segment's span, as in the unaligned path below.
                fallback = iter(spread_words(" ".join(w["word"] for w in seg_words), seg_start, seg_end))
                for w in seg_words:
                    _, f_start, f_end = next(fallback, (None, seg_start, seg_end))
                    start, end = clip(w.get("start"), f_start), clip(w.get("end"), f_end)
                    score = w.get("score")
                    score = None if score is None or not np.isfinite(score) else float(np.clip(score, 0.0, 1.0))
                    words.append(Word(w["word"], start, max(start, end), score))
            return words
        # No alignment model: whisperx gives segment-level times only (its VAD chunks), so each
        # segment's span is distributed over its words proportionally to their character length.
        for seg in segments:
            for token, start, end in spread_words(seg["text"], seg["start"], seg["end"]):
                start, end = clip(start, 0.0), clip(end, duration)
                words.append(Word(token, start, max(start, end)))
        return words
