"""The speech rules, applied per candidate segment with the speech of its own time range.

A segment is rejected when more than ``max_overlap_ratio`` of its speech overlaps
(``overlapping_speech``) or when its language is not the required one
(``non_english_speech`` for the default "en"). When no backend can tell the language,
``unknown_language_policy`` decides: keep (flagged ``language_unknown``) or reject.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pipelines.config import SpeechConfig
from pipelines.schema.records import ACCEPTED, REJECTED, StageDecision
from pipelines.speech.base import UNKNOWN_LANGUAGE, WORD_TIMING_NONE, LanguageIdentifier, SpeakerActivity, Transcript
from pipelines.speech.overlap import overlap_stats


@dataclass
class LanguageCall:
    language: str
    confidence: float | None
    source: str  # "asr:<backend>", "text:<identifier>" or "none"
    detail: str = ""


def language_reason(required: str) -> str:
    return "non_english_speech" if required == "en" else f"language_not_{required}"


def call_language(transcript: Transcript | None, start: float, end: float, identifier: LanguageIdentifier | None,
                  config: SpeechConfig, audio_language: tuple[str, float] | None = None) -> LanguageCall:
    """The segment's language: from the audio by the ASR when it detects one, else from
    language-capable text, else unknown. Never a silent guess."""
    if audio_language is not None and audio_language[0]:
        return LanguageCall(audio_language[0], round(audio_language[1], 4), f"asr:{transcript.backend if transcript else '?'}")
    if transcript is None:
        return LanguageCall(UNKNOWN_LANGUAGE, None, "none", "no transcript")
    if not transcript.language_capable:
        return LanguageCall(UNKNOWN_LANGUAGE, None, "none",
                            f"{transcript.backend} transcribes one language only; its text says nothing about the spoken one")
    if identifier is None:
        return LanguageCall(UNKNOWN_LANGUAGE, None, "none", "no language identifier configured")
    text = " ".join(w.text for w in transcript.words_in(start, end))
    if len(text) < config.min_language_chars:
        return LanguageCall(UNKNOWN_LANGUAGE, None, "none",
                            f"{len(text)} characters of text, fewer than {config.min_language_chars}")
    code, confidence = identifier.identify(text)
    if code is None or confidence < config.min_language_confidence:
        return LanguageCall(UNKNOWN_LANGUAGE, round(confidence, 4), f"text:{identifier.name}",
                            f"confidence {confidence:.2f} below {config.min_language_confidence}")
    return LanguageCall(code, round(confidence, 4), f"text:{identifier.name}")


def decide_segment(start: float, end: float, activity: SpeakerActivity, transcript: Transcript | None,
                   identifier: LanguageIdentifier | None, config: SpeechConfig,
                   audio_language: tuple[str, float] | None = None, overlap_gate: bool = True) -> StageDecision:
    """The speech decision of one segment. ``overlap_gate`` False (conversation mode): overlapping
    speech is data (the BOTH role), not a reason to reject; it is still measured."""
    overlap = overlap_stats(activity, start, end)
    language = call_language(transcript, start, end, identifier, config, audio_language)
    words = transcript.words_in(start, end) if transcript else []
    numbers = {**overlap.as_dict(), "max_overlap_ratio": config.max_overlap_ratio,
               "language": language.language, "language_confidence": language.confidence,
               "language_source": language.source, "required_language": config.required_language,
               # What produced the words and how their times were obtained (base.WORD_TIMINGS).
               "transcription_backend": transcript.backend if transcript else None,
               "word_timing": transcript.word_timing if transcript and words else WORD_TIMING_NONE}
    payload = {
        "transcript": " ".join(w.text for w in words),
        # Words are picked by their midpoint, so one may straddle a clip edge: clip it to the clip.
        "words": [{**asdict(w), "start": round(max(w.start, start) - start, 4), "end": round(min(w.end, end) - start, 4)}
                  for w in words],
        "turns": [{"speaker": t.speaker, "start": round(max(t.start, start) - start, 4),
                   "end": round(min(t.end, end) - start, 4)}
                  for t in activity.turns if t.end > start and t.start < end],
        "times": "seconds from the start of the clip",
        **numbers,
        "language_detail": language.detail,
    }
    flags = []
    if overlap_gate and overlap.ratio > config.max_overlap_ratio:
        return StageDecision(decision=REJECTED, reason="overlapping_speech", numbers=numbers, flags=flags,
                             payload=payload)
    if language.language == UNKNOWN_LANGUAGE:
        flags.append("language_unknown")
        if config.unknown_language_policy == "reject":
            return StageDecision(decision=REJECTED, reason="language_unknown", numbers=numbers, flags=flags,
                                 payload=payload)
    elif language.language != config.required_language:
        return StageDecision(decision=REJECTED, reason=language_reason(config.required_language), numbers=numbers,
                             flags=flags, payload=payload)
    return StageDecision(decision=ACCEPTED, numbers=numbers, flags=flags, payload=payload)
