"""The overlap ratio, the per-segment speech rules and sidecar transcripts (no models)."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.config import SpeechConfig
from pipelines.speech.base import SpeakerActivity, Transcript, Turn, Word
from pipelines.speech.decide import call_language, decide_segment
from pipelines.speech.overlap import activity_from_turns, overlap_stats
from pipelines.speech.sidecar import find_sidecar, parse_cues, read_sidecar


class FixedIdentifier:
    name = "fixed"

    def __init__(self, code, confidence=0.99):
        self.code, self.confidence, self.calls = code, confidence, []

    def identify(self, text):
        self.calls.append(text)
        return self.code, self.confidence


def test_overlap_ratio_from_turns_matches_hand_computation():
    # A speaks 0-4 s, B speaks 3-5 s: speech 5 s, overlap 1 s.
    activity = activity_from_turns([Turn("A", 0, 4), Turn("B", 3, 5)], duration_s=6, backend="t")
    stats = overlap_stats(activity)
    assert stats.speech_s == pytest.approx(5.0)
    assert stats.overlap_s == pytest.approx(1.0)
    assert stats.ratio == pytest.approx(0.2)
    # Restricted to a time range: [3.5, 6) has 1.5 s of speech, 0.5 s overlapped.
    window = overlap_stats(activity, 3.5, 6.0)
    assert (window.speech_s, window.overlap_s) == (pytest.approx(1.5), pytest.approx(0.5))


def test_overlap_ratio_is_zero_without_speech():
    activity = SpeakerActivity(0.0, 0.01, np.zeros(300, dtype=int), "t")
    assert overlap_stats(activity).ratio == 0.0


def test_overlap_on_grid_with_offset_start():
    activity = SpeakerActivity(10.0, 0.5, np.array([0, 1, 2, 2, 1, 0]), "t")
    stats = overlap_stats(activity, 10.5, 12.5)  # frames 1..4
    assert stats.speech_s == pytest.approx(2.0) and stats.overlap_s == pytest.approx(1.0)


ENGLISH = Transcript("we measured the quality of every clip in the dataset today",
                     [Word(w, i * 0.3, i * 0.3 + 0.25) for i, w in enumerate(
                         "we measured the quality of every clip in the dataset today".split())], "test")


def test_segment_with_heavy_overlap_is_rejected_with_its_numbers():
    activity = activity_from_turns([Turn("A", 0, 3), Turn("B", 0.5, 3)], duration_s=3, backend="t")
    decision = decide_segment(0, 3, activity, ENGLISH, FixedIdentifier("en"), SpeechConfig())
    assert decision.decision == "rejected" and decision.reason == "overlapping_speech"
    assert decision.numbers["overlap_ratio"] == pytest.approx(2.5 / 3, abs=0.01)
    assert decision.numbers["max_overlap_ratio"] == 0.10
    # Conversation mode: the overlap is the BOTH role, measured but not a reason to reject.
    kept = decide_segment(0, 3, activity, ENGLISH, FixedIdentifier("en"), SpeechConfig(), overlap_gate=False)
    assert kept.decision == "accepted" and kept.numbers["overlap_ratio"] == decision.numbers["overlap_ratio"]


def test_overlap_is_judged_per_segment_not_per_source():
    # A noisy minute (two speakers 60-120 s) must not reject a clean segment elsewhere.
    activity = activity_from_turns([Turn("A", 0, 120), Turn("B", 60, 120)], duration_s=120, backend="t")
    assert overlap_stats(activity).ratio == pytest.approx(0.5)
    clean = decide_segment(0, 50, activity, None, None, SpeechConfig())
    noisy = decide_segment(60, 110, activity, None, None, SpeechConfig())
    assert clean.decision == "accepted" and noisy.reason == "overlapping_speech"


def test_non_english_text_is_rejected_and_unknown_follows_the_policy():
    activity = activity_from_turns([Turn("A", 0, 4)], duration_s=4, backend="t")
    german = decide_segment(0, 4, activity, ENGLISH, FixedIdentifier("de"), SpeechConfig())
    assert german.reason == "non_english_speech" and german.numbers["language"] == "de"
    sphinx = Transcript(ENGLISH.text, ENGLISH.words, "pocketsphinx:en-us", language_capable=False)
    identifier = FixedIdentifier("en")
    kept = decide_segment(0, 4, activity, sphinx, identifier, SpeechConfig())
    assert kept.decision == "accepted" and kept.flags == ["language_unknown"]
    assert identifier.calls == [], "text from an English-only recogniser is never language-identified"
    strict = decide_segment(0, 4, activity, sphinx, identifier, SpeechConfig(unknown_language_policy="reject"))
    assert strict.reason == "language_unknown"


def test_language_from_audio_detection_wins_over_text():
    call = call_language(ENGLISH, 0, 4, FixedIdentifier("en"), SpeechConfig(), audio_language=("fr", 0.93))
    assert (call.language, call.source) == ("fr", "asr:test")


def test_too_little_text_or_low_confidence_is_unknown_not_a_guess():
    short = Transcript("ok", [Word("ok", 0, 0.2)], "test")
    assert call_language(short, 0, 4, FixedIdentifier("en"), SpeechConfig()).language == "unknown"
    unsure = call_language(ENGLISH, 0, 4, FixedIdentifier("en", 0.2), SpeechConfig())
    assert unsure.language == "unknown" and unsure.confidence == 0.2


def test_payload_times_are_relative_to_the_clip():
    activity = activity_from_turns([Turn("A", 1, 3)], duration_s=4, backend="t")
    decision = decide_segment(0.9, 3.0, activity, ENGLISH, FixedIdentifier("en"), SpeechConfig())
    words = decision.payload["words"]
    assert words and words[0]["start"] >= 0 and all(w["end"] <= 2.1 + 1e-6 for w in words)
    assert decision.payload["turns"] == [{"speaker": "A", "start": pytest.approx(0.1), "end": pytest.approx(2.1)}]


SRT = """1
00:00:00,500 --> 00:00:02,000
Guten Morgen, wie geht es

2
00:00:02,000 --> 00:00:03,250
<i>Ihnen heute?</i>
"""


def test_srt_cues_and_words(tmp_path):
    assert parse_cues(SRT) == [(0.5, 2.0, "Guten Morgen, wie geht es"), (2.0, 3.25, "Ihnen heute?")]
    video = tmp_path / "talk.mp4"
    video.write_bytes(b"")
    (tmp_path / "talk.srt").write_text(SRT)
    transcript = read_sidecar(find_sidecar(video), duration_s=4.0)
    assert transcript.language_capable and transcript.backend == "sidecar:srt"
    assert [w.text for w in transcript.words][:2] == ["Guten", "Morgen,"]
    assert transcript.words[0].start == 0.5 and transcript.words[-1].end == pytest.approx(3.25)


def test_vtt_and_plain_text(tmp_path):
    vtt = "WEBVTT\n\n00:01.000 --> 00:02.500\nBonjour tout le monde\n"
    assert parse_cues(vtt) == [(1.0, 2.5, "Bonjour tout le monde")]
    txt = tmp_path / "a.txt"
    txt.write_text("hello there\nfriends\n")
    transcript = read_sidecar(txt, duration_s=3.0)
    assert transcript.text == "hello there friends" and transcript.words[-1].end == pytest.approx(3.0)
    bad = tmp_path / "b.srt"
    bad.write_text("no cues here")
    with pytest.raises(ValueError, match="no subtitle cues"):
        read_sidecar(bad, 3.0)


def test_source_transcript_of_clips_takes_each_stretch_once_and_the_most_heard_language():
    """The source-level transcript when each clip was transcribed on its own: where two clips
    overlap, the words come from the one that starts first; the language is the one heard over
    the most clip seconds, with no probability (no single detection gave it)."""
    from pipelines.schema.records import Segment
    from pipelines.speech.stage import source_transcript

    def clip(key, start, end):
        return Segment(key=key, track_id=0, start_s=start, end_s=end, status="accepted", numbers={})

    english = Transcript("good morning", [Word("good", 0.2, 0.5), Word("morning", 0.6, 1.1)], "w", "en", 0.9,
                         word_timing="whisper_word_timestamps")
    french = Transcript("matin bonjour", [Word("matin", 0.8, 1.0), Word("bonjour", 1.3, 1.8)], "w", "fr", 0.8,
                        word_timing="whisper_word_timestamps")
    spanish = Transcript("hola", [Word("hola", 3.0, 3.4)], "w", "es", 0.7, word_timing="whisper_word_timestamps")
    merged = source_transcript([(clip("fr", 0.7, 2.5), french), (clip("es", 2.9, 3.5), spanish),
                                (clip("en", 0.0, 1.2), english)])
    # "matin" (midpoint 0.9 s) lies in the English clip, which starts first: left out.
    assert [w.text for w in merged.words] == ["good", "morning", "bonjour", "hola"]
    assert merged.text == "good morning bonjour hola"
    assert (merged.language, merged.language_probability) == ("fr", None)  # 1.8 s of French, 1.2 of English
    assert merged.word_timing == "whisper_word_timestamps"
    assert source_transcript([]) is None
