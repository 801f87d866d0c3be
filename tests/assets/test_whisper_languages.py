"""The whole Dagster graph with the default speech settings (transcription_backend auto) and the
real Whisper base: a GRID face dubbed with German, French and English espeak-ng speech.

The face passes every face rule, so speech decides: German and French are rejected
``non_english_speech`` from Whisper's language detection (no subtitles, no text), English is
accepted with its language from the audio and Whisper's own word times in the sample.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest
import webdataset as wds

from assets.demo import run_demo
import pipelines.fixtures.media as mf
from speech_fixtures import WHISPER_SENTENCES

pytestmark = [pytest.mark.slow, pytest.mark.real_weights]

SOURCES = {"german.mp4": "de", "french.mp4": "fr", "english.mp4": "en"}
WHISPER = "asr:whisperx:faster-whisper-base"


@pytest.fixture(scope="module")
def language_run(tmp_path_factory, grid_clips, model_dir, composed) -> dict:
    if not (model_dir / "faster-whisper-base" / "model.bin").is_file():
        pytest.skip(f"the real Whisper base is not in {model_dir}/faster-whisper-base")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    root = tmp_path_factory.mktemp("whisper-languages")
    inputs = root / "input"
    inputs.mkdir()
    for name, code in SOURCES.items():
        speech = composed.get(f"whisper-{code}.wav", mf.espeak_wav, WHISPER_SENTENCES[code], code)
        # The GRID clip played three times (9 s) under 5-9 s of speech.
        dub = composed.get(f"whisper-dub-{code}.mp4", mf.dubbed, grid_clips[0], speech, lead_in_s=0.3, loops=2)
        shutil.copyfile(dub, inputs / name)
    config_path = root / "config.yaml"
    # Active speaker detection is off: Light-ASD would judge the dub's lips (tests/assets/
    # test_bad_input_run.py covers that); here the speech stage must decide on its own.
    config_path.write_text(json.dumps({"paths": {"input_dir": str(inputs), "data_dir": str(root / "data"),
                                                 "model_dir": str(model_dir)}, "asd": {"enabled": False}}))
    with dg.instance_for_test() as instance:
        summary = run_demo(str(config_path), instance, log=lambda *_: None)
    assert summary["dataset_run_ok"] and not summary["failed_runs"], summary
    rows = [json.loads(line) for line in Path(summary["manifest"]).read_text().splitlines()]
    samples = [json.loads(s["json"]) for s in wds.WebDataset(summary["shards"], shardshuffle=False)]
    return {"summary": summary, "rows": rows, "samples": samples}


def _segment_row(run: dict, name: str) -> dict:
    source = next(r for r in run["rows"] if r["kind"] == "source" and r.get("relpath") == name)
    (row,) = [r for r in run["rows"] if r["kind"] == "segment" and r["source_id"] == source["source_id"]]
    return row


@pytest.mark.parametrize("name", ["german.mp4", "french.mp4"])
def test_german_and_french_are_rejected_from_the_audio(language_run, name):
    row = _segment_row(language_run, name)
    numbers = row["numbers"]
    assert row["status"] == "rejected" and row["reason"] == "non_english_speech", row
    assert numbers["speech.language"] == SOURCES[name], numbers
    assert numbers["speech.language_source"] == WHISPER
    assert numbers["speech.transcription_backend"] == "whisperx:faster-whisper-base"
    assert numbers["speech.word_timing"] == "whisper_word_timestamps"


def test_english_is_accepted_with_its_language_and_whisper_word_times(language_run):
    row = _segment_row(language_run, "english.mp4")
    assert row["status"] == "accepted", row
    (sample,) = [s for s in language_run["samples"] if s["source"]["relpath"] == "english.mp4"]
    speech = sample["speech"]
    assert speech["language"] == "en" and speech["language_source"] == WHISPER
    assert "language_unknown" not in speech["flags"]
    assert speech["backends"]["transcription"] == "whisperx:faster-whisper-base"
    assert speech["backends"]["transcription_choice"].startswith("auto: faster-whisper-base ok")
    assert speech["word_timing"] == "whisper_word_timestamps"
    words = speech["words"]
    assert len(words) >= 8 and all(w["timed"] for w in words)
    assert {"garden", "house"} <= {w["text"].strip(".,").lower() for w in words}, speech["transcript"]
    duration = sample["time_range_s"]["duration"]
    for word in words:
        assert 0.0 <= word["start"] <= word["end"] <= duration + 1e-6, word
    assert [w["start"] for w in words] == sorted(w["start"] for w in words)
    stats = language_run["summary"]["stats"]
    assert stats["segments"]["rejected_by_reason"] == {"non_english_speech": 2}
    assert "language_unknown" not in stats["accepted_flags"]
