"""Conversation mode end to end on GRID conversations composed with their truth (pipelines/fixtures/conversation.py).

Two people take turns (a, b, a, b). The per-participant session is one recording per person with
a session sidecar, b's starting 0.4 s late; it goes through the real stages (SCRFD faces, quality,
speech with the pyannote activity model, FLAME from the scripted SHeaP stand-in; ASD and captions
off: per participant, the roles come from the microphones), the pairing and the shard writer.
The same recordings in speaking-only mode (ASD on, as by default) give today's clips. The
shared-video cases (both side by side, or a's picture alone, with one mixed track) take the roles
from the voice turns that Light-ASD enrolls (pipelines/conversation/voices.py).
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from pipelines.config import PipelineConfig, load_config
from pipelines.conversation.pairing import PairingReport, pair_sessions
from pipelines.conversation.summary import ConversationIndex, SessionSummary, conversations_dir
from pipelines.fixtures.conversation import (
    ComposedConversation,
    frames_off_beyond,
    grid_conversation,
    two_shot,
    write_session,
)
from pipelines.fixtures.media import H264_AAC, run_ffmpeg
from pipelines.fixtures.sheap import build_scripted_sheap
from pipelines.media.wav import read_wav
from pipelines.runner import run_sources
from pipelines.schema.conversation import (
    CONVERSATION_MEMBERS,
    PARTNER_AUDIO_MEMBER,
    PARTNER_FLAME_MEMBER,
    PARTNER_TRACKED_ARRAY,
    ROLE_MEMBER,
    Role,
    check_roles,
)
from pipelines.schema.index import ShardIndex
from pipelines.schema.sample import SampleRecord
from pipelines.shards import ShardSummary, conversation_pairings, iter_samples, planned_bytes, write_shards
from stage_fixtures import SharedDetectorBackends, scan

FPS = 24.0
RATE = 16000
LATE_S = 0.4
WEIGHTS = ("scrfd/scrfd_500m_kps.onnx", "light-asd/pretrain_AVA_CVPR.model")


@pytest.fixture(scope="module")
def conversation(grid_dir: Path) -> ComposedConversation:
    return grid_conversation(grid_dir)


@pytest.fixture(scope="module")
def models(tmp_path_factory, model_dir: Path) -> Path:
    """SCRFD and Light-ASD linked from the shared folder, the scripted SHeaP stand-in for FLAME."""
    folder = tmp_path_factory.mktemp("conversation-models")
    for relpath in WEIGHTS:
        if not (model_dir / relpath).is_file():
            pytest.skip(f"{model_dir / relpath} not found")
        (folder / relpath).parent.mkdir(parents=True, exist_ok=True)
        (folder / relpath).symlink_to(model_dir / relpath)
    build_scripted_sheap(folder / "sheap" / "sheap.pt")
    return folder


def _config(root: Path, inputs: Path, models: Path, mode: str, **sections) -> PipelineConfig:
    defaults = {"captions": {"enabled": False}, "speech": {"transcription_backend": "none"},
                "conversation": {"mode": mode}}
    for name, values in sections.items():
        defaults[name] = {**defaults.get(name, {}), **values}
    return load_config(paths={"input_dir": inputs, "data_dir": root / "data", "model_dir": models}, **defaults)


@dataclass
class Run:
    config: PipelineConfig
    sources: dict[str, str]  # participant (file stem after the session name) -> source id
    pairing: PairingReport
    shards: ShardSummary

    def samples(self) -> dict[str, dict[str, bytes]]:
        """Live samples of the shards, by key."""
        index = ShardIndex.load(self.config.paths.shards_dir)
        return {key: members for path in index.paths() for key, members in iter_samples(path)
                if index.samples.get(key) == path.name}


def _run(root: Path, inputs: Path, models: Path, detector, mode: str, **sections) -> Run:
    pytest.importorskip("pyannote.audio")
    config = _config(root, inputs, models, mode, **sections)
    refs = scan(config)
    report = run_sources(refs.values(), config, backends=SharedDetectorBackends(config, detector), progress=False)
    assert not report.failures
    pairing = pair_sessions(config, refs.values())
    sources = {Path(relpath).stem.split("_")[-1]: ref.source_id for relpath, ref in refs.items()}
    return Run(config, sources, pairing, write_shards(report.records, config))


@pytest.fixture(scope="module")
def session_inputs(tmp_path_factory, conversation) -> Path:
    inputs = tmp_path_factory.mktemp("session") / "input"
    write_session(conversation, inputs, late_s={"b": LATE_S})
    return inputs


@pytest.fixture(scope="module")
def per_participant(tmp_path_factory, session_inputs, models, scrfd_detector) -> Run:
    return _run(tmp_path_factory.mktemp("per-participant"), session_inputs, models, scrfd_detector, "conversation",
                asd={"enabled": False})


def _decode(path: Path) -> np.ndarray:
    """A file's audio as int16 at 16 kHz mono, decoded by ffmpeg (not the pipeline's decoder)."""
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-ac", "1", "-ar", str(RATE), "-f", "s16le", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.int16)


def _record(members: dict[str, bytes]) -> SampleRecord:
    return SampleRecord.load(members["json"])


def _by_actor(run: Run) -> dict[str, tuple[str, dict[str, bytes]]]:
    out = {}
    for key, members in run.samples().items():
        record = _record(members)
        out[record.conversation.actor] = (key, members)
    return out


def test_one_sample_per_person_covering_their_whole_recording(per_participant, conversation):
    samples = _by_actor(per_participant)
    assert sorted(samples) == ["a", "b"]
    assert per_participant.pairing.failures == {} and per_participant.pairing.refused == {}
    for actor, (key, members) in samples.items():
        record = _record(members)
        recorded = conversation.duration_s - (LATE_S if actor == "b" else 0.0)
        assert record.source.source_id == per_participant.sources[actor]
        assert record.time_range_s.start == 0.0 and abs(record.time_range_s.end - recorded) <= 1 / FPS
        # The composed mp4's audio can run past its last picture: a frame more is the recording, not an error.
        assert 0 <= record.video.frames - int(np.floor(recorded * FPS + 1e-9)) <= 1
        assert set(CONVERSATION_MEMBERS) <= set(members)


def test_role_timelines_match_the_composition_within_two_frames(per_participant, conversation):
    for actor, (key, members) in _by_actor(per_participant).items():
        record = _record(members)
        roles = check_roles(np.load(io.BytesIO(members[ROLE_MEMBER])), record.video.frames)
        truth = conversation.roles(actor, FPS, offset_s=LATE_S if actor == "b" else 0.0)[:len(roles)]
        assert len(roles) - len(truth) <= 1  # a frame past the conversation's end (see above): compare up to it
        roles = roles[:len(truth)]
        assert set(np.unique(truth)) == {Role.SPEAKING, Role.LISTENING}
        assert frames_off_beyond(roles, truth, tolerance=2).size == 0, (actor, roles.tolist(), truth.tolist())
        print(f"roles of {actor}: {int((roles != truth).sum())} of {len(roles)} frames differ from the composition")
        seconds = record.conversation.role_seconds
        roles = check_roles(np.load(io.BytesIO(members[ROLE_MEMBER])), record.video.frames)
        assert seconds.speaking == pytest.approx((roles == Role.SPEAKING).sum() / FPS, abs=1e-3)
        assert seconds.listening == pytest.approx((roles == Role.LISTENING).sum() / FPS, abs=1e-3)
        assert seconds.speaking + seconds.listening + seconds.both + seconds.silent == \
            pytest.approx(record.video.frames / FPS, abs=1e-3)


def test_the_record_says_who_is_who_and_how_the_audio_was_obtained(per_participant):
    samples = _by_actor(per_participant)
    for actor, partner in (("a", "b"), ("b", "a")):
        info = _record(samples[actor][1]).conversation
        assert (info.session, info.input, info.actor, info.partner) == ("duo", "per_participant", actor, partner)
        assert info.partner_key == samples[partner][0]
        assert (info.actor_audio, info.partner_audio) == ("own_microphone", "own_microphone")
        assert info.role_source == "own_microphone_level"
    index = ConversationIndex.load(conversations_dir(per_participant.config))
    assert set(index.sources) == set(per_participant.sources.values())
    summary = SessionSummary.load(conversations_dir(per_participant.config) / "per_participant.duo.json")
    assert summary.participants == per_participant.sources and summary.sidecar == "duo.session.json"
    assert {a.key for a in summary.actors} == {samples["a"][0], samples["b"][0]}


def test_partner_audio_is_the_other_persons_microphone(per_participant, session_inputs):
    samples = _by_actor(per_participant)
    starts = {"a": 0.0, "b": LATE_S}
    for actor, partner in (("a", "b"), ("b", "a")):
        members = samples[actor][1]
        heard, rate = read_wav(members[PARTNER_AUDIO_MEMBER])
        own, _ = read_wav(members["wav"])
        assert rate == RATE and len(heard) == len(own)
        microphone = _decode(session_inputs / f"duo_{partner}.mp4")
        lead = int(round((starts[actor] - starts[partner]) * RATE))  # the partner's sample at the actor's first
        expected = np.zeros(len(heard), np.int16)
        lo, hi = max(lead, 0), min(lead + len(heard), len(microphone))
        expected[lo - lead: hi - lead] = microphone[lo:hi]
        before = -lead if lead < 0 else 0
        assert not heard[:before].any()  # b's microphone had not started yet
        h, e = heard[before:].astype(np.float64), expected[before:].astype(np.float64)
        correlation = float(np.corrcoef(h, e)[0, 1])
        error = float(np.sqrt(np.mean((h - e) ** 2)) / np.sqrt(np.mean(e ** 2)))
        print(f"partner audio of {actor}: correlation {correlation:.5f}, rms error / rms {error:.4f}")
        assert correlation > 0.999 and error < 0.01


def test_partner_flame_lies_on_the_actor_frames_with_the_tracked_mask(per_participant):
    samples = _by_actor(per_participant)
    starts = {"a": 0.0, "b": LATE_S}
    for actor, partner in (("a", "b"), ("b", "a")):
        members, partner_members = samples[actor][1], samples[partner][1]
        frames = _record(members).video.frames
        with np.load(io.BytesIO(members[PARTNER_FLAME_MEMBER])) as placed, \
                np.load(io.BytesIO(partner_members["flame.npz"])) as own:
            tracked = placed[PARTNER_TRACKED_ARRAY]
            motion = sorted(n for n in own.files if n.startswith(("raw/", "smooth/")))
            assert sorted(n for n in placed.files if n != PARTNER_TRACKED_ARRAY) == motion
            centres = starts[actor] + (np.arange(frames) + 0.5) / FPS  # session clock
            shown = np.floor((centres - starts[partner]) * FPS).astype(int)  # the partner frame on screen then
            partner_frames = len(own[motion[0]])
            inside = (shown >= 0) & (shown < partner_frames)
            assert tracked.dtype == bool and tracked.shape == (frames,) and np.array_equal(tracked, inside)
            for name in motion:
                assert placed[name].shape == (frames, *own[name].shape[1:])
                assert np.array_equal(placed[name][tracked], own[name][shown[tracked]])
                assert not placed[name][~tracked].any()
        info = _record(members).conversation
        assert info.partner_flame_frames == int(tracked.sum())
        # b started 0.4 s late: a's first 10 frames (centres before 0.4 s) have no partner face; b's
        # recording can hold a frame past the end of a's.
        if actor == "a":
            assert int((~tracked).sum()) == 10 and not tracked[:10].any()
        else:
            assert int((~tracked).sum()) <= 1 and tracked[:-1].all()


def test_pairing_and_shards_are_unchanged_on_a_rerun_and_follow_a_changed_sidecar(per_participant, tmp_path):
    config = per_participant.config
    refs = scan(config)
    again = pair_sessions(config, refs.values())
    assert [o.status for o in again.sessions] == ["unchanged"]
    records = per_participant.shards.source_records
    rerun = write_shards(records, config)
    assert rerun.added == [] and rerun.retired == {} and rerun.unpackable == {}

    # A copy whose sidecar moves b by one more frame: the session is paired again, both sources re-packed.
    root = tmp_path / "copy"
    copy = _copy(per_participant, root)
    sidecar = root / "input" / "duo.session.json"
    document = json.loads(sidecar.read_text())
    document["participants"][1]["start_s"] = LATE_S + 1 / FPS
    sidecar.write_text(json.dumps(document))
    moved = pair_sessions(copy, scan(copy).values())
    assert [o.status for o in moved.sessions] == ["ran"]
    repacked = write_shards(records, copy)
    assert sorted(repacked.retired) == sorted(per_participant.sources.values())
    assert repacked.added and repacked.unpackable == {}


def test_the_shard_plan_counts_every_file_packed_into_a_sample(per_participant):
    config = per_participant.config
    pairings = conversation_pairings(config)
    for record in per_participant.shards.source_records:
        folder = config.paths.work_dir / "sources" / record.source_id
        for segment in record.accepted_segments():
            actor = pairings.actor(record.source_id, segment.key)
            assert set(actor.files) == set(CONVERSATION_MEMBERS)
            packed = [*segment.files.values(), *actor.files.values()]
            clip_only = sum((folder / name).stat().st_size for name in segment.files.values())
            planned = planned_bytes(folder, segment, record.source_id, pairings)
            assert planned == sum((folder / name).stat().st_size for name in packed) > clip_only
            assert planned_bytes(folder, segment, record.source_id, None) == clip_only  # speaking-only mode


def _copy(run: Run, root: Path) -> PipelineConfig:
    """The run's inputs and data folder copied under ``root``, with its config pointing there."""
    config = run.config
    shutil.copytree(config.paths.input_dir, root / "input")
    shutil.copytree(config.paths.data_dir, root / "data")
    return load_config(paths={"input_dir": root / "input", "data_dir": root / "data",
                              "model_dir": config.paths.model_dir},
                       **{name: getattr(config, name).model_dump() for name in ("asd", "captions", "speech",
                                                                                "conversation")})


def test_a_stage_output_rewritten_unchanged_is_not_paired_again(per_participant, tmp_path):
    copy = _copy(per_participant, tmp_path / "copy")
    speech = copy.paths.work_dir / "sources" / per_participant.sources["b"] / "speech.json"
    before = SessionSummary.load(conversations_dir(copy) / "per_participant.duo.json")
    speech.write_bytes(speech.read_bytes())  # what a forced re-run with the same result leaves
    (outcome,) = pair_sessions(copy, scan(copy).values()).sessions
    after = SessionSummary.load(conversations_dir(copy) / "per_participant.duo.json")
    assert outcome.status == "unchanged" and after.stamp != before.stamp
    assert after.model_copy(update={"stamp": before.stamp}) == before
    summary = write_shards(per_participant.shards.source_records, copy)
    assert summary.added == [] and summary.retired == {}


def test_a_stale_pairing_is_not_packed(per_participant, tmp_path):
    """Stage outputs that changed after the pairing: the session's samples wait (unpackable) until it runs
    again, the partner's too (its partner streams came from the changed source)."""
    root = tmp_path / "copy"
    copy = _copy(per_participant, root)
    source_id = per_participant.sources["a"]
    speech = root / "data" / "work" / "sources" / source_id / "speech.json"
    result = json.loads(speech.read_text())
    result["fingerprint"] = "0" * 16  # as if the speech stage had run again with other settings
    speech.write_text(json.dumps(result))
    summary = write_shards(per_participant.shards.source_records, copy)
    assert set(summary.unpackable) == set(per_participant.sources.values())
    assert all(f"paired before {source_id} changed" in why for why in summary.unpackable.values())
    assert pair_sessions(copy, scan(copy).values()).sessions[0].status == "ran"
    assert write_shards(per_participant.shards.source_records, copy).unpackable == {}


@pytest.fixture(scope="module")
def speaking_only(tmp_path_factory, session_inputs, models, scrfd_detector) -> Run:
    return _run(tmp_path_factory.mktemp("speaking-only"), session_inputs, models, scrfd_detector, "speaking_only")


def test_speaking_only_mode_on_the_same_inputs_gives_todays_clips(speaking_only, conversation, tmp_path,
                                                                  session_inputs, models, scrfd_detector):
    assert speaking_only.pairing.sessions == [] and not conversations_dir(speaking_only.config).exists()
    samples = speaking_only.samples()
    assert samples, "speaking-only mode packed nothing"
    for key, members in samples.items():
        record = _record(members)
        assert record.conversation is None and not set(CONVERSATION_MEMBERS) & set(members)
        assert "conversation" not in json.loads(members["json"])["stage_fingerprints"]
        # Today's rule: only the frames where the visible face speaks.
        speaker = next(p for p, sid in speaking_only.sources.items() if sid == record.source.source_id)
        start = LATE_S if speaker == "b" else 0.0
        speaks = conversation.speaks(speaker, FPS, start)
        first = int(round(record.time_range_s.start * FPS))
        assert speaks[first + 2: first + record.video.frames - 2].all(), key
    # The conversation settings do nothing in speaking-only mode: other thresholds, the same bytes.
    other = _run(tmp_path, session_inputs, models, scrfd_detector, "speaking_only",
                 conversation={"voice_margin_db": 30.0, "max_pause_s": 1.0})
    assert other.config.content_hash() == speaking_only.config.content_hash()
    assert {k: {m: hash(v) for m, v in s.items()} for k, s in other.samples().items()} == \
        {k: {m: hash(v) for m, v in s.items()} for k, s in samples.items()}


@pytest.fixture(scope="module")
def shared_video(tmp_path_factory, conversation, models, scrfd_detector) -> Run:
    """The two recordings side by side (a left, b right) with their microphones mixed, ASD on."""
    root = tmp_path_factory.mktemp("two-shot")
    recordings = root / "recordings"
    write_session(conversation, recordings)
    inputs = root / "input"
    inputs.mkdir()
    two_shot(recordings / "duo_a.mp4", recordings / "duo_b.mp4", inputs / "two_shot.mp4")
    return _run(root, inputs, models, scrfd_detector, "conversation")


def _two_shot_actors(run: Run, conversation: ComposedConversation) -> dict[str, tuple[str, dict[str, bytes]]]:
    assert run.pairing.failures == {}
    samples = run.samples()
    actors = {("a" if _record(m).faces.first_box[0] < 360 else "b"): (k, m) for k, m in samples.items()}
    assert sorted(actors) == ["a", "b"] and len(samples) == 2
    return actors


def test_shared_video_gives_each_face_its_whole_track_and_the_partner_streams(shared_video, conversation):
    frames = int(np.floor(conversation.duration_s * FPS + 1e-9))
    mix = _decode(shared_video.config.paths.input_dir / "two_shot.mp4")
    actors = _two_shot_actors(shared_video, conversation)
    for actor, (key, members) in actors.items():
        record = _record(members)
        info = record.conversation
        partner = "b" if actor == "a" else "a"
        assert (info.session, info.input, info.actor_audio, info.partner_audio) == \
            (shared_video.sources["shot"], "shared_video", "mix", "mix_masked_by_speaker")
        assert info.actor == f"track{record.faces.track_id}" and info.partner_key == actors[partner][0]
        assert info.partner == f"track{_record(actors[partner][1]).faces.track_id}"
        assert record.video.frames == frames and record.time_range_s.start == 0.0
        roles = check_roles(np.load(io.BytesIO(members[ROLE_MEMBER])), frames)
        # partner.wav: the mix where someone else speaks, zeros elsewhere.
        heard, _ = read_wav(members[PARTNER_AUDIO_MEMBER])
        frame_of_sample = np.minimum((np.arange(len(heard)) * FPS / RATE).astype(int), frames - 1)
        other = (roles[frame_of_sample] & int(Role.LISTENING)) != 0
        assert other.any() and not heard[~other].any()
        assert np.corrcoef(heard[other], mix[: len(heard)][other])[0, 1] > 0.999
        with np.load(io.BytesIO(members[PARTNER_FLAME_MEMBER])) as placed:
            assert placed[PARTNER_TRACKED_ARRAY].all() and info.partner_flame_frames == frames


def test_shared_video_role_timelines_match_the_composition_within_two_frames(shared_video, conversation):
    for actor, (key, members) in _two_shot_actors(shared_video, conversation).items():
        record = _record(members)
        roles = check_roles(np.load(io.BytesIO(members[ROLE_MEMBER])), record.video.frames)
        truth = conversation.roles(actor, FPS)[:len(roles)]
        assert record.conversation.role_source == "speaker_count+voice_turns+light_asd"
        assert frames_off_beyond(roles, truth, tolerance=2).size == 0, (actor, roles.tolist(), truth.tolist())
        print(f"two-shot roles of {actor}: {int((roles != truth).sum())} of {len(roles)} frames differ")


@pytest.fixture(scope="module")
def partner_off_screen(tmp_path_factory, conversation, models, scrfd_detector) -> Run:
    """a's picture alone with both microphones mixed: b speaks off screen (a talk-show guest and its host)."""
    root = tmp_path_factory.mktemp("off-screen")
    recordings = root / "recordings"
    write_session(conversation, recordings)
    (root / "input").mkdir()
    run_ffmpeg(["-i", str(recordings / "duo_a.mp4"), "-i", str(recordings / "duo_b.mp4"), "-filter_complex",
                "[0:a][1:a]amix=inputs=2:duration=longest:normalize=0[a]", "-map", "0:v", "-map", "[a]",
                *H264_AAC, str(root / "input" / "guest.mp4")])
    return _run(root, root / "input", models, scrfd_detector, "conversation")


def test_a_partner_off_screen_gives_listening_frames(partner_off_screen, conversation):
    samples = partner_off_screen.samples()
    assert len(samples) == 1
    (members,) = samples.values()
    record = _record(members)
    info = record.conversation
    assert info.partner is None and info.role_source == "speaker_count+voice_turns+light_asd"
    roles = check_roles(np.load(io.BytesIO(members[ROLE_MEMBER])), record.video.frames)
    truth = conversation.roles("a", FPS)[:len(roles)]
    assert (truth == Role.LISTENING).sum() > 2 * FPS  # b's two turns
    assert frames_off_beyond(roles, truth, tolerance=2).size == 0, (roles.tolist(), truth.tolist())
    # The per-frame Light-ASD rule, for comparison: the same stage outputs paired again.
    by_face = partner_off_screen.config.model_copy(update={"conversation": partner_off_screen.config.conversation.model_copy(
        update={"shared_video_voices": False})})
    (outcome,) = pair_sessions(by_face, scan(by_face).values()).sessions
    (actor,) = outcome.summary.actors
    face_roles = np.load(by_face.paths.work_dir / "sources" / actor.source_id / actor.files[ROLE_MEMBER])
    print(f"off-screen partner: {int((roles != truth).sum())} frames differ by voice, "
          f"{int((face_roles != truth).sum())} by face")
    assert actor.info.role_source == "speaker_count+light_asd"
