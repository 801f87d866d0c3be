"""Whisper transcription through whisperx (faster-whisper / CTranslate2), with real word times.

Everything is read from local folders; nothing is downloaded:

- the Whisper model is a CTranslate2 conversion (what faster-whisper loads): a folder with
  ``model.bin``, ``config.json``, ``vocabulary.*`` and ``tokenizer.json``. The registered
  ``faster-whisper-base`` folder (pipelines/models.py) is checked against its published sha256;
  any other folder the user configures is checked for those files only (``unpinned``);
- voice activity comes from whisperx's bundled pyannote segmentation model
  (``whisperx/assets/pytorch_model.bin``, inside the wheel) when ``vad_method="pyannote"``;
  ``"silero"`` makes whisperx call ``torch.hub.load("snakers4/silero-vad")``, which works only
  where that hub repository is already cached;
- word alignment (optional) uses a wav2vec2 CTC model folder in Hugging Face layout
  (``config.json``, weights, ``vocab.json``, ``preprocessor_config.json``), loaded through
  ``whisperx.load_align_model(language_code, device, model_name=<folder>)``.

Word times, one of two real sources (``Transcript.word_timing``):

- a wav2vec2 aligner is configured for the language: whisperx's batched pipeline
  (``FasterWhisperPipeline.transcribe``, whisperx/asr.py) gives segments, ``whisperx.align``
  (whisperx/alignment.py) times their words (``wav2vec2_alignment``);
- otherwise: faster-whisper's own decoder, ``WhisperModel.transcribe(audio, word_timestamps=True)``
  (faster_whisper/transcribe.py, SYSTRAN/faster-whisper v1.2.1), which times words with the
  cross-attention alignment heads listed in the model's config.json (``whisper_word_timestamps``);
  whisperx's batched pipeline does not offer word timestamps. The model is loaded once: with an
  aligner configured it is the one whisperx's pipeline holds as ``.model``
  (whisperx.asr.WhisperModel subclasses faster_whisper.WhisperModel), without one faster-whisper
  loads it directly (see :meth:`WhisperxTranscriber.whisper_model`).

A word the aligner cannot time (whisperx leaves it without ``start``/``end``, or gives up on a
whole segment) is kept with ``timed=False`` and its segment's span: no time is invented.

Language: Whisper detects it from the audio (first 30 s) unless one is forced. The code is
Whisper's own (ISO 639-1 for nearly all languages; a few are longer, e.g. "haw", "yue").

One clip, one encoder pass per window (:meth:`WhisperxTranscriber.transcribe_clip`, what the
speech stage runs per clip): faster-whisper's ``transcribe(language=None)`` encodes the first
30 s window to detect the language and its decoder loop (``generate_segments``) encodes the
same window again; ``detect_language(audio)`` beside it would be a third pass. Here the
first window of the clip's speech is encoded once and that encoding serves both: its
language (CTranslate2 ``Whisper.detect_language`` on encoder output) and the decoding
(``generate_segments(..., encoder_output=...)``, which encodes only the later windows).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np

from pipelines.models import REGISTRY, ModelStatus, ModelStore
from pipelines.speech.base import (SAMPLE_RATE, WORD_TIMING_NONE, WORD_TIMING_WAV2VEC2, WORD_TIMING_WHISPER, Transcript,
                                   Word)

log = logging.getLogger(__name__)

VAD_METHODS = ("pyannote", "silero")
# Files a CTranslate2 Whisper folder must hold for faster-whisper to load it offline. Without
# tokenizer.json faster-whisper fetches "openai/whisper-tiny"'s tokenizer from the hub.
REQUIRED_MODEL_FILES = ("model.bin", "config.json", "tokenizer.json")
MODEL_HOWTO = (
    "put a CTranslate2 conversion of a Whisper model there: the files of a faster-whisper "
    "release (e.g. Systran/faster-whisper-base, registered as faster_whisper_base, or "
    "Systran/faster-whisper-large-v3: model.bin, config.json, tokenizer.json, vocabulary.*), "
    "or convert one yourself with `ct2-transformers-converter --model <whisper checkpoint> "
    "--output_dir <folder> --copy_files tokenizer.json preprocessor_config.json`"
)
ALIGN_HOWTO = (
    "put a wav2vec2 CTC model in Hugging Face layout there (config.json, model.safetensors or "
    "pytorch_model.bin, vocab.json, preprocessor_config.json, tokenizer_config.json), e.g. the "
    "files of jonatasgrosman/wav2vec2-large-xlsr-53-english, or leave the alignment model unset "
    "to time words with Whisper's own word timestamps"
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


def registered_whisper(folder: str) -> str | None:
    """The registry name of the pinned Whisper model whose folder is ``folder``, or None."""
    for spec in REGISTRY.values():
        if spec.task == "speech_recognition" and Path(spec.candidates[0].relpath).parent == Path(folder):
            return spec.name
    return None


def whisper_folder_status(model_dir: Path, folder: str, store: ModelStore | None = None) -> ModelStatus:
    """The configured Whisper folder ``<model_dir>/<folder>``, checked without loading it.

    A registered folder (faster-whisper-base) is verified file by file against its published
    sha256 (``ok`` / ``hash_mismatch`` / ``missing``); the store caches hashes per process. Any
    other folder is a user's choice: ``unpinned`` when it holds the files faster-whisper needs
    offline, else ``missing`` with what it lacks. ``path`` is the folder itself.
    """
    model_dir = Path(model_dir)
    name = registered_whisper(folder)
    if name is not None:
        status = (store or ModelStore(model_dir)).status(name)
        return ModelStatus(name, status.state, status.path.parent if status.path else None, status.sha256,
                           status.detail)
    label = f"whisper folder {folder}"
    try:
        path = check_model_dir(model_dir / folder)
    except ModelFolderError as error:
        return ModelStatus(label, "missing", None, None, str(error))
    return ModelStatus(label, "unpinned", path, None,
                       "user folder with model.bin, config.json, tokenizer.json, vocabulary.*; no reference hash "
                       "is registered for it")


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


def get_speech_timestamps(audio: np.ndarray, options) -> list[dict]:
    """silero VAD's speech regions (sample indices) of 16 kHz ``audio``: faster_whisper.vad's, as
    ``WhisperModel.transcribe(vad_filter=True)`` calls it (named here so the benches can time it)."""
    from faster_whisper.vad import get_speech_timestamps as silero_regions

    return silero_regions(audio, options)


def first_window(model, features: np.ndarray) -> np.ndarray:
    """The (n_mels, 3000) log-mel window ``generate_segments`` decodes first: the frames before the
    extractor's last (padding) one, at most 30 s of them, padded with zeros (faster_whisper/transcribe.py,
    v1.2.1, generate_segments at seek 0: ``segment_size = min(nb_max_frames, content_frames)``,
    ``pad_or_trim``). Handing its encoding to generate_segments is only right for this window."""
    from faster_whisper.audio import pad_or_trim

    content_frames = features.shape[-1] - 1
    return pad_or_trim(features[:, :min(model.feature_extractor.nb_max_frames, content_frames)])


def language_of_encoding(model, encoding) -> tuple[str, float]:
    """Whisper's most likely language token after start-of-transcript, from an encoder output
    (CTranslate2 ``Whisper.detect_language``; faster-whisper's ``detect_language`` reads the same
    top entry): (code, probability)."""
    token, probability = model.model.detect_language(encoding)[0][0]
    return token[2:-2], float(probability)  # "<|fr|>" -> "fr"


def whisper_tokenizer(model, language: str):
    """faster-whisper's tokenizer for transcribing ``language`` with ``model``, as transcribe() builds it."""
    from faster_whisper.tokenizer import Tokenizer

    return Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language)


def _whisper_segment_words(segments, duration: float) -> tuple[list[str], list[Word]]:
    """Texts and timed words of faster-whisper segments (a generator: decoding happens here), word
    times clipped to [0, duration]."""
    texts, words = [], []
    for segment in segments:
        if segment.text.strip():
            texts.append(segment.text.strip())
        for w in segment.words or []:
            token = w.word.strip()
            if not token:
                continue
            start = float(min(max(w.start, 0.0), duration))
            end = float(min(max(w.end, start), duration))
            words.append(Word(token, start, end, float(np.clip(w.probability, 0.0, 1.0))))
    return texts, words


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
                 vad_method: str = "pyannote", cpu_threads: int | None = None, asr_options: dict | None = None,
                 vad_filter: bool = True, short_window_s: float = 0.0, short_window_min_probability: float = 0.8):
        """``alignment_model_dir``: one wav2vec2 folder used for every language, or a mapping
        language code -> folder (languages without an entry get Whisper's own word timestamps).
        ``cpu_threads``: CTranslate2 threads on CPU (default: min(4, CPU count); more threads
        than cores makes decoding crawl). ``asr_options``: decoding options (beam_size...), given to
        whisperx's pipeline as its asr_options and, where faster-whisper's ``transcribe`` has a
        parameter of that name, to the word-timestamp path ("temperatures" -> "temperature").
        ``vad_filter``: on the word-timestamp path, decode only the speech found by faster-whisper's
        bundled silero VAD (``transcribe(vad_filter=True)``; times stay on the audio's clock). Without
        it Whisper stretches the first word back over leading silence (measured on GRID: a word
        starting at 0.0 s for speech that starts at 0.8 s) and may write words into silence.
        ``short_window_s`` / ``short_window_min_probability``: see :meth:`first_encoding` (0: always
        the 30 s window)."""
        if not 0.0 <= short_window_s <= 30.0:
            raise ValueError(f"short_window_s must be in [0, 30], got {short_window_s}")
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
        self.vad_filter = bool(vad_filter)
        self.short_window_s = float(short_window_s)
        self.short_window_min_probability = float(short_window_min_probability)
        self._pipeline = None
        self._model = None  # faster_whisper.WhisperModel when no aligner is configured
        self._align_models: dict[Path, tuple] = {}
        self._lock = threading.Lock()

    # -- loading ---------------------------------------------------------------------------

    def whisper_model(self):
        """The one loaded Whisper model, a ``faster_whisper.WhisperModel``.

        With an aligner configured it is the model whisperx's pipeline holds
        (``whisperx.asr.WhisperModel`` subclasses ``faster_whisper.WhisperModel``); without one,
        faster-whisper loads the folder directly and whisperx's batched pipeline and its VAD model
        are never loaded (only the aligned path uses them). Either way the folder is loaded once.
        """
        if self.alignment_model_dirs:
            return self.pipeline().model
        with self._lock:
            if self._model is None:
                check_model_dir(self.model_dir)
                from faster_whisper import WhisperModel

                self._model = WhisperModel(str(self.model_dir), device=self.device, compute_type=self.compute_type,
                                           cpu_threads=self.cpu_threads, local_files_only=True)
            return self._model

    def pipeline(self):
        """The whisperx FasterWhisperPipeline, loaded once (used when an aligner is configured)."""
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
        model = self.whisper_model()
        if not model.model.is_multilingual:
            return None, 0.0
        language, probability, _ = model.detect_language(audio=audio)
        return language, float(probability)

    # -- one clip: language and words from one encoding of its first window -------------------

    def transcribe_clip(self, audio: np.ndarray,
                        sample_rate: int = SAMPLE_RATE) -> tuple[Transcript, tuple[str, float] | None]:
        """A clip's transcript and the spoken language Whisper hears in its own audio
        ((code, probability); None for an English-only model or empty audio).

        The clip's speech (what silero VAD keeps, with ``vad_filter``; the whole clip without)
        is cut into 30 s windows as ``WhisperModel.transcribe`` cuts it; the first window is
        encoded once, its encoding gives the language (the forced ``language``, when set,
        is decoded with but the clip's own is still reported) and is decoded; only later
        windows are encoded again, by the decoder loop. A clip in which the VAD finds no speech
        has no words, and its language is Whisper's guess on the whole clip (one pass, as
        :meth:`detect_language`). With a wav2vec2 aligner configured for the language,
        whisperx's batched pipeline transcribes the clip (its own encoder passes) and the
        aligner times the words.
        """
        audio = as_mono_16k(audio, sample_rate)
        if audio.size == 0:
            return Transcript("", [], self.name, self.language, None, self.language_capable, WORD_TIMING_NONE), None
        model = self.whisper_model()
        from faster_whisper.vad import VadOptions, collect_chunks

        chunks, speech = None, audio
        if self.vad_filter:
            chunks = get_speech_timestamps(audio, VadOptions())  # transcribe(vad_filter=True)'s defaults
            if not chunks:
                heard = self.detect_language(audio) if model.model.is_multilingual else None
                return (Transcript("", [], self.name, heard[0] if heard else self.language,
                                   heard[1] if heard else None, self.language_capable, WORD_TIMING_NONE), heard)
            speech = np.concatenate(collect_chunks(audio, chunks)[0])
        features = model.feature_extractor(speech)
        encoding, heard = self.first_encoding(model, features)
        language = self.language or (heard[0] if heard else "en")
        probability = heard[1] if heard and self.language is None else None
        if self.alignment_dir(language) is not None:
            transcript = self.aligned_transcript(audio, language)
            return replace(transcript, language_probability=probability), heard
        segments = model.generate_segments(features, whisper_tokenizer(model, language),
                                           self.transcription_options(model, language), False, encoding)
        if chunks:
            from faster_whisper.transcribe import restore_speech_timestamps

            segments = restore_speech_timestamps(segments, chunks, SAMPLE_RATE)
        texts, words = _whisper_segment_words(segments, audio.size / SAMPLE_RATE)
        return (Transcript(" ".join(texts), words, self.name, language, probability, self.language_capable,
                           WORD_TIMING_WHISPER if words else WORD_TIMING_NONE), heard)

    def first_encoding(self, model, features: np.ndarray):
        """The encoder output of the clip's first window and the language it gives (None for an
        English-only model).

        Whisper pads every window to 30 s, so a 3 s clip costs a 30 s encoder pass. When the
        clip's speech fits in ``short_window_s``, that many seconds are encoded first (CTranslate2
        takes windows shorter than 30 s; on 2 cores 10 s cost 0.17 s against 1.22 s for 30 s) and
        kept when the language they give is at least ``short_window_min_probability`` likely;
        otherwise the 30 s window is encoded as Whisper was trained. Measured on the GRID clips
        and espeak-ng speech (bench/bench_whisper_window.py): Whisper's language probability on
        a short window differs from the 30 s one by up to 0.2 either way, most where it is unsure,
        hence the fallback."""
        from faster_whisper.audio import pad_or_trim

        content_frames = features.shape[-1] - 1
        short_frames = round(self.short_window_s * model.frames_per_second)
        if model.model.is_multilingual and 0 < content_frames <= short_frames < model.feature_extractor.nb_max_frames:
            encoding = model.encode(pad_or_trim(features[:, :content_frames], short_frames))
            heard = language_of_encoding(model, encoding)
            if heard[1] >= self.short_window_min_probability:
                return encoding, heard
        encoding = model.encode(first_window(model, features))
        return encoding, language_of_encoding(model, encoding) if model.model.is_multilingual else None

    def transcription_options(self, model, language: str):
        """The ``TranscriptionOptions`` ``WhisperModel.transcribe(audio, language, word_timestamps=True,
        **whisper_options())`` would build: its own defaults under our asr_options, mapped as it maps
        them (faster_whisper/transcribe.py, v1.2.1, lines 963-1001: ``temperature`` becomes the list
        ``temperatures``, ``suppress_tokens`` goes through ``get_suppressed_tokens``)."""
        from faster_whisper.transcribe import TranscriptionOptions, get_suppressed_tokens

        params = {name: p.default for name, p in inspect.signature(model.transcribe).parameters.items()
                  if p.default is not inspect.Parameter.empty}
        params.update(self.whisper_options(), word_timestamps=True)
        temperature = params.pop("temperature")
        params["temperatures"] = list(temperature) if isinstance(temperature, (list, tuple)) else [temperature]
        if params["suppress_tokens"]:
            params["suppress_tokens"] = get_suppressed_tokens(whisper_tokenizer(model, language),
                                                              params["suppress_tokens"])
        fields = [f.name for f in dataclasses.fields(TranscriptionOptions)]
        missing = sorted(set(fields) - set(params))
        if missing:
            raise RuntimeError(f"faster-whisper's TranscriptionOptions has fields transcribe() does not take: {missing} "
                               "(this code follows faster-whisper 1.2.1)")
        return TranscriptionOptions(**{name: params[name] for name in fields})

    # -- transcription ---------------------------------------------------------------------

    def transcribe(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Transcript:
        """Text, language and timed words: forced-aligned by wav2vec2 when an aligner is
        configured for the detected language, else from Whisper's own word timestamps."""
        audio = as_mono_16k(audio, sample_rate)
        if audio.size == 0:
            return Transcript("", [], self.name, self.language, None, self.language_capable, WORD_TIMING_NONE)
        if not self.alignment_model_dirs:
            # One decoder call detects the language (on the speech the VAD kept) and times the words.
            return self.whisper_words(audio, self.language)
        if self.language is not None:
            language, probability = self.language, None  # forced: nothing was detected
        else:
            language, probability = self.detect_language(audio)
            if language is None:  # English-only model
                language, probability = "en", None
        if self.alignment_dir(language) is None:
            return replace(self.whisper_words(audio, language), language_probability=probability)
        return replace(self.aligned_transcript(audio, language), language_probability=probability)

    def aligned_transcript(self, audio: np.ndarray, language: str) -> Transcript:
        """whisperx's batched pipeline in ``language`` on 16 kHz ``audio``, words timed by the
        wav2vec2 aligner configured for it (no language probability: nothing detected here)."""
        result = self.pipeline().transcribe(audio, batch_size=self.batch_size, language=language)
        language = result.get("language") or language
        segments = [s for s in result["segments"] if s.get("text", "").strip()]
        words = self.words_for(segments, audio, language)
        return Transcript(" ".join(s["text"].strip() for s in segments), words, self.name, language, None,
                          self.language_capable, WORD_TIMING_WAV2VEC2 if words else WORD_TIMING_NONE)

    def whisper_options(self) -> dict:
        """asr_options that faster-whisper's ``WhisperModel.transcribe`` accepts, under its names."""
        accepted = inspect.signature(self.whisper_model().transcribe).parameters
        options = {("temperature" if k == "temperatures" else k): v for k, v in self.asr_options.items()}
        ignored = sorted(set(options) - set(accepted))
        if ignored:
            log.warning("asr_options %s apply to whisperx's batched pipeline only, not to word timestamps", ignored)
        return {k: v for k, v in options.items() if k in accepted}

    def whisper_words(self, audio: np.ndarray, language: str | None) -> Transcript:
        """A transcript whose words are timed by Whisper's cross-attention alignment heads
        (faster-whisper ``transcribe(..., word_timestamps=True)``) on :meth:`whisper_model`.
        ``language`` None: faster-whisper detects it (first 30 s of the speech) in the same call."""
        model = self.whisper_model()
        segments, info = model.transcribe(audio, language=language, word_timestamps=True, vad_filter=self.vad_filter,
                                          **self.whisper_options())
        texts, words = _whisper_segment_words(segments, audio.size / SAMPLE_RATE)
        detected = language is None and model.model.is_multilingual
        return Transcript(" ".join(texts), words, self.name, info.language or language,
                          float(info.language_probability) if detected else None, self.language_capable,
                          WORD_TIMING_WHISPER if words else WORD_TIMING_NONE)

    def words_for(self, segments: list[dict], audio: np.ndarray, language: str) -> list[Word]:
        """Words of whisperx segments ({"text", "start", "end"} in seconds) of ``audio`` (16 kHz)
        forced-aligned by the wav2vec2 model configured for ``language``."""
        segments = [s for s in segments if s.get("text", "").strip()]
        if not segments:
            return []
        align = self.alignment_model(language)
        if align is None:
            raise ValueError(f"no alignment model is configured for language {language!r}")
        import whisperx

        model, metadata = align
        # interpolate_method="ignore": whisperx would otherwise copy a neighbour's time onto a
        # word it could not align ("nearest"); such a word stays untimed here instead.
        aligned = whisperx.align(segments, model, metadata, audio, self.device, interpolate_method="ignore",
                                 return_char_alignments=False)
        return self._aligned_words(aligned["segments"], audio.size / SAMPLE_RATE)

    @staticmethod
    def _aligned_words(aligned: list[dict], duration: float) -> list[Word]:
        """Words of ``whisperx.align`` segments. A word it could not time (no start/end), and
        every word of a segment it gave up on ("resorting to original"), is kept untimed with its
        segment's span (the whole audio when the segment has no time either)."""
        def clip(t) -> float | None:
            return None if t is None or not np.isfinite(t) else float(min(max(float(t), 0.0), duration))

        words: list[Word] = []
        for seg in aligned:
            seg_start, seg_end = clip(seg.get("start")), clip(seg.get("end"))
            if seg_start is None or seg_end is None:
                seg_start, seg_end = 0.0, duration
            seg_end = max(seg_end, seg_start)
            seg_words = seg.get("words") or [{"word": t} for t in seg.get("text", "").split()]
            for w in seg_words:
                token = w["word"].strip()
                if not token:
                    continue
                start, end = clip(w.get("start")), clip(w.get("end"))
                score = w.get("score")
                score = None if score is None or not np.isfinite(score) else float(np.clip(score, 0.0, 1.0))
                if start is None or end is None:
                    words.append(Word(token, seg_start, seg_end, score, timed=False))
                else:
                    words.append(Word(token, start, max(start, end), score))
        return words
