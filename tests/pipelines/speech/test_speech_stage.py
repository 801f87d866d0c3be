"""The speech stage end to end on composed media: real audio, the configured offline backends.

Backends: pyannote segmentation (the model inside the whisperx wheel) for activity and
overlap, pocketsphinx for English words (pinned here: this module covers the offline path; the
default ``auto`` picks the real Whisper when it is in the model folder, covered by
test_whisper_real.py and tests/assets/test_whisper_languages.py), lingua for the language of
language-capable transcripts (here: subtitles written beside the video).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass

import pytest

from pipelines.config import PipelineConfig, load_config
import pipelines.fixtures.media as mf
from pipelines.runner import run_source
from pipelines.schema.records import SourceRecord, StageDecision, StageResult
from pipelines.schema.sample import SampleRecord
from pipelines.schema.manifest import MANIFEST_FILE
from pipelines.shards import write_shards
from stage_fixtures import SharedDetectorBackends, scan

GERMAN = "Guten Morgen, wir treffen uns heute Abend im kleinen Garten hinter dem Haus."
FRENCH = "Bonjour, nous allons nous retrouver ce soir dans le petit jardin derrière la maison."
ENGLISH = "Good morning, we will meet tonight in the small garden behind the old house."


@dataclass
class SpeechRun:
    cfg: PipelineConfig
    records: dict[str, SourceRecord]
    speech: dict[str, StageResult]
    summary: object


def _decision(run: SpeechRun, name: str) -> StageDecision:
    (decision,) = run.speech[name].segments.values()
    return decision


@pytest.fixture(scope="module")
def run(tmp_path_factory, composed, grid_clips, model_dir, scrfd_detector) -> SpeechRun:
    pytest.importorskip("pyannote.audio")
    root = tmp_path_factory.mktemp("speech-stage")
    inputs = root / "input"
    inputs.mkdir()
    male, female = grid_clips[0], grid_clips[1]  # bbaf2n and brbk7n: two different speakers
    sources = {
        "grid.mpg": male,
        "two_voices.mp4": composed.get("two_voices.mp4", mf.mixed_speakers, male, female),
    }
    for name, text, voice in (("german.mp4", GERMAN, "de"), ("french.mp4", FRENCH, "fr"),
                              ("english.mp4", ENGLISH, "en")):
        wav = composed.get(f"{voice}.wav", mf.espeak_wav, text, voice)
        sources[name] = composed.get(name, mf.dubbed, male, wav)
        (inputs / name).with_suffix(".txt").write_text(text + "\n")  # subtitles in the spoken language
    for name, path in sources.items():
        shutil.copyfile(path, inputs / name)
    # The speech stage alone: the other later stages (each tested in its own folder) are off.
    cfg = load_config(paths={"input_dir": inputs, "data_dir": root / "data", "model_dir": model_dir},
                      asd={"enabled": False}, flame={"enabled": False}, captions={"enabled": False},
                      speech={"transcription_backend": "pocketsphinx"})
    backends = SharedDetectorBackends(cfg, scrfd_detector)
    records, speech = {}, {}
    for name, ref in scan(cfg).items():
        outcomes = run_source(ref, cfg, backends, stages=["speech"])
        # ASD is off: speech decides on the face segments directly.
        assert [(o.stage, o.status) for o in outcomes] == [("faces", "ran"), ("quality", "ran"), ("asd", "disabled"),
                                                           ("speech", "ran")]
        records[name], speech[name] = outcomes[0].result, outcomes[-1].result
        assert records[name].status == "accepted", (name, records[name].reason)
        assert set(speech[name].segments) == {s.key for s in records[name].accepted_segments()}
    return SpeechRun(cfg, records, speech, write_shards(list(records.values()), cfg))


def test_a_single_grid_speaker_is_kept(run):
    decision = _decision(run, "grid.mpg")
    print(f"\nGRID alone: overlap ratio {decision.numbers['overlap_ratio']:.3f}, "
          f"speech {decision.numbers['speech_s']:.2f} s, words: {decision.payload['transcript']!r}")
    assert decision.decision == "accepted"
    assert decision.numbers["overlap_ratio"] <= run.cfg.speech.max_overlap_ratio
    assert decision.numbers["speech_s"] > 0.8  # GRID speech runs from about 1.0 to 2.2 s
    # pocketsphinx is English-only: the language is honestly unknown, kept and flagged.
    assert decision.numbers["language"] == "unknown" and decision.flags == ["language_unknown"]
    assert decision.payload["words"], "pocketsphinx found words with times"
    assert decision.numbers["word_timing"] == "pocketsphinx"
    assert decision.numbers["transcription_backend"] == "pocketsphinx:en-us"


def test_two_voices_at_once_are_rejected_for_overlap(run):
    decision = _decision(run, "two_voices.mp4")
    print(f"\ntwo GRID speakers mixed: overlap ratio {decision.numbers['overlap_ratio']:.3f}")
    assert decision.decision == "rejected" and decision.reason == "overlapping_speech"
    assert decision.numbers["overlap_ratio"] > run.cfg.speech.max_overlap_ratio


@pytest.mark.parametrize("name, code", [("german.mp4", "de"), ("french.mp4", "fr")])
def test_non_english_speech_with_subtitles_is_rejected(run, name, code):
    decision = _decision(run, name)
    assert decision.decision == "rejected" and decision.reason == "non_english_speech"
    assert decision.numbers["language"] == code
    assert decision.numbers["language_source"] == "text:lingua"
    assert run.speech[name].details["backends"]["transcription"] == "sidecar:txt"
    # Subtitles time their cues, not their words: every word is untimed and carries its cue's span.
    assert decision.numbers["word_timing"] == "subtitle_cues"
    assert decision.payload["words"] and not any(w["timed"] for w in decision.payload["words"])


def test_english_speech_with_subtitles_is_kept_with_its_language(run):
    decision = _decision(run, "english.mp4")
    assert decision.decision == "accepted" and decision.numbers["language"] == "en"
    assert decision.flags == []


def test_shard_json_carries_the_speech_results(run):
    import webdataset as wds

    samples = {s["__key__"]: json.loads(s["json"]) for s in
               wds.WebDataset([str(run.cfg.paths.shards_dir / e["name"]) for e in run.summary.shards],
                              shardshuffle=False)}
    assert len(samples) == 2  # the GRID clip and the English dub
    for record in samples.values():
        SampleRecord.model_validate(record)  # the packed JSON is a valid sample
        speech = record["speech"]
        assert {"transcript", "words", "turns", "overlap_ratio", "language", "backends", "word_timing",
                "transcription_backend"} <= set(speech)
        assert speech["backends"]["activity"].startswith("pyannote-segmentation")
        assert [f["stage"] for f in record["filters"]] == ["faces", "quality", "speech"]
        for word in speech["words"]:
            assert 0 <= word["start"] <= word["end"] <= record["time_range_s"]["duration"] + 1e-6


def test_manifest_shows_speech_rejections_with_their_numbers(run):
    rows = [json.loads(line) for line in (run.cfg.paths.shards_dir / MANIFEST_FILE).read_text().splitlines()]
    segments = {row["key"].split("-")[0]: row for row in rows if row["kind"] == "segment"}
    assert segments["two"]["reason"] == "overlapping_speech"
    assert segments["two"]["numbers"]["speech.overlap_ratio"] > 0.1
    assert segments["german"]["reason"] == segments["french"]["reason"] == "non_english_speech"
    assert segments["german"]["numbers"]["speech.language"] == "de"
    assert segments["german"]["numbers"]["speech.transcription_backend"] == "sidecar:txt"
    assert segments["two"]["numbers"]["speech.transcription_backend"] == "pocketsphinx:en-us"
    sources = {row["relpath"]: row for row in rows if row["kind"] == "source"}
    assert sources["two_voices.mp4"]["status"] == "rejected"
    assert sources["grid.mpg"]["status"] == "accepted"


def test_whisperx_and_diarization_backends_run_through_the_config(tmp_path, grid_clip, model_dir, scrfd_detector):
    """The with-weights path: config names the backends, the stage's build_backend loads them from the model
    dir (tiny random Whisper + alignment model + random diarization pipeline built here), and the
    stage records which backend decided what. Outputs are noise; the wiring and structure are real."""
    pytest.importorskip("whisperx")
    from speech_fixtures import build_random_diarization_pipeline, build_tiny_alignment_model, build_tiny_whisper

    models = tmp_path / "models"
    models.mkdir()
    (models / "faster-whisper").symlink_to(build_tiny_whisper(tmp_path / "whisper-build"))
    (models / "alignment-en").symlink_to(build_tiny_alignment_model(tmp_path / "align-build"))
    build_random_diarization_pipeline(models / "pyannote-diarization")
    (models / "scrfd").mkdir()
    (models / "scrfd" / "scrfd_500m_kps.onnx").symlink_to(model_dir / "scrfd" / "scrfd_500m_kps.onnx")
    inputs = tmp_path / "input"
    inputs.mkdir()
    shutil.copyfile(grid_clip, inputs / grid_clip.name)
    cfg = load_config(paths={"input_dir": inputs, "data_dir": tmp_path / "data", "model_dir": models},
                      asd={"enabled": False}, flame={"enabled": False}, captions={"enabled": False},
                      speech={"activity_backend": "pyannote_diarization", "transcription_backend": "whisperx",
                              "whisper_model": "faster-whisper", "alignment_model": "alignment-en"})
    (ref,) = scan(cfg).values()
    *_, outcome = run_source(ref, cfg, SharedDetectorBackends(cfg, scrfd_detector), stages=["speech"])
    result = outcome.result
    assert outcome.stage == "speech" and outcome.status == "ran"
    assert result.details["backends"]["activity"].startswith("pyannote-diarization")
    assert result.details["backends"]["transcription"] == "whisperx:faster-whisper"
    assert result.details["backends"]["transcription_choice"] == "configured"
    (decision,) = result.segments.values()
    # Whisper detected a language from the segment's audio: the language comes from the ASR.
    assert decision.numbers["language_source"] == "asr:whisperx:faster-whisper"
    assert isinstance(decision.numbers["language"], str) and decision.numbers["language"] != "unknown"
    assert decision.decision in ("accepted", "rejected")
    for turn in decision.payload["turns"]:
        assert 0 <= turn["start"] < turn["end"] <= 3.0 + 1e-6
    speakers = {t["speaker"] for t in decision.payload["turns"]}
    assert all(w["speaker"] in speakers | {None} for w in decision.payload["words"])


def test_auto_transcription_takes_whisper_only_when_its_folder_is_verified(tmp_path, model_dir):
    """auto: the registered Whisper base when every file matches its sha256, a user's folder when
    it holds the files faster-whisper needs, else pocketsphinx; an explicit whisperx fails loudly."""
    from pipelines.models import ModelError, ModelStore
    from pipelines.speech.stage import choose_transcription

    real = model_dir / "faster-whisper-base"
    if not (real / "model.bin").is_file():
        pytest.skip(f"the real Whisper base is not in {model_dir}")

    def choice(models, **speech):
        cfg = load_config(paths={"model_dir": models}, speech=speech)
        return choose_transcription(cfg, ModelStore(models))

    assert choice(model_dir) == ("whisperx", real, "auto: faster-whisper-base ok")
    assert choice(tmp_path) == ("pocketsphinx", None, "auto: faster-whisper-base missing, so pocketsphinx")
    with pytest.raises(ModelError, match="faster_whisper_base is missing"):
        choice(tmp_path, transcription_backend="whisperx")
    # One changed byte in a small file of the folder: not the published model, not used.
    copy = tmp_path / "faster-whisper-base"
    copy.mkdir()
    for item in real.iterdir():
        (copy / item.name).symlink_to(item)
    (copy / "config.json").unlink()
    (copy / "config.json").write_text((real / "config.json").read_text() + " ")
    assert choice(tmp_path)[0] == "pocketsphinx" and "hash_mismatch" in choice(tmp_path)[2]
    # A user's own folder is taken when its files are there (unpinned), not when they are not.
    user = tmp_path / "my-whisper"
    user.mkdir()
    for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt"):
        (user / name).symlink_to(real / name)
    assert choice(tmp_path, whisper_model="my-whisper") == ("whisperx", user, "auto: my-whisper unpinned")
    (user / "tokenizer.json").unlink()
    assert choice(tmp_path, whisper_model="my-whisper")[0] == "pocketsphinx"
    assert choice(model_dir, transcription_backend="pocketsphinx") == ("pocketsphinx", None, "configured")
