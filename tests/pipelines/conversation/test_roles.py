"""The role rules (pipelines/conversation/roles.py) on hand-made arrays, each expected value worked out here."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.config import ConversationConfig
from pipelines.conversation.pairing import run_length_decode, speaker_counts
from pipelines.conversation.roles import (
    LEVEL_HOP_S,
    SILENCE_DBFS,
    Timeline,
    bridge_gaps,
    busiest,
    drop_short,
    frame_times,
    frames_on_grid,
    levels_dbfs,
    most_overlapping,
    per_participant_roles,
    role_seconds,
    sample_mask,
    shared_video_roles,
    voice_activity,
)
from pipelines.schema.conversation import Role

RATE = 16000
S, L, B, Q = int(Role.SPEAKING), int(Role.LISTENING), int(Role.BOTH), int(Role.SILENT)


def _tone(seconds: float, amplitude: float) -> np.ndarray:
    t = np.arange(int(round(seconds * RATE))) / RATE
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * RATE)), dtype=np.float32)


def test_timeline_picks_the_cell_holding_each_time_and_a_default_outside():
    line = Timeline(1.0, 0.5, np.array([3, 4, 5]))
    assert line.at(np.array([0.99, 1.0, 1.49, 1.5, 2.25, 2.5, 9.0]), outside=-1).tolist() == [-1, 3, 3, 4, 5, -1, -1]
    assert line.shifted(0.25).at(np.array([1.2, 1.3])).tolist() == [0, 3]
    assert Timeline(0.0, 0.1, np.zeros(0, bool)).at(np.array([0.0, 1.0]), False).tolist() == [False, False]


def test_frame_times_are_the_centres_of_the_output_frames():
    assert frame_times(2.0, 3, 4.0).tolist() == [2.125, 2.375, 2.625]


def test_levels_are_rms_in_dbfs_per_10_ms_and_silence_has_a_floor():
    audio = np.concatenate([np.full(160, 0.1, np.float32), np.zeros(160, np.float32), np.full(100, 1.0, np.float32)])
    levels = levels_dbfs(audio, RATE)
    assert len(levels) == 2  # the last 100 samples are not a whole 10 ms
    assert levels[0] == pytest.approx(-20.0, abs=1e-3) and levels[1] == SILENCE_DBFS


def test_gaps_are_bridged_between_runs_only_and_short_runs_dropped():
    mask = np.array([0, 1, 1, 0, 0, 1, 0, 0, 0, 1, 0], bool)
    assert bridge_gaps(mask, 3).astype(int).tolist() == [0, 1, 1, 1, 1, 1, 0, 0, 0, 1, 0]
    assert drop_short(mask, 2).astype(int).tolist() == [0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]


def test_voice_activity_bridges_pauses_drops_clicks_and_lies_on_the_given_clock():
    config = ConversationConfig(voice_margin_db=15, noise_floor_percentile=10, min_noise_floor_dbfs=-70,
                                max_pause_s=0.3, min_voice_s=0.1)
    # 1 s digital silence, 0.5 s voice, a 0.2 s pause, 0.5 s voice, 1 s silence, a 50 ms click, 0.5 s silence.
    audio = np.concatenate([_silence(1.0), _tone(0.5, 0.1), _silence(0.2), _tone(0.5, 0.1), _silence(1.0),
                            _tone(0.05, 0.5), _silence(0.5)])
    voiced = voice_activity(audio, RATE, start_s=10.0, config=config)
    assert voiced.start_s == 10.0 and voiced.step_s == LEVEL_HOP_S
    hops = np.flatnonzero(voiced.values)
    # The voice spans 1.0-2.2 s of the audio (the 0.2 s pause bridged); the click is dropped.
    assert (hops[0], hops[-1] + 1) == (100, 220) and len(hops) == 120
    assert voiced.at(np.array([10.5, 11.05, 11.6, 12.19, 12.25, 13.22]), False).tolist() == \
        [False, True, True, True, False, False]


def test_voice_activity_measures_the_margin_from_the_noise_floor():
    config = ConversationConfig(voice_margin_db=15, noise_floor_percentile=10, min_noise_floor_dbfs=-70)
    rng = np.random.default_rng(0)
    noise = (rng.normal(0, 10 ** (-50 / 20), 3 * RATE)).astype(np.float32)  # a room at -50 dBFS
    audio = noise.copy()
    audio[RATE: RATE + RATE // 2] += _tone(0.5, 10 ** (-40 / 20) * np.sqrt(2))  # 10 dB over the noise: not voice
    audio[2 * RATE: 2 * RATE + RATE // 2] += _tone(0.5, 10 ** (-20 / 20) * np.sqrt(2))  # 30 dB over: voice
    voiced = voice_activity(audio, RATE, 0.0, config).values
    assert not voiced[100:150].any()
    assert voiced[201:249].all() and voiced[:200].sum() == 0


def test_per_participant_roles_from_own_and_other_microphones():
    actor = np.array([1, 1, 0, 0, 1, 0], bool)
    first = np.array([0, 1, 1, 0, 0, 0], bool)
    second = np.array([0, 0, 0, 0, 0, 1], bool)
    assert per_participant_roles(actor, [first, second]).tolist() == [S, B, L, Q, S, L]
    assert per_participant_roles(actor, []).tolist() == [S, S, Q, Q, S, Q]


def test_shared_video_roles_follow_the_speaker_count_and_asd():
    speakers = np.array([1, 1, 2, 1, 1, 0, 2])
    actor = np.array([0.9, 0.2, 0.9, 0.9, 0.5, 0.9, 0.1])
    other = np.array([0.1, 0.8, 0.1, 0.7, 0.0, 0.0, 0.0])
    codes = shared_video_roles(speakers, actor, [other], threshold=0.5)
    # 0 the actor's face speaks; 1 a voice, the actor's face does not: someone else; 2 two voices: both;
    # 3 both faces over the threshold: both; 4 exactly at the threshold counts; 5 a moving mouth
    # without voice is silence; 6 two voices, the actor's face silent: listening.
    assert codes.tolist() == [S, L, B, B, S, Q, L]
    alone = shared_video_roles(speakers, actor, [], threshold=0.5)  # one face, an off-screen voice
    assert alone.tolist() == [S, L, B, S, S, Q, L]


def test_role_seconds_and_sample_mask():
    codes = np.array([S, S, L, B, Q, Q, Q, L], np.int8)
    seconds = role_seconds(codes, fps=2.0)
    assert (seconds.speaking, seconds.listening, seconds.both, seconds.silent) == (1.0, 1.0, 0.5, 1.5)
    mask = sample_mask(np.array([0, 1, 0], bool), samples=7, sample_rate=4, fps=2.0)  # 2 samples per frame
    assert mask.astype(int).tolist() == [0, 0, 1, 1, 0, 0, 0]  # the 7th sample lies past the frames: the last one


def test_frames_on_grid_maps_times_to_the_displayed_frame():
    times = frame_times(0.0, 6, 10.0)  # 0.05, 0.15, ... 0.55
    # A partner clip of 3 frames starting 0.24 s later shows frame j over [0.24 + j/10, 0.24 + (j + 1)/10).
    assert frames_on_grid(times, 0.24, 3, 10.0).tolist() == [-1, -1, 0, 1, 2, -1]
    assert frames_on_grid(times, -0.1, 3, 10.0).tolist() == [1, 2, -1, -1, -1, -1]


def test_partner_choice_by_overlap_and_by_speech():
    intervals = {"track2": [(0.0, 1.0), (5.0, 6.0)], "track1": [(0.5, 2.5)], "track3": [(9.0, 10.0)]}
    assert most_overlapping((0.0, 6.0), intervals) == "track1"  # 2.0 s against 1.5 s
    assert most_overlapping((0.0, 1.0), {"b": [(0.5, 1.0)], "a": [(0.0, 0.5)]}) == "a"  # a tie: sorted first
    assert most_overlapping((20.0, 21.0), intervals) is None
    assert busiest({"c": np.array([1, 1, 0], bool), "b": np.array([1, 0, 1], bool), "d": np.array([1, 0, 0], bool)}) \
        == "b"
    assert busiest({}) is None


def test_speaker_counts_read_from_a_stored_activity(tmp_path):
    from pipelines.config import load_config
    from pipelines.runner import result_path
    from pipelines.schema.records import StageResult

    config = load_config(paths={"data_dir": tmp_path})
    path = result_path(config, "src-0000000000", "speech")
    path.parent.mkdir(parents=True)
    activity = {"start_s": 1.0, "step_s": 0.5, "frames": 5, "backend": "hand-made", "turns": [],
                "counts": [[0, 2], [1, 1], [2, 2]]}
    StageResult(stage="speech", details={"activity": activity}).save(path)
    assert run_length_decode(activity["counts"]).tolist() == [0, 0, 1, 2, 2]
    counts = speaker_counts(config, "src-0000000000", audio_start_s=0.0, audio=np.zeros(0, np.float32))
    assert counts.at(np.array([1.2, 2.1, 2.6, 3.4, 3.6])).tolist() == [0, 1, 2, 2, 0]
