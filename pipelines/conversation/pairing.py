"""The session-level step of conversation mode: after every per-source stage, before the shards.

For each session (pipelines/conversation/plan.py) and each accepted sample of it, the *actor*,
it writes beside the actor's clip files (atomically):

- ``<key>.role.npy``: the role per 24 fps output frame on the session clock (pipelines/conversation/roles.py);
- ``<key>.partner.wav``: the partner's audio over the actor's span, as many samples as the actor's wav.
  Per participant: the partner's own microphone (``own_microphone``). Shared video: the mixed
  track, zero outside the frames where someone else speaks (``mix_masked_by_speaker``); the actor's
  own wav is the mix as the stages wrote it (``mix``);
- ``<key>.partner.flame.npz``: the partner's samples' FLAME arrays (``raw/``, ``smooth/``) on the
  actor's frames, with ``tracked``; left out when none of the partner's samples has FLAME arrays.

The partner is, per participant, the other participant (with more than two, the one whose
microphone is voiced most over the actor's span); in a shared video, the other face track that
overlaps the actor's longest in time (none: no partner, and voices off screen still make
listening frames). One :class:`~pipelines.conversation.summary.SessionSummary` per session
records it all with the fingerprints of its inputs; a session whose inputs are unchanged is not
recomputed. Pure library code: ``talkinghead run`` and the ``conversations`` asset call it.
"""

from __future__ import annotations

import functools
import hashlib
import io
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from pipelines.atomic import atomic_path, file_lock
from pipelines.config import PipelineConfig
from pipelines.devices import torch_device
from pipelines.conversation.plan import PlannedParticipant, SessionPlan, plan_sessions
from pipelines.conversation.roles import (
    Timeline,
    busiest,
    frame_times,
    frames_on_grid,
    most_overlapping,
    per_participant_roles,
    role_seconds,
    sample_mask,
    shared_video_roles,
    voice_activity,
    voice_turn_roles,
)
from pipelines.conversation.voices import NO_VOICE, enrollment_masks, voice_turns
from pipelines.conversation.summary import (
    ActorSummary,
    INDEX_FILE,
    ConversationIndex,
    SessionSummary,
    conversations_dir,
    load_summaries,
    summary_file_name,
)
from pipelines.media.wav import read_wav_float, read_wav_slice, write_wav
from pipelines.registry import STAGES
from pipelines.runner import ModelBackends, decided_record, load_result, result_path, stage_fingerprints
from pipelines.schema.conversation import (
    PARTNER_AUDIO_MEMBER,
    PARTNER_FLAME_MEMBER,
    PARTNER_TRACKED_ARRAY,
    ROLE_MEMBER,
    ConversationInfo,
    Role,
)
from pipelines.schema.records import ACCEPTED, Segment, SourceRecord, SourceRef
from pipelines.schema.sample import SampleRecord
from pipelines.stage_spec import digest
from pipelines.workdir import RECORD_FILE, SOURCE_AUDIO_FILE, load_record, source_dir, source_lock

PAIRING_VERSION = "2"
# What the pairing reads of the config: its own section, the ASD threshold, the clip rates, and the
# speech stage's activity settings (the speaker count it recomputes when the result lacks it).
CONFIG_SECTIONS = ("conversation", "asd", "crops", "audio", "speech")
ROLE_SOURCE_MICROPHONES = "own_microphone_level"
ROLE_SOURCE_SHARED = "speaker_count+light_asd"
ROLE_SOURCE_VOICES = "speaker_count+voice_turns+light_asd"
MOTION_GROUPS = ("raw", "smooth")  # the per-frame arrays of flame.npz (meta/ is per clip)

OutcomeStatus = Literal["ran", "unchanged", "empty", "pending", "failed"]


class PairingError(ValueError):
    """A session that cannot be paired; the message says which and why."""


@dataclass
class SessionOutcome:
    plan: SessionPlan
    status: OutcomeStatus  # empty: paired, no accepted sample; pending: a source's face stage has not run
    detail: str | None = None
    summary: SessionSummary | None = None


@dataclass
class PairingReport:
    sessions: list[SessionOutcome] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # sidecar -> why

    @property
    def summaries(self) -> list[SessionSummary]:
        return [o.summary for o in self.sessions if o.summary is not None]

    @property
    def failures(self) -> dict[str, str]:
        return {o.plan.name: o.detail or "" for o in self.sessions if o.status == "failed"}


@dataclass
class _Source:
    """One session source as the stages left it."""

    participant: PlannedParticipant
    record: SourceRecord  # the face stage's
    decided: SourceRecord  # after every enabled stage's decisions
    folder: Path

    @property
    def source_id(self) -> str:
        return self.record.source_id

    @property
    def start_s(self) -> float:
        return self.participant.start_s

    @property
    def audio_start_s(self) -> float:
        return float(self.record.numbers.get("audio_start_s", 0.0))

    def accepted(self) -> list[Segment]:
        return self.decided.accepted_segments() if self.decided.status == ACCEPTED else []

    def audio(self, sample_rate: int) -> np.ndarray:
        path = self.folder / SOURCE_AUDIO_FILE
        if not path.is_file():
            raise PairingError(f"{self.source_id}: no source audio ({self.record.status}"
                               f"{f': {self.record.reason}' if self.record.reason else ''})")
        return read_wav_float(path, sample_rate)


@dataclass(frozen=True)
class _Clip:
    """One accepted sample's frame and sample grid."""

    segment: Segment
    frames: int
    fps: float
    samples: int
    sample_rate: int

    @classmethod
    def of(cls, source: _Source, segment: Segment) -> _Clip:
        sample = SampleRecord.load(source.folder / segment.files["json"])
        return cls(segment, sample.video.frames, sample.video.fps, sample.audio.samples, sample.audio.sample_rate)

    def times(self, offset_s: float = 0.0) -> np.ndarray:
        """Each output frame's time on the session clock (``offset_s``: the source's start on it)."""
        return frame_times(offset_s + self.segment.start_s, self.frames, self.fps)


@dataclass
class _Members:
    roles: np.ndarray
    partner_audio: np.ndarray  # int16
    partner_flame: dict[str, np.ndarray] | None


def pair_sessions(config: PipelineConfig, sources: Iterable[SourceRef], backends: ModelBackends | None = None,
                  progress: bool = False) -> PairingReport:
    """Pair every session of ``sources`` (all the registered sources) and write the index; nothing in
    speaking-only mode. A session that fails is reported and does not stop the others."""
    if config.conversation.mode != "conversation":
        return PairingReport()
    folder = conversations_dir(config)
    folder.mkdir(parents=True, exist_ok=True)
    with file_lock(folder / ".pairing.lock"):
        sessions = plan_sessions(config, list(sources))
        written_before = _member_files(load_summaries(config))
        report = PairingReport(refused=sessions.refused)
        for plan in tqdm(sessions.plans, desc="conversations", unit="session", disable=not progress):
            try:
                report.sessions.append(_pair_session(plan, config, backends, folder))
            except Exception as error:  # one bad session must not stop the others
                report.sessions.append(SessionOutcome(plan, "failed", f"{type(error).__name__}: {error}"))
        index = ConversationIndex(sources={sid: s.file_name for s in report.summaries for sid in s.inputs},
                                  refused=sessions.refused)
        index.save(folder)
        # What no current summary names any more: members of actors gone, summaries of sessions gone.
        for source_id, name in written_before - _member_files(report.summaries):
            (source_dir(config, source_id) / name).unlink(missing_ok=True)
        kept = set(index.sources.values()) | {INDEX_FILE}
        for path in folder.glob("*.json"):
            if path.name not in kept:
                path.unlink()
    return report


def _member_files(summaries: Iterable[SessionSummary]) -> set[tuple[str, str]]:
    return {(actor.source_id, name) for summary in summaries for actor in summary.actors
            for name in actor.files.values()}


def _settings(plan: SessionPlan, config: PipelineConfig) -> dict:
    """What a session's pairing depends on besides its sources' stage outputs."""
    return {"version": PAIRING_VERSION,
            "config": {name: getattr(config, name).model_dump(mode="json") for name in CONFIG_SECTIONS},
            "session": [plan.name, plan.input, plan.sidecar],
            "participants": [[p.id, p.source.source_id, p.start_s] for p in plan.participants]}


def _stamp(plan: SessionPlan, config: PipelineConfig) -> str:
    """The settings and the identity of every stored output of the session's sources: a few stat calls.
    Every stage writes its output under a new name and renames it, so a rewrite changes the inode."""
    names = [RECORD_FILE] + [result_path(config, "-", spec.name).name for spec in STAGES
                             if not spec.is_root and spec.enabled(config)]
    files = {}
    for participant in plan.participants:
        folder = source_dir(config, participant.source.source_id)
        for name in names:
            try:
                info = (folder / name).stat()
                files[f"{participant.source.source_id}/{name}"] = [info.st_size, info.st_mtime_ns, info.st_ino]
            except FileNotFoundError:
                files[f"{participant.source.source_id}/{name}"] = None
    return digest({**_settings(plan, config), "files": files})


def _current(summary: SessionSummary, config: PipelineConfig) -> bool:
    return all((source_dir(config, actor.source_id) / name).is_file()
               for actor in summary.actors for name in actor.files.values())


def _existing(path: Path) -> SessionSummary | None:
    try:
        return SessionSummary.load(path) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _pair_session(plan: SessionPlan, config: PipelineConfig, backends: ModelBackends | None,
                  folder: Path) -> SessionOutcome:
    from pipelines.shards import source_fingerprint

    with ExitStack() as stack:
        for source_id in sorted({ref.source_id for ref in plan.sources}):  # one order: no deadlock between pairings
            stack.enter_context(source_lock(config, source_id))
        stamp = _stamp(plan, config)
        existing = _existing(folder / summary_file_name(plan.input, plan.name))
        if existing is not None and existing.stamp == stamp and _current(existing, config):
            return SessionOutcome(plan, "unchanged", summary=existing)
        sources = {}
        for participant in plan.participants:
            record = load_record(config, participant.source.source_id)
            if record is None:
                return SessionOutcome(plan, "pending", f"{participant.source.source_id}: the face stage has not run")
            sources[participant.id] = _Source(participant, record, decided_record(config, record),
                                              source_dir(config, record.source_id))
        inputs = {s.source_id: source_fingerprint(stage_fingerprints(config, s.source_id)) for s in sources.values()}
        fingerprint = digest({**_settings(plan, config), "inputs": inputs})
        if existing is not None and existing.fingerprint == fingerprint and _current(existing, config):
            existing = existing.model_copy(update={"stamp": stamp})  # outputs rewritten, their content the same
            existing.save(folder)
            return SessionOutcome(plan, "unchanged", summary=existing)
        members, infos = {}, {}
        if any(source.accepted() for source in sources.values()):
            if plan.input == "per_participant":
                members, infos = _per_participant(plan, sources, config)
            else:
                (source,) = sources.values()
                members, infos = _shared_video(plan, source, config, backends)
        actors = []
        for source in sources.values():
            for segment in source.accepted():
                clip = _Clip.of(source, segment)
                files, hashes = _write_members(source.folder, segment.key, members[segment.key],
                                               config.audio.sample_rate)
                actors.append(ActorSummary(key=segment.key, source_id=source.source_id,
                                           start_s=round(source.start_s + segment.start_s, 6), fps=clip.fps,
                                           info=infos[segment.key], files=files, sha256=hashes))
        if plan.input == "per_participant":
            participants = {p.id: p.source.source_id for p in plan.participants}
        else:  # the face tracks of the one source
            (source,) = sources.values()
            participants = {f"track{s.track_id}": source.source_id for s in source.record.segments
                            if s.status == ACCEPTED}
        summary = SessionSummary(session=plan.name, input=plan.input, sidecar=plan.sidecar,
                                 participants=dict(sorted(participants.items())), fingerprint=fingerprint,
                                 inputs=inputs, stamp=stamp, actors=tuple(actors))
        summary.save(folder)
        return SessionOutcome(plan, "ran" if actors else "empty", summary=summary)


def _per_participant(plan: SessionPlan, sources: dict[str, _Source],
                     config: PipelineConfig) -> tuple[dict[str, _Members], dict[str, ConversationInfo]]:
    rate = config.audio.sample_rate
    voiced = {pid: voice_activity(s.audio(rate), rate, s.start_s + s.audio_start_s, config.conversation)
              for pid, s in sources.items()}
    members, infos = {}, {}
    for pid, source in sources.items():
        for segment in source.accepted():
            clip = _Clip.of(source, segment)
            times = clip.times(source.start_s)
            own = voiced[pid].at(times, False)
            others = {q: voiced[q].at(times, False) for q in sources if q != pid}
            roles = per_participant_roles(own, list(others.values()))
            partner_id = busiest(others)
            partner = sources[partner_id]
            first_s = source.start_s + segment.start_s  # the actor's first audio sample, on the session clock
            audio, _ = read_wav_slice(partner.folder / SOURCE_AUDIO_FILE, rate, first_s - partner.start_s,
                                      first_s - partner.start_s + clip.samples / rate, partner.audio_start_s)
            flame = _placed_flame(partner, times, clip.fps)
            members[segment.key] = _Members(roles, _fit(audio, clip.samples), flame)
            infos[segment.key] = ConversationInfo(
                session=plan.name, input="per_participant", actor=pid, partner=partner_id,
                partner_key=_overlapping_sample(partner, times, clip.fps), actor_audio="own_microphone",
                partner_audio="own_microphone", partner_flame_frames=_tracked_frames(flame),
                role_seconds=role_seconds(roles, clip.fps), role_source=ROLE_SOURCE_MICROPHONES)
    return members, infos


def _shared_video(plan: SessionPlan, source: _Source, config: PipelineConfig,
                  backends: ModelBackends | None) -> tuple[dict[str, _Members], dict[str, ConversationInfo]]:
    if not config.asd.enabled:
        raise PairingError(f"{source.source_id}: a shared video needs the asd stage (asd.enabled) to tell which "
                           "face speaks")
    asd = load_result(config, source.source_id, "asd")
    if asd is None or asd.skipped:
        raise PairingError(f"{source.source_id}: no ASD result ({asd.skipped if asd else 'the stage has not run'})")
    rate = config.audio.sample_rate
    audio = source.audio(rate)
    speakers = speaker_counts(config, source.source_id, source.audio_start_s, audio, backends)
    probability = _track_probabilities(asd.details.get("plots") or {}, source)
    faces = {}
    for segment in source.record.segments:  # every face the face stage tracked long enough
        if segment.status == ACCEPTED:
            faces.setdefault(segment.track_id, []).append((segment.start_s, segment.end_s))
    tracks = sorted(probability)

    def faces_at(times: np.ndarray) -> np.ndarray:
        return np.stack([probability[track].at(times, 0.0) for track in tracks]) if tracks else np.zeros((0, len(times)))

    turns = (voice_turns(voice_encoder(config), audio, source.audio_start_s, speakers, faces_at, config.conversation)
             if config.conversation.shared_video_voices else None)
    members, infos = {}, {}
    for segment in source.accepted():
        clip = _Clip.of(source, segment)
        times = clip.times()
        actor = segment.track_id
        if actor not in probability:
            raise PairingError(f"{segment.key}: the ASD result has no probability for face track {actor}")
        if turns is not None:
            row = tracks.index(actor)
            sure = enrollment_masks(faces_at(times), turns.at(times) != NO_VOICE, config.conversation, 1 / clip.fps)
            others_sure = np.delete(np.stack(sure[:len(tracks)]), row, axis=0).any(axis=0)
            roles = voice_turn_roles(turns.at(times), row, speakers.at(times, 0) >= 2, sure[row], others_sure, NO_VOICE)
        else:
            others = [p for track, p in probability.items() if track != actor]
            roles = shared_video_roles(speakers.at(times, 0), probability[actor].at(times, 0.0),
                                       [p.at(times, 0.0) for p in others], config.asd.threshold)
        span = (segment.start_s, segment.start_s + clip.frames / clip.fps)
        partner_track = most_overlapping(span, {str(t): spans for t, spans in faces.items() if t != actor})
        audio, _ = read_wav_slice(source.folder / SOURCE_AUDIO_FILE, rate, segment.start_s,
                                  segment.start_s + clip.samples / rate, source.audio_start_s)
        heard = sample_mask((roles & int(Role.LISTENING)) != 0, clip.samples, rate, clip.fps)
        flame, partner_key = None, None
        if partner_track is not None:
            flame = _placed_flame(source, times, clip.fps, track=int(partner_track))
            partner_key = _overlapping_sample(source, times, clip.fps, track=int(partner_track))
        members[segment.key] = _Members(roles, np.where(heard, _fit(audio, clip.samples), 0).astype(np.int16), flame)
        infos[segment.key] = ConversationInfo(
            session=plan.name, input="shared_video", actor=f"track{actor}",
            partner=f"track{partner_track}" if partner_track is not None else None, partner_key=partner_key,
            actor_audio="mix", partner_audio="mix_masked_by_speaker", partner_flame_frames=_tracked_frames(flame),
            role_seconds=role_seconds(roles, clip.fps),
            role_source=ROLE_SOURCE_VOICES if turns is not None else ROLE_SOURCE_SHARED)
    return members, infos


@functools.lru_cache(maxsize=2)
def _cached_voice_encoder(path: str, device: str):
    from pipelines.conversation.voices import VoiceEncoder

    return VoiceEncoder(path, device)


def voice_encoder(config: PipelineConfig):
    """The GE2E voice encoder (registry ``resemblyzer_voice_encoder``), loaded once per process."""
    from pipelines.models import ModelError, ModelStore

    try:
        path = ModelStore(config.paths.model_dir).path("resemblyzer_voice_encoder")
    except ModelError as exc:
        raise PairingError(f"a shared video's voice turns need the voice encoder ({exc}); or set "
                           "conversation.shared_video_voices: false") from exc
    return _cached_voice_encoder(str(path), torch_device(config.asd.device))


def speaker_counts(config: PipelineConfig, source_id: str, audio_start_s: float, audio: np.ndarray,
                   backends: ModelBackends | None = None) -> Timeline:
    """The number of voices at each time of a source, on its clock: the speech stage's stored count
    when its result holds one (``details["activity"]["counts"]``, run-length pairs), else the speech
    stage's activity backend run again on the source's ``audio`` (which starts at ``audio_start_s``;
    the backend is deterministic, so this is the count the stage decided on)."""
    speech = load_result(config, source_id, "speech")
    activity = (speech.details.get("activity") or {}) if speech is not None else {}
    if activity.get("counts") is not None:
        counts = Timeline(float(activity["start_s"]), float(activity["step_s"]), run_length_decode(activity["counts"]))
    else:
        backend = (backends or ModelBackends(config)).get("speech").activity
        found = backend.activity(audio, config.audio.sample_rate)
        counts = Timeline(found.start_s + audio_start_s, found.step_s, np.asarray(found.counts))
    return from_audio_start(counts, audio_start_s)


def from_audio_start(counts: Timeline, audio_start_s: float) -> Timeline:
    """``counts`` with its first cell's value held back to the start of the audio. A segmentation
    model's cells are centred on its output frames, so the first cell starts half a frame in
    (22.5 ms for pyannote segmentation v2), though that frame was computed from the audio's first
    samples: without this, a clip's first output frame (centred at 20.8 ms) would have no count."""
    lead = int(np.ceil((counts.start_s - audio_start_s) / counts.step_s - 1e-9))
    if lead <= 0 or not len(counts.values):
        return counts
    values = np.concatenate([np.repeat(np.asarray(counts.values)[:1], lead), counts.values])
    return Timeline(counts.start_s - lead * counts.step_s, counts.step_s, values)


def run_length_decode(pairs: list) -> np.ndarray:
    """[[value, count], ...] as the values repeated."""
    if not pairs:
        return np.zeros(0, dtype=np.int64)
    values, counts = zip(*pairs)
    return np.repeat(np.asarray(values, dtype=np.int64), np.asarray(counts, dtype=np.int64))


def _track_probabilities(plots: dict, source: _Source) -> dict[int, _TrackProbability]:
    """Each face track's smoothed speaking probability, from the ASD result's plots (one per scored segment)."""
    track_of = {s.key: s.track_id for s in (*source.record.segments, *source.decided.segments)}
    out: dict[int, _TrackProbability] = {}
    for key, plot in sorted(plots.items()):
        if key in track_of:
            curve = Timeline(float(plot["start_s"]), 1.0 / float(plot["fps"]), np.asarray(plot["smooth"], float))
            out.setdefault(track_of[key], _TrackProbability()).curves.append(curve)
    return out


@dataclass
class _TrackProbability:
    curves: list[Timeline] = field(default_factory=list)

    def at(self, times: np.ndarray, outside: float) -> np.ndarray:
        return np.max([curve.at(times, outside) for curve in self.curves], axis=0)


def _partner_segments(partner: _Source, track: int | None) -> list[Segment]:
    return [s for s in partner.accepted() if track is None or s.track_id == track]


def _overlapping_sample(partner: _Source, times: np.ndarray, fps: float, track: int | None = None) -> str | None:
    """The key of the partner's accepted sample overlapping the actor's frames longest."""
    span = (float(times[0]) - 0.5 / fps, float(times[-1]) + 0.5 / fps) if len(times) else (0.0, 0.0)
    return most_overlapping(span, {s.key: [(partner.start_s + s.start_s, partner.start_s + s.end_s)]
                                   for s in _partner_segments(partner, track)})


def _placed_flame(partner: _Source, times: np.ndarray, fps: float,
                  track: int | None = None) -> dict[str, np.ndarray] | None:
    """The partner's samples' FLAME arrays on the actor's frames (``times`` on the session clock) with
    the ``tracked`` mask; None when none of the partner's samples has FLAME arrays."""
    arrays: dict[str, np.ndarray] = {}
    tracked = np.zeros(len(times), dtype=bool)
    found = False
    for segment in sorted(_partner_segments(partner, track), key=lambda s: s.key):
        if "flame.npz" not in segment.files:
            continue
        found = True
        with np.load(partner.folder / segment.files["flame.npz"]) as npz:
            motion = {name: npz[name] for name in npz.files if name.split("/")[0] in MOTION_GROUPS}
        if not motion:
            continue
        frames = min(len(a) for a in motion.values())
        index = frames_on_grid(times, partner.start_s + segment.start_s, frames, fps)
        take = (index >= 0) & ~tracked
        for name, values in motion.items():
            placed = arrays.setdefault(name, np.zeros((len(times), *values.shape[1:]), dtype=values.dtype))
            placed[take] = values[index[take]]
        tracked |= take
    if not found:
        return None
    return {**arrays, PARTNER_TRACKED_ARRAY: tracked}


def _tracked_frames(flame: dict[str, np.ndarray] | None) -> int:
    return int(flame[PARTNER_TRACKED_ARRAY].sum()) if flame is not None else 0


def _fit(samples: np.ndarray, count: int) -> np.ndarray:
    out = np.zeros(count, dtype=np.int16)
    out[:min(count, len(samples))] = samples[:count]
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_members(folder: Path, key: str, members: _Members, sample_rate: int) -> tuple[dict[str, str], dict[str, str]]:
    """The actor's members beside its clip, each under its final name only when complete; (files, sha256)."""
    from pipelines.flame.stage import save_npz  # the project's byte-stable npz writer

    files = {ROLE_MEMBER: f"{key}.{ROLE_MEMBER}", PARTNER_AUDIO_MEMBER: f"{key}.{PARTNER_AUDIO_MEMBER}"}
    buffer = io.BytesIO()
    np.save(buffer, members.roles.astype(np.int8), allow_pickle=False)
    with atomic_path(folder / files[ROLE_MEMBER]) as tmp:
        tmp.write_bytes(buffer.getvalue())
    with atomic_path(folder / files[PARTNER_AUDIO_MEMBER]) as tmp:
        write_wav(tmp, members.partner_audio, sample_rate)
    flame_file = folder / f"{key}.{PARTNER_FLAME_MEMBER}"
    if members.partner_flame is not None:
        files[PARTNER_FLAME_MEMBER] = flame_file.name
        save_npz(flame_file, members.partner_flame)
    else:
        flame_file.unlink(missing_ok=True)
    return files, {member: _sha256(folder / name) for member, name in files.items()}
