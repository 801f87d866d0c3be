"""Transcription backends: whisperx (tiny random Whisper and wav2vec2 built here) and pocketsphinx
(the real English model inside its wheel) on GRID clips. The real Whisper base is tested in
test_whisper_real.py.

GRID bbaf2n says "bin blue at f two now" between about 0.8 and 2.2 s of a 3.0 s clip.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")

from speech_fixtures import (  # noqa: E402
    build_tiny_alignment_model,
    build_tiny_whisper,
    espeak_audio_16k,
    media_audio_16k,
)

from pipelines.speech.base import (  # noqa: E402
    SAMPLE_RATE,
    WORD_TIMING_NONE,
    WORD_TIMING_POCKETSPHINX,
    WORD_TIMING_WAV2VEC2,
    WORD_TIMING_WHISPER,
    Transcript,
)

GRID_WORDS = {"bin", "blue", "at", "f", "two", "now"}  # bbaf2n
LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}$")


@pytest.fixture(scope="module")
def bbaf2n(grid_dir: Path) -> np.ndarray:
    clip = grid_dir / "bbaf2n.mpg"
    if not clip.is_file():
        pytest.skip(f"{clip} not found")
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    return media_audio_16k(clip)


def assert_well_formed(transcript: Transcript, duration: float) -> None:
    assert isinstance(transcript.text, str)
    for word in transcript.words:
        assert isinstance(word.text, str) and word.text.strip() == word.text and word.text
        assert 0.0 <= word.start <= word.end <= duration + 1e-6, word
        assert word.score is None or 0.0 <= word.score <= 1.0, word
    starts = [w.start for w in transcript.words]
    assert starts == sorted(starts)


# --- whisperx ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> tuple[Path, Path]:
    for module in ("whisperx", "faster_whisper", "ctranslate2", "transformers"):
        pytest.importorskip(module, reason=f"{module} is not installed")
    import torch

    torch.set_num_threads(2)
    folder = tmp_path_factory.mktemp("tiny-asr")
    return build_tiny_whisper(folder), build_tiny_alignment_model(folder)


@pytest.fixture(scope="module")
def tiny_transcriber(tiny_models):
    from pipelines.speech.asr_whisperx import WhisperxTranscriber

    # Greedy decoding keeps the random model's 448-token babble quick.
    return WhisperxTranscriber(tiny_models[0], asr_options={"beam_size": 1}, cpu_threads=2)


def test_tiny_whisper_transcript_structure(tiny_transcriber, bbaf2n):
    duration = len(bbaf2n) / SAMPLE_RATE
    transcript = tiny_transcriber.transcribe(bbaf2n)

    assert transcript.backend == "whisperx:tiny-whisper"
    assert transcript.language_capable is True
    assert isinstance(transcript.language, str) and LANGUAGE_CODE.match(transcript.language)
    assert 0.0 <= transcript.language_probability <= 1.0
    assert_well_formed(transcript, duration)
    # No aligner: the words and their times come from Whisper's word timestamps (random model:
    # noise text, but real decoding and alignment-head timing).
    assert transcript.word_timing == (WORD_TIMING_WHISPER if transcript.words else WORD_TIMING_NONE)
    assert all(w.timed for w in transcript.words)
    # Cached: the second call reuses the loaded model, and whisperx's batched pipeline is never loaded.
    model = tiny_transcriber.whisper_model()
    tiny_transcriber.transcribe(bbaf2n[: SAMPLE_RATE])
    assert tiny_transcriber.whisper_model() is model and tiny_transcriber._pipeline is None


def test_detect_language_per_segment(tiny_transcriber, bbaf2n):
    code, probability = tiny_transcriber.detect_language(bbaf2n[int(0.5 * SAMPLE_RATE): int(2.5 * SAMPLE_RATE)])
    assert LANGUAGE_CODE.match(code) and 0.0 < probability <= 1.0
    assert tiny_transcriber.detect_language(np.zeros(0, dtype=np.float32)) == (None, 0.0)


def test_forced_language_is_reported_without_probability(tiny_models, bbaf2n):
    from pipelines.speech.asr_whisperx import WhisperxTranscriber

    transcriber = WhisperxTranscriber(tiny_models[0], language="de", asr_options={"beam_size": 1}, cpu_threads=2)
    transcript = transcriber.transcribe(bbaf2n)
    assert transcript.language == "de" and transcript.language_probability is None
    assert_well_formed(transcript, len(bbaf2n) / SAMPLE_RATE)


def test_alignment_model_times_words_inside_the_segment(tiny_models, bbaf2n):
    from pipelines.speech.asr_whisperx import WhisperxTranscriber

    transcriber = WhisperxTranscriber(tiny_models[0], alignment_model_dir=tiny_models[1],
                                      asr_options={"beam_size": 1}, cpu_threads=2)
    words = transcriber.words_for([{"text": " Bin blue at F two now.", "start": 0.8, "end": 2.2}], bbaf2n, "en")
    assert [w.text for w in words] == ["Bin", "blue", "at", "F", "two", "now."]
    for w in words:
        assert 0.8 <= w.start <= w.end <= 2.2 + 1e-6
        assert w.timed and w.score is not None and 0.0 <= w.score <= 1.0  # from the CTC alignment
    assert [w.start for w in words] == sorted(w.start for w in words)
    # Character-proportional shares of the span would make "blue" exactly twice "at": the
    # aligner's times come from the audio instead.
    shares = [(w.end - w.start) / len(w.text.strip(".")) for w in words]
    assert max(shares) - min(shares) > 1e-3, shares
    # End to end with the aligner configured: whisperx's pipeline holds the one Whisper model.
    transcript = transcriber.transcribe(bbaf2n)
    assert_well_formed(transcript, len(bbaf2n) / SAMPLE_RATE)
    assert transcript.word_timing == (WORD_TIMING_WAV2VEC2 if transcript.words else WORD_TIMING_NONE)
    assert transcriber.whisper_model() is transcriber.pipeline().model


def test_a_segment_the_aligner_gives_up_on_keeps_its_words_untimed(tiny_models, bbaf2n):
    """A segment that starts after the end of the audio cannot be aligned: whisperx keeps it
    without words. Its words stay, marked untimed, with the segment's span; no per-word time is
    made up."""
    from pipelines.speech.asr_whisperx import WhisperxTranscriber

    transcriber = WhisperxTranscriber(tiny_models[0], alignment_model_dir=tiny_models[1],
                                      asr_options={"beam_size": 1}, cpu_threads=2)
    late = {"text": " forty two percent", "start": 4.0, "end": 5.0}  # beyond the 3 s of audio
    words = transcriber.words_for([{"text": " Bin blue.", "start": 0.8, "end": 1.4}, late], bbaf2n, "en")
    assert [w.text for w in words] == ["Bin", "blue.", "forty", "two", "percent"]
    assert [w.timed for w in words] == [True, True, False, False, False]
    duration = len(bbaf2n) / SAMPLE_RATE
    assert all((w.start, w.end) == (duration, duration) for w in words[2:])  # the segment's span, clipped


def test_missing_model_folder_is_a_clear_error(tmp_path):
    from pipelines.speech.asr_whisperx import ModelFolderError, WhisperxTranscriber

    missing = tmp_path / "faster-whisper"
    transcriber = WhisperxTranscriber(missing)  # loading is lazy: no error yet
    with pytest.raises(ModelFolderError, match="faster-whisper model folder .*does not exist.*model.bin"):
        transcriber.transcribe(np.zeros(SAMPLE_RATE, dtype=np.float32))
    missing.mkdir()
    (missing / "model.bin").write_bytes(b"")
    with pytest.raises(ModelFolderError, match=r"lacks config.json, tokenizer.json"):
        transcriber.detect_language(np.zeros(SAMPLE_RATE, dtype=np.float32))
    with pytest.raises(ModelFolderError, match="alignment model folder"):
        WhisperxTranscriber(missing, alignment_model_dir=tmp_path / "nowhere").alignment_model("en")


# --- pocketsphinx --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sphinx():
    pytest.importorskip("pocketsphinx", reason="pocketsphinx is not installed")
    from pipelines.speech.asr_pocketsphinx import PocketsphinxTranscriber

    return PocketsphinxTranscriber()


@pytest.fixture(scope="module")
def pronunciations() -> dict[str, set[str]]:
    """The wheel's CMU dictionary: word -> its pronunciations."""
    from pocketsphinx import get_model_path

    table: dict[str, set[str]] = {}
    for line in Path(get_model_path("en-us/cmudict-en-us.dict")).read_text(errors="replace").splitlines():
        word, _, phones = line.partition(" ")
        table.setdefault(re.sub(r"\(\d+\)$", "", word), set()).add(phones.strip())
    return table


def test_pocketsphinx_hears_the_grid_sentence(sphinx, bbaf2n, pronunciations):
    transcript = sphinx.transcribe(bbaf2n)
    assert transcript.backend == "pocketsphinx:en-us"
    assert transcript.language is None and transcript.language_capable is False
    assert transcript.word_timing == WORD_TIMING_POCKETSPHINX
    assert_well_formed(transcript, len(bbaf2n) / SAMPLE_RATE)
    assert not any(w.text.startswith(("<", "[", "+")) for w in transcript.words)

    # A word counts when it is a spoken word or sounds exactly like one in the wheel's own
    # dictionary: an n-gram recogniser writes the likelier homophone ("been" B IH N for "bin",
    # "to" T UW for "two"). Measured: "been good enough to know".
    def heard(spoken: str) -> bool:
        return any(w.text == spoken or pronunciations.get(w.text, set()) & pronunciations[spoken]
                   for w in transcript.words)

    matched = {spoken for spoken in GRID_WORDS if heard(spoken)}
    assert len(matched) >= 2, (transcript.text, matched)
    inside = [w for w in transcript.words if 0.5 <= (w.start + w.end) / 2 <= 2.6]
    assert transcript.words and len(inside) >= 0.8 * len(transcript.words), transcript.words
    # Same clip, same words: the decoder's adaptive state is reset per call.
    assert sphinx.transcribe(bbaf2n).text == transcript.text


def test_pocketsphinx_exact_words_on_another_grid_clip(sphinx, grid_dir):
    clip = grid_dir / "brbk7n.mpg"  # "bin red by k seven now"
    if not clip.is_file() or shutil.which("ffmpeg") is None:
        pytest.skip(f"{clip} or ffmpeg not available")
    transcript = sphinx.transcribe(media_audio_16k(clip))
    words = {w.text for w in transcript.words}
    # Measured: "in red by case seven now".
    assert len(words & {"bin", "red", "by", "k", "seven", "now"}) >= 3, transcript.text


def test_pocketsphinx_silence_and_empty(sphinx):
    assert sphinx.transcribe(np.zeros(0, dtype=np.float32)).words == []
    assert sphinx.transcribe(np.zeros(2 * SAMPLE_RATE, dtype=np.float32)).words == []


@pytest.mark.parametrize("voice, sentence", [
    ("de", "Der Bahnhof liegt im Zentrum der Stadt und ist morgens immer sehr voll."),
    ("fr", "Le train part de la gare centrale tous les matins à huit heures précises."),
])
def test_pocketsphinx_writes_english_whatever_is_spoken(sphinx, pronunciations, tmp_path, voice, sentence):
    """Why language_capable is False: German or French speech comes out as English words,
    so identifying the language of this text would say "English" for any speech."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    transcript = sphinx.transcribe(espeak_audio_16k(sentence, voice, tmp_path))
    assert transcript.words, f"nothing recognised in the {voice} sentence"
    assert all(w.text in pronunciations for w in transcript.words)  # only English dictionary words
    assert transcript.language is None and transcript.language_capable is False


def test_pocketsphinx_result_does_not_depend_on_what_came_before(sphinx, bbaf2n, grid_dir):
    """Re-materialising must give the same bytes: the same clip gives the same words and scores."""
    first = sphinx.transcribe(bbaf2n)
    sphinx.transcribe(media_audio_16k(grid_dir / "brbk7n.mpg"))
    assert sphinx.transcribe(bbaf2n) == first


def test_pocketsphinx_audio_ending_mid_speech_on_a_frame_boundary(sphinx, bbaf2n):
    """The stream ends inside speech with a length that is an exact number of VAD frames."""
    from pocketsphinx import Endpointer

    frame_samples = Endpointer(sample_rate=SAMPLE_RATE).frame_bytes // 2
    cut = (int(1.8 * SAMPLE_RATE) // frame_samples) * frame_samples  # GRID speech runs ~1.0-2.2 s
    transcript = sphinx.transcribe(bbaf2n[:cut])
    assert transcript.words and transcript.words[-1].end <= cut / SAMPLE_RATE + 1e-6
