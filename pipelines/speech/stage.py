"""The speech stage for one source: activity, transcript, language, and a decision per segment.

It reads the 16 kHz audio the face stage kept from its one decode pass, so the source is
not decoded again, and writes ``speech.json`` beside the face record.

What is transcribed:

- subtitles beside the source: they are the transcript (no audio language);
- a transcriber that hears languages (Whisper, ``transcribe_clip``): each candidate clip on
  its own, so that every clip's language comes from its own audio (a French clip inside an
  English source is found) from the same encoder pass that its words are decoded from: one
  Whisper encoder pass per clip of up to 30 s of speech, none for speech outside the clips.
  The source-level transcript in ``details["source"]`` is then the clips' words in time order
  (where clips overlap, from the clip that starts first) and its language the one heard over
  the most clip seconds (``transcript_scope: "clips"``);
- any other transcriber (pocketsphinx): the whole source once (``transcript_scope: "source"``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pipelines.config import PipelineConfig
from pipelines.media.wav import read_wav_float
from pipelines.models import ModelError, ModelStore
from pipelines.schema.records import Segment, SourceRecord, SourceRef, StageResult
from pipelines.speech.base import (SAMPLE_RATE, WORD_TIMING_NONE, ActivityBackend, ClipTranscriptionBackend,
                                   LanguageIdentifier, SpeakerActivity, Transcript, TranscriptionBackend, Turn)
from pipelines.speech.decide import decide_segment
from pipelines.speech.overlap import overlap_stats
from pipelines.speech.sidecar import find_sidecar, read_sidecar
from pipelines.stage_spec import StageContext, StageSpec
from pipelines.workdir import SOURCE_AUDIO_FILE, source_dir

STAGE = "speech"


@dataclass
class SpeechBackends:
    activity: ActivityBackend
    transcriber: TranscriptionBackend | None
    identifier: LanguageIdentifier | None
    # Why this transcriber: "configured" or, for transcription_backend auto, what was found.
    transcription_choice: str = "configured"

    def names(self) -> dict:
        return {"activity": self.activity.name,
                "transcription": self.transcriber.name if self.transcriber else None,
                "transcription_choice": self.transcription_choice,
                "language": self.identifier.name if self.identifier else None}


def choose_transcription(config: PipelineConfig, store: ModelStore) -> tuple[str, Path | None, str]:
    """(backend, Whisper folder or None, why) for ``speech.transcription_backend``.

    ``auto`` takes whisperx when the configured Whisper folder is present and verified (the
    registered faster-whisper-base: every file's sha256; another folder: its files exist),
    else pocketsphinx. ``whisperx`` named explicitly fails when the folder is not usable.
    Hashes are checked once per process (pipelines.models caches them).
    """
    from pipelines.speech.asr_whisperx import whisper_folder_status

    speech = config.speech
    if speech.transcription_backend in ("pocketsphinx", "none"):
        return speech.transcription_backend, None, "configured"
    status = whisper_folder_status(Path(config.paths.model_dir), speech.whisper_model, store)
    usable = status.state in ("ok", "unpinned")
    if speech.transcription_backend == "whisperx":
        if not usable:
            raise ModelError(f"speech.transcription_backend is whisperx but {status.name} is {status.state}: "
                             f"{status.detail}")
        return "whisperx", status.path, "configured"
    if usable:
        return "whisperx", status.path, f"auto: {speech.whisper_model} {status.state}"
    return "pocketsphinx", None, f"auto: {speech.whisper_model} {status.state}, so pocketsphinx"


def build_backend(config: PipelineConfig) -> SpeechBackends:
    """The backends named in ``config.speech``, loaded from the model directory."""
    from pipelines.devices import ctranslate2_device, thread_limit, torch_device

    speech, model_dir = config.speech, Path(config.paths.model_dir)
    store = ModelStore(model_dir)
    torch_device(speech.device)  # pyannote (and the wav2vec2 aligner) run on torch
    if speech.activity_backend == "pyannote_segmentation":
        from pipelines.speech.segmentation import PyannoteSegmentationActivity

        activity = PyannoteSegmentationActivity(
            store.path("pyannote_segmentation_whisperx"),  # sha256-verified
            onset=speech.segmentation_onset, step_s=speech.segmentation_step_s, device=speech.device)
    else:
        from pipelines.speech.diarization import PyannoteDiarizationActivity

        activity = PyannoteDiarizationActivity(model_dir / speech.diarization_pipeline,
                                               hf_token_env=speech.hf_token_env, device=speech.device)
    transcriber = None
    backend, whisper_dir, choice = choose_transcription(config, store)
    if backend == "pocketsphinx":
        from pipelines.speech.asr_pocketsphinx import PocketsphinxTranscriber

        transcriber = PocketsphinxTranscriber()  # CPU only; with device cuda the activity model still uses the GPU
    elif backend == "whisperx":
        from pipelines.speech.asr_whisperx import WhisperxTranscriber

        transcriber = WhisperxTranscriber(
            whisper_dir, device=ctranslate2_device(speech.device), compute_type=speech.whisper_compute_type,
            batch_size=speech.whisper_batch_size, cpu_threads=thread_limit(),
            short_window_s=speech.whisper_short_window_s,
            short_window_min_probability=speech.whisper_short_window_min_probability,
            alignment_model_dir=model_dir / speech.alignment_model if speech.alignment_model else None)
    identifier = None
    if speech.language_identifier == "lingua":
        from pipelines.speech.language import LinguaIdentifier

        identifier = LinguaIdentifier()
    return SpeechBackends(activity, transcriber, identifier, choice)


def _shift_transcript(t: Transcript, offset: float) -> Transcript:
    if not offset:
        return t
    return replace(t, words=[replace(w, start=w.start + offset, end=w.end + offset) for w in t.words])


def _shift_activity(a: SpeakerActivity, offset: float) -> SpeakerActivity:
    if not offset:
        return a
    return replace(a, start_s=a.start_s + offset,
                   turns=[Turn(t.speaker, t.start + offset, t.end + offset) for t in a.turns])


def assign_speakers(transcript: Transcript, turns: list[Turn]) -> Transcript:
    """Each word gets the speaker whose turns overlap it longest (None when no turn does)."""
    def speaker_of(word) -> str | None:
        best, best_overlap = None, 0.0
        for turn in turns:
            overlap = min(word.end, turn.end) - max(word.start, turn.start)
            if overlap > best_overlap:
                best, best_overlap = turn.speaker, overlap
        return best

    return replace(transcript, words=[replace(w, speaker=speaker_of(w)) for w in transcript.words])


@dataclass
class ClipSpeech:
    """What one candidate clip is decided from: its transcript (source clock) and the language
    heard in its own audio, when the transcriber hears languages."""

    transcript: Transcript | None
    audio_language: tuple[str, float] | None = None


def clip_samples(segment: Segment, offset: float, samples: int) -> tuple[int, int]:
    """[lo, hi) sample range of ``segment`` in the source audio, which starts at ``offset`` s."""
    lo = int(max(0.0, segment.start_s - offset) * SAMPLE_RATE)
    return min(lo, samples), min(max(lo, int(max(0.0, segment.end_s - offset) * SAMPLE_RATE)), samples)


def transcribe_clips(audio: np.ndarray, offset: float, candidates: tuple[Segment, ...],
                     transcriber: ClipTranscriptionBackend) -> dict[str, ClipSpeech]:
    """Each candidate clip transcribed from its own audio, with its own language; a sample range
    shared by several candidates is transcribed once."""
    heard: dict[tuple[int, int], ClipSpeech] = {}
    clips = {}
    for segment in candidates:
        lo, hi = clip_samples(segment, offset, len(audio))
        if (lo, hi) not in heard:
            transcript, language = transcriber.transcribe_clip(audio[lo:hi], SAMPLE_RATE)
            heard[lo, hi] = ClipSpeech(_shift_transcript(transcript, offset + lo / SAMPLE_RATE), language)
        clips[segment.key] = heard[lo, hi]
    return clips


def source_transcript(clips: list[tuple[Segment, Transcript]]) -> Transcript | None:
    """The source's transcript made of its clips' transcripts: their words in time order, a
    stretch covered by several clips taken from the one that starts first (a word of a later
    clip whose midpoint lies before the end of an earlier clip is left out); the language is
    the one heard over the most clip seconds, without a probability (it is no single
    detection). None without clips."""
    if not clips:
        return None
    clips = sorted(clips, key=lambda item: (item[0].start_s, item[0].end_s))
    words, covered_until, seconds = [], -np.inf, Counter()
    for segment, transcript in clips:
        words += [w for w in transcript.words if (w.start + w.end) / 2 >= covered_until]
        covered_until = max(covered_until, segment.end_s)
        if transcript.language:
            seconds[transcript.language] += segment.end_s - segment.start_s
    words.sort(key=lambda w: (w.start, w.end))
    timings = Counter(t.word_timing for _, t in clips for _ in t.words)
    first = clips[0][1]
    return Transcript(" ".join(w.text for w in words), words, first.backend,
                      seconds.most_common(1)[0][0] if seconds else None, None, first.language_capable,
                      timings.most_common(1)[0][0] if words else WORD_TIMING_NONE)


def analyse_speech(source: SourceRef, record: SourceRecord, config: PipelineConfig, backends: SpeechBackends,
                   candidates: tuple[Segment, ...]) -> StageResult:
    """Run the speech backends over the source's audio and decide every candidate segment."""
    audio = read_wav_float(source_dir(config, source.source_id) / SOURCE_AUDIO_FILE, SAMPLE_RATE)
    offset = float(record.numbers.get("audio_start_s", 0.0))
    duration = len(audio) / SAMPLE_RATE
    activity = _shift_activity(backends.activity.activity(audio, SAMPLE_RATE), offset)

    def with_speakers(transcript: Transcript | None) -> Transcript | None:
        return assign_speakers(transcript, activity.turns) if transcript is not None and activity.turns else transcript

    sidecar = find_sidecar(source.path) if config.speech.sidecar_transcripts else None
    per_clip = sidecar is None and hasattr(backends.transcriber, "transcribe_clip")
    if per_clip:
        clips = {key: replace(clip, transcript=with_speakers(clip.transcript))
                 for key, clip in transcribe_clips(audio, offset, candidates, backends.transcriber).items()}
        transcript = source_transcript([(s, clips[s.key].transcript) for s in candidates])
        scope = "clips"
    else:
        transcript, scope = None, "sidecar" if sidecar is not None else "source"
        if sidecar is not None:
            transcript = read_sidecar(sidecar, duration)  # subtitle times are on the source clock already
        elif backends.transcriber is not None:
            transcript = _shift_transcript(backends.transcriber.transcribe(audio, SAMPLE_RATE), offset)
        transcript = with_speakers(transcript)
        clips = {segment.key: ClipSpeech(transcript) for segment in candidates}

    decisions = {}
    for segment in candidates:
        clip = clips[segment.key]
        decisions[segment.key] = decide_segment(segment.start_s, segment.end_s, activity, clip.transcript,
                                                backends.identifier, config.speech, clip.audio_language,
                                                overlap_gate=config.conversation.mode != "conversation")
    backend = transcript.backend if transcript else backends.transcriber.name if per_clip else None
    names = {**backends.names(), "transcription": backend}
    decisions = {key: d.model_copy(update={"payload": {**d.payload, "backends": names}}) for key, d in decisions.items()}
    whole = overlap_stats(activity)
    details = {
        "backends": names,
        "audio_seconds": round(duration, 4),
        "source": {**whole.as_dict(), "transcript": transcript.text if transcript else None,
                   "language": transcript.language if transcript else None,
                   "word_timing": transcript.word_timing if transcript else WORD_TIMING_NONE,
                   "transcript_scope": scope},
        "activity": activity.as_dict(),
    }
    return StageResult(stage=STAGE, segments=decisions, details=details)


def run(ctx: StageContext) -> StageResult:
    return analyse_speech(ctx.source, ctx.record, ctx.config, ctx.backend, ctx.candidates)


SPEC = StageSpec(
    name=STAGE, needs=("asd",), config_sections=("speech", "conversation.mode"), version="4", build_backend=build_backend, run=run,
    description="Speaker activity, transcript and language of one source; a speech decision per clip.",
)
