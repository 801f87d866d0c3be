"""Voice turns (pipelines/conversation/voices.py): the rules on hand-made arrays, the encoder and the
labelling on real GRID speech with the real Resemblyzer weights."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from pipelines.config import ConversationConfig
from pipelines.conversation.pairing import from_audio_start
from pipelines.conversation.roles import Timeline, voice_turn_roles
from pipelines.conversation.voices import NO_VOICE, OFF_SCREEN, enrollment_masks, erode, voice_turns
from pipelines.fixtures.conversation import speech_span
from pipelines.schema.conversation import Role

RATE = 16000


def test_erode_takes_cells_off_both_ends_of_each_run():
    mask = np.array([0, 1, 1, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1, 1], bool)
    assert erode(mask, 1).astype(int).tolist() == [0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 0]
    assert not erode(mask, 3).any() and np.array_equal(erode(mask, 0), mask)


def test_enrollment_needs_a_margin_over_the_rival_and_a_share_of_the_faces_own_level():
    config = ConversationConfig(voice_enroll_erosion_s=0.0, voice_enroll_margin=0.25, voice_enroll_share=0.5,
                                voice_offscreen_share=0.25)
    # Face 0 peaks at 0.8, face 1 at 0.4 (an unsure face: its own level counts, not 0.5).
    probs = np.array([[0.8, 0.8, 0.5, 0.3, 0.05, 0.8, 0.1, 0.8],
                      [0.0, 0.4, 0.1, 0.4, 0.05, 0.4, 0.05, 0.0]])
    voiced = np.array([1, 1, 1, 1, 1, 1, 1, 0], bool)
    face0, face1, off = enrollment_masks(probs, voiced, config, step_s=0.1)
    assert face0.astype(int).tolist() == [1, 1, 1, 0, 0, 1, 0, 0]  # the last cell is unvoiced
    assert face1.astype(int).tolist() == [0, 0, 0, 0, 0, 0, 0, 0]  # 0.4 never leads 0.8 by 0.25 ...
    probs[0, 3] = 0.1
    assert enrollment_masks(probs, voiced, config, 0.1)[1].astype(int).tolist() == [0, 0, 0, 1, 0, 0, 0, 0]
    # Off screen: every face under a quarter of its own level (0.2 and 0.1).
    assert off.astype(int).tolist() == [0, 0, 0, 0, 1, 0, 1, 0]
    erosion = ConversationConfig(voice_enroll_erosion_s=0.1)
    assert enrollment_masks(probs, voiced, erosion, 0.1)[0].astype(int).tolist() == [0, 1, 0, 0, 0, 0, 0, 0]


def test_voice_turn_roles_by_hand():
    labels = np.array([NO_VOICE, 0, 0, 1, 1, OFF_SCREEN, 0, 1])
    overlap = np.array([0, 0, 1, 0, 1, 0, 1, 1], bool)
    actor_sure = np.array([0, 1, 1, 0, 1, 0, 0, 0], bool)
    others_sure = np.array([0, 0, 1, 1, 0, 0, 0, 0], bool)
    roles = voice_turn_roles(labels, 0, overlap, actor_sure, others_sure, NO_VOICE)
    # silent; own voice; own voice + a sure second face under overlap; the other's voice; the other's
    # voice + own face sure under overlap; off screen; own voice, overlap without a sure second face;
    # the other's voice under overlap, own face not sure.
    assert roles.tolist() == [Role.SILENT, Role.SPEAKING, Role.BOTH, Role.LISTENING, Role.BOTH, Role.LISTENING,
                              Role.SPEAKING, Role.LISTENING]


def test_the_first_count_cell_holds_back_to_the_start_of_the_audio():
    counts = Timeline(0.0225, 0.016875, np.array([1, 2, 0]))
    held = from_audio_start(counts, 0.0)
    assert held.start_s <= 0.0 < held.start_s + held.step_s and held.step_s == counts.step_s
    times = np.array([0.0, 0.0208, 0.03, 0.045, 0.06])
    assert held.at(times, 0).tolist() == [1, 1, 1, 2, 0]
    assert counts.at(times, 0).tolist() == [0, 0, 1, 2, 0]
    assert from_audio_start(counts, 0.05) is counts


def _speech(clip) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(clip), "-ac", "1", "-ar", str(RATE), "-f", "s16le", "-"],
                         capture_output=True, check=True).stdout
    audio = np.frombuffer(raw, np.int16).astype(np.float32) / 32768.0
    start, end = speech_span(clip)
    return audio[int(start * RATE): int(end * RATE)]


@pytest.fixture(scope="module")
def encoder(model_dir):
    from pipelines.conversation.voices import VoiceEncoder
    from pipelines.models import ModelStore

    status = ModelStore(model_dir).status("resemblyzer_voice_encoder")
    if status.state == "missing":
        pytest.skip(status.detail)
    assert status.state == "ok", status.detail  # the wheel's file, sha256 as registered
    return VoiceEncoder(status.path)


@pytest.fixture(scope="module")
def three_turns(grid_dir):
    """A man, a woman, the man again, back to back: (audio, turn edges in s)."""
    man, woman = _speech(grid_dir / "bbaf2n.mpg"), _speech(grid_dir / "lrwp9a.mpg")
    edges = np.cumsum([0, len(man), len(woman), len(man)]) / RATE
    return np.concatenate([man, woman, man]), edges


def test_voice_vectors_are_unit_length_and_closer_within_a_voice(encoder, three_turns):
    audio, edges = three_turns
    mel = encoder.mel(audio)
    assert mel.dtype == np.float32 and mel.shape[1] == 40 and abs(len(mel) - len(audio) / 160) <= 2
    centre = [int((a + b) / 2 * 100) for a, b in zip(edges, edges[1:])]
    vectors = encoder.embed(mel, [(c - 40, c + 40) for c in centre])
    assert vectors.shape == (3, 256) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert (vectors >= 0).all()  # ReLU before the norm, as in resemblyzer
    assert vectors[0] @ vectors[2] > vectors[0] @ vectors[1] + 0.1


def _probabilities(edges, faces_speaking):
    """faces x times probabilities: face k at 0.9 in the turns listed for it, 0.02 elsewhere."""
    def at(times):
        out = np.full((len(faces_speaking), len(times)), 0.02)
        for face, turns in enumerate(faces_speaking):
            for turn in turns:
                out[face, (times >= edges[turn]) & (times < edges[turn + 1])] = 0.9
        return out
    return at


def _changes(turns, step):
    labels = turns.labels.values
    return [(round(float(turns.labels.start_s + (i + 1) * step), 2), int(labels[i]), int(labels[i + 1]))
            for i in np.flatnonzero(labels[1:] != labels[:-1])]


def test_a_turn_light_asd_missed_goes_to_the_face_whose_voice_it_is(encoder, three_turns):
    audio, edges = three_turns
    config = ConversationConfig()
    voiced = Timeline(0.0, 0.01, np.ones(int(len(audio) / RATE * 100), np.int64))
    # Two faces; Light-ASD sure of the man in turn 0 and the woman in turn 1, lost in turn 2.
    turns = voice_turns(encoder, audio, 0.0, voiced, _probabilities(edges, [[0], [1]]), config)
    changes = _changes(turns, config.voice_step_s)
    print("changes", changes, "truth", edges[1:3].round(2).tolist())
    assert [(a, b) for _, a, b in changes] == [(0, 1), (1, 0)]
    assert all(abs(t - edge) <= 0.1 for (t, _, _), edge in zip(changes, edges[1:3]))
    assert turns.enrolled_s[0] > 0.5 and turns.enrolled_s[1] > 0.5


def test_one_face_and_an_off_screen_voice(encoder, three_turns):
    audio, edges = three_turns
    config = ConversationConfig()
    voiced = Timeline(0.0, 0.01, np.ones(int(len(audio) / RATE * 100), np.int64))
    turns = voice_turns(encoder, audio, 0.0, voiced, _probabilities(edges, [[0, 2]]), config)
    assert [(a, b) for _, a, b in _changes(turns, config.voice_step_s)] == [(0, OFF_SCREEN), (OFF_SCREEN, 0)]
    # With one voice only (the face speaks throughout) there is nothing to tell apart.
    assert voice_turns(encoder, audio, 0.0, voiced, _probabilities(edges, [[0, 1, 2]]), config) is None
    # Unvoiced time is never labelled.
    quiet = Timeline(0.0, 0.01, np.zeros(len(voiced.values), np.int64))
    assert voice_turns(encoder, audio, 0.0, quiet, _probabilities(edges, [[0], [1]]), config) is None
