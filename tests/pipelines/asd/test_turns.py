"""Two faces sharing time: the per-stretch owner rule on synthetic curves, and two GRID
speakers side by side taking turns (real Light-ASD weights, real media)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import pipelines.fixtures.media as mf
from pipelines.asd.stage import ScoredSegment, lost_to_rivals, stretch_owners
from pipelines.config import load_config
from pipelines.schema.records import ACCEPTED, Segment
from pipelines.runner import run_source
from stage_fixtures import SharedDetectorBackends, scan
from test_asd_stage import _speech_bounds  # silero VAD: first and last speech of a clip

FPS = 24


def _owners(*rows: np.ndarray, radius: int = 18, min_stretch: int = 12) -> np.ndarray:
    probs = np.stack(rows)
    return stretch_owners(probs, np.ones(probs.shape, dtype=bool), radius, min_stretch)


def test_turns_go_to_the_face_speaking_in_them():
    a = np.r_[np.full(72, 0.9), np.full(72, 0.1)]
    b = a[::-1].copy()
    owner = _owners(a, b)
    assert (owner[:70] == 0).all() and (owner[74:] == 1).all()


def test_a_whole_track_mean_does_not_take_the_other_turn():
    # A scores higher in its turn than B in its own (a per-track mean gives A all of it); B still
    # owns its turn, from at most one window radius (18 frames) after it starts.
    a = np.r_[np.full(96, 0.95), np.full(48, 0.3)]
    b = np.r_[np.full(96, 0.2), np.full(48, 0.6)]
    owner = _owners(a, b)
    assert (owner[:96] == 0).all() and (owner[96 + 18:] == 1).all()


def test_a_short_noisy_flip_does_not_cut_the_run():
    rng = np.random.default_rng(0)
    a = np.clip(0.7 + rng.normal(0, 0.1, 144), 0, 1)
    b = np.clip(0.5 + rng.normal(0, 0.1, 144), 0, 1)
    b[60:66] = 1.0  # a quarter-second burst of the other face
    assert (_owners(a, b) == 0).all()
    # With no window and no minimum stretch the same burst flips the owner: the per-frame argmax.
    assert (_owners(a, b, radius=0, min_stretch=1)[60:66] == 1).all()


def test_a_face_never_owns_frames_where_it_is_off_screen():
    a = np.full(100, 0.2)
    b = np.full(100, 0.9)
    on_screen = np.ones((2, 100), dtype=bool)
    on_screen[1, :40] = False
    owner = stretch_owners(np.stack([a, b]), on_screen, radius=18, min_stretch=12)
    assert (owner[:40] == 0).all() and (owner[40:] == 1).all()


def _flat(key: str, start_s: float, end_s: float, p: float) -> ScoredSegment:
    times = start_s + (np.arange(int(round((end_s - start_s) * FPS))) + 0.5) / FPS
    segment = Segment(key=key, track_id=0, start_s=start_s, end_s=end_s, status=ACCEPTED, numbers={})
    return ScoredSegment(segment, times, np.full(len(times), p), np.full(len(times), p))


def test_only_the_shared_time_is_lost_and_apart_tracks_are_not_compared():
    scored = [_flat("a", 0, 4, 0.9), _flat("b", 10, 14, 0.2), _flat("c", 2, 6, 0.3), _flat("d", 12, 13, 0.95)]
    lost = lost_to_rivals(scored, load_config())
    assert [int(x.sum()) for x in lost] == [0, 1 * FPS, 2 * FPS, 0]
    assert lost[2][: 2 * FPS].all() and not lost[2][2 * FPS:].any()


def turn_taking(first: Path, second: Path, out: Path) -> Path:
    """``first`` left and ``second`` right, side by side: ``first`` speaks (its video and audio)
    while ``second`` shows its first frame, then ``second`` speaks while ``first`` holds its last
    frame. Each side is one continuous picture (no cut), so each person is one face track."""
    duration = {clip: float(mf.ffprobe(clip, "-show_format")["format"]["duration"]) for clip in (first, second)}
    graph = (f"[0:v]fps={mf.FPS},tpad=stop_mode=clone:stop_duration={duration[second]}[l];"
             f"[1:v]fps={mf.FPS},tpad=start_mode=clone:start_duration={duration[first]}[r];"
             "[l][r]hstack=inputs=2:shortest=1,format=yuv420p[v];"
             f"[0:a]aresample={mf.AUDIO_RATE}[a0];[1:a]aresample={mf.AUDIO_RATE}[a1];"
             "[a0][a1]concat=n=2:v=0:a=1[a]")
    mf.run_ffmpeg(["-i", str(first), "-i", str(second), "-filter_complex", graph,
                   "-map", "[v]", "-map", "[a]", *mf.H264_AAC, str(out)])
    return out


# The turn changes hands in the silence between one clip's last word and the next clip's first
# (about 0.3 s + 0.5 s of GRID lead-out and lead-in); a kept clip may reach this far into that
# silence (the 0.2 s smoothing and Light-ASD's 1-frame context blur the edges) but not into the
# other person's speech.
EDGE_TOLERANCE_S = 0.4
# Each person's clips cover most of their own speech: Light-ASD's probability dips between words
# and at the first/last syllable, and the turn boundary is decided over a 2.5 s window (asd.turn_window_s).
MIN_TURN_COVERAGE = 0.75


@pytest.fixture(scope="module")
def turns(tmp_path_factory, composed, grid_clips, model_dir, scrfd_detector):
    if not (model_dir / "light-asd" / "pretrain_AVA_CVPR.model").is_file():
        pytest.skip("Light-ASD weights not in the model dir")
    first, second = grid_clips[0], grid_clips[2]
    root = tmp_path_factory.mktemp("asd-turns")
    inputs = root / "input"
    inputs.mkdir()
    shutil.copyfile(composed.get("turns.mp4", turn_taking, first, second), inputs / "turns.mp4")
    cfg = load_config(paths={"input_dir": inputs, "data_dir": root / "data", "model_dir": model_dir},
                      speech={"enabled": False}, flame={"enabled": False}, captions={"enabled": False})
    (ref,) = scan(cfg).values()
    faces, *_, asd = run_source(ref, cfg, SharedDetectorBackends(cfg, scrfd_detector), stages=["asd"])
    assert (faces.status, asd.status) == ("ran", "ran")
    offset = float(mf.ffprobe(first, "-show_format")["format"]["duration"])
    speech = [_speech_bounds(first), tuple(offset + t for t in _speech_bounds(second))]
    return faces.result, asd.result, speech


def test_two_people_taking_turns_each_keep_their_own_turns(turns):
    record, result, speech = turns
    tracks = sorted(record.accepted_segments(), key=lambda s: s.numbers["first_box"][0])
    assert len(tracks) == 2, [(s.key, s.start_s, s.end_s) for s in tracks]
    for side, track in enumerate(tracks):
        decision = result.segments[track.key]
        assert decision.decision == "accepted", (side, decision.reason, decision.numbers)
        clips = [(c.start_s, c.end_s) for c in decision.children] or [(track.start_s, track.end_s)]
        (own_start, own_end), (other_start, other_end) = speech[side], speech[1 - side]
        covered = sum(max(0.0, min(b, own_end) - max(a, own_start)) for a, b in clips)
        print(f"\nside {side}: clips {clips}, own speech {own_start:.2f}-{own_end:.2f} s, "
              f"covered {covered / (own_end - own_start):.0%}")
        assert covered >= MIN_TURN_COVERAGE * (own_end - own_start), (side, clips, speech)
        for a, b in clips:  # no clip of one person reaches into the other's speech
            assert b <= other_start + EDGE_TOLERANCE_S or a >= other_end - EDGE_TOLERANCE_S, (side, clips, speech)
