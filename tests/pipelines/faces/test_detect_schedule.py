"""The face stage with detection on a schedule (issue 15) against every-frame detection, on real media.

Every input is a real GRID clip or composed from them with ffmpeg (pipelines/fixtures, and the
moving crops and the face that comes and goes of pipelines/fixtures/footage.py); the detector is
the real SCRFD, wrapped only to count its calls. Each face-stage run is made once per module.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bench.bench_detect_schedule import box_iou, matched_rows
from bench.timed_backends import TimedCalls
from pipelines.config import DetectionScheduleConfig, load_config
from pipelines.faces.clips import BOXES_COLUMNS, INTERPOLATED_SCORE
from pipelines.faces.stage import SPEC
from pipelines.fixtures.footage import APPEAR_S, CUT_FRAME, GONE_S, face_comes_and_goes, hard_cut, moving_crop
from pipelines.fixtures.media import FPS, concat_with_gap, side_by_side
from pipelines.quality.stage import decide_segment
from pipelines.runner import run_stage
from pipelines.schema.records import ACCEPTED, SourceRecord
from pipelines.schema.sample import SampleRecord
from pipelines.workdir import source_dir
from stage_fixtures import SharedDetectorBackends, scan, stage_config

SCORE = BOXES_COLUMNS.index("score_-1_bridged_-2_interpolated")
EVERY_FRAME = None  # detection_schedule.enabled false
DEFAULT_K = DetectionScheduleConfig().every_k  # what ships is what is compared


@dataclass
class FaceRun:
    record: SourceRecord
    folder: Path
    detector_calls: int
    config: object

    def accepted(self):
        return sorted((s for s in self.record.segments if s.status == ACCEPTED), key=lambda s: (s.start_s, s.key))

    def boxes(self, segment) -> np.ndarray:
        return np.load(self.folder / segment.files["boxes.npy"])

    def all_boxes(self) -> np.ndarray:
        return np.concatenate([self.boxes(s) for s in self.accepted()])

    @property
    def counts(self) -> dict[str, int]:
        return self.record.numbers["detection_schedule"]

    def shape(self) -> list[tuple]:
        return [(s.start_s, s.end_s, s.status, s.numbers.get("ended_by"))
                for s in sorted(self.record.segments, key=lambda s: (s.start_s, s.key))]


@pytest.fixture(scope="module")
def media(tmp_path_factory, grid_clips: list[Path]) -> dict[str, Path]:
    """Each input alone in its own folder (the stage scans a folder)."""
    root = tmp_path_factory.mktemp("schedule-media")
    g = grid_clips
    makers = {
        "grid": lambda p: shutil.copyfile(g[0], p),
        "gap": lambda p: concat_with_gap(g[4], 1.5, p),
        "come_and_go": lambda p: face_comes_and_goes(g[4], g[5], p),
        "two_faces_cut": lambda p: hard_cut(side_by_side(g[0], g[1], root / "pair_a.mp4"),
                                            side_by_side(g[2], g[3], root / "pair_b.mp4"), p),
        "pan": lambda p: moving_crop(g[1], p, "pan"),
        "shake": lambda p: moving_crop(g[2], p, "shake"),
        "fast_shake": lambda p: moving_crop(g[2], p, "fast_shake"),
    }
    out = {}
    for name, make in makers.items():
        (root / name).mkdir()
        out[name] = make(root / name / (f"{name}.mpg" if name == "grid" else f"{name}.mp4"))
    return out


@pytest.fixture(scope="module")
def face_runs(tmp_path_factory, media: dict[str, Path], model_dir: Path, scrfd_detector):
    """``face_runs(input, every_k or EVERY_FRAME, **overrides)``: the face stage's run, made once."""
    cache: dict[tuple, FaceRun] = {}

    def run(name: str, every_k: int | None, **overrides) -> FaceRun:
        key = (name, every_k, repr(sorted(overrides.items())))
        if key not in cache:
            schedule = {"enabled": False} if every_k is None else {"enabled": True, "every_k": every_k}
            root = tmp_path_factory.mktemp(f"run-{name}-{every_k}")
            config = stage_config(root, model_dir, inputs=media[name].parent, detection_schedule=schedule,
                                  **overrides)
            (ref,) = scan(config).values()
            counted = TimedCalls(scrfd_detector, ["detect"])
            outcome = run_stage("faces", ref, config, SharedDetectorBackends(config, counted))
            cache[key] = FaceRun(outcome.result, source_dir(config, ref.source_id), counted.calls, config)
        return cache[key]

    return run


def test_every_k_1_detects_every_frame_like_the_stage_without_a_schedule(face_runs):
    one, off = face_runs("grid", 1), face_runs("grid", EVERY_FRAME)
    frames = one.record.numbers["decoded_frames"]
    assert one.detector_calls == off.detector_calls == frames == 75
    assert one.counts["interpolated_frames"] == 0
    assert one.shape() == off.shape()
    for a, b in zip(one.accepted(), off.accepted()):
        assert (one.folder / a.files["boxes.npy"]).read_bytes() == (off.folder / b.files["boxes.npy"]).read_bytes()
        assert (one.folder / a.files["mp4"]).read_bytes() == (off.folder / b.files["mp4"]).read_bytes()
    assert not (one.all_boxes()[:, SCORE] == INTERPOLATED_SCORE).any()


@pytest.mark.parametrize("every_k", sorted({3, DEFAULT_K}))
def test_a_schedule_calls_the_detector_on_about_one_frame_in_k(face_runs, every_k: int):
    run = face_runs("grid", every_k)
    frames = run.record.numbers["decoded_frames"]
    counts = run.counts
    assert run.detector_calls == counts["detected_frames"]
    # One speaker sitting still: nothing is uncertain, so the calls are the schedule's: the first
    # frame, every k-th after it and the last frame.
    assert counts["backfilled_frames"] == 0
    assert run.detector_calls <= np.ceil(frames / every_k) + 1
    assert counts["interpolated_frames"] == frames - run.detector_calls
    (segment,) = run.accepted()
    assert segment.numbers["bridged_frames"] == 0 and segment.numbers["longest_gap_s"] == 0
    # Interpolated frames show the face: they count as detected, not bridged.
    assert segment.numbers["detected_frames"] == segment.numbers["source_frames"]
    sample = SampleRecord.load(run.folder / segment.files["json"])
    assert sample.faces.interpolated_frames == counts["interpolated_frames"] > 0


def test_interpolated_frames_are_marked_measured_and_decided_the_same_by_the_quality_stage(face_runs):
    every, scheduled = face_runs("grid", EVERY_FRAME), face_runs("grid", DEFAULT_K)
    (ref,), (seg,) = every.accepted(), scheduled.accepted()
    table = scheduled.boxes(seg)
    interpolated = table[:, SCORE] == INTERPOLATED_SCORE
    assert interpolated.sum() > len(table) // 2
    # Interpolated frames carry the quality figures of their pixels (sharpness) and of the
    # interpolated keypoints (pose): they are not NaN like a bridged frame's.
    for column in ("sharpness", "yaw_deg", "pitch_deg"):
        assert np.isfinite(table[interpolated, BOXES_COLUMNS.index(column)]).all()
    a = decide_segment(every.folder, ref, None, every.config)
    b = decide_segment(scheduled.folder, seg, None, scheduled.config)
    assert (a.decision, a.numbers["kept_s"], a.numbers["failed_s"]) == (b.decision, b.numbers["kept_s"],
                                                                         b.numbers["failed_s"])


@pytest.mark.parametrize("name", ["grid", "pan", "shake"])
def test_interpolated_boxes_are_within_iou_0_9_of_every_frame_boxes(face_runs, name: str):
    every, scheduled = face_runs(name, EVERY_FRAME), face_runs(name, DEFAULT_K)
    ref, other = matched_rows(every.all_boxes(), scheduled.all_boxes())
    interpolated = other[:, SCORE] == INTERPOLATED_SCORE
    assert interpolated.sum() > 0
    overlaps = box_iou(ref[interpolated, 1:5], other[interpolated, 1:5])
    assert overlaps.min() >= 0.9, f"worst interpolated box IoU {overlaps.min():.3f}"


def test_fast_motion_falls_back_to_detecting_the_frames_between(face_runs):
    # The picture swings up to 23 px a frame: most intervals are detected frame by frame. (Segments
    # are not compared here: with every-frame detection the face check itself splits this one face
    # where the swing turns, and that depends on how many signatures its reference averages.)
    scheduled = face_runs("fast_shake", DEFAULT_K)
    counts = scheduled.counts
    assert counts["uncertain_intervals"] > 0
    assert counts["backfilled_frames"] > counts["interpolated_frames"]
    assert scheduled.detector_calls == counts["detected_frames"] > counts["frames"] / 2


@pytest.mark.parametrize("every_k", sorted({DEFAULT_K, 8}))
def test_a_face_that_goes_ends_at_the_same_frame_as_with_every_frame_detection(face_runs, every_k: int):
    # No shot detector: only the schedule can find where the face goes (1.5 s of blue from 3.0 s).
    every = face_runs("gap", EVERY_FRAME, shots={"detector": "none"})
    scheduled = face_runs("gap", every_k, shots={"detector": "none"})
    assert scheduled.shape() == every.shape()
    first = every.accepted()[0]
    assert first.end_s == pytest.approx(3.0, abs=1e-6) and first.numbers["ended_by"] == "gap"
    assert scheduled.counts["backfilled_frames"] > 0
    assert scheduled.detector_calls < every.detector_calls / 2


def test_a_face_that_comes_and_goes_without_a_cut_is_found_at_the_same_frames(face_runs):
    every = face_runs("come_and_go", EVERY_FRAME, shots={"detector": "none"})
    scheduled = face_runs("come_and_go", DEFAULT_K, shots={"detector": "none"})
    assert scheduled.shape() == every.shape()
    starts = sorted(s.start_s for s in every.record.segments)
    ends = sorted(s.end_s for s in every.record.segments)
    assert APPEAR_S in [pytest.approx(t, abs=1e-6) for t in starts]
    assert GONE_S in [pytest.approx(t, abs=1e-6) for t in ends]
    assert scheduled.counts["backfilled_frames"] > 0


def test_two_faces_and_a_cut_are_handled_the_same(face_runs):
    every, scheduled = face_runs("two_faces_cut", EVERY_FRAME), face_runs("two_faces_cut", DEFAULT_K)
    assert scheduled.shape() == every.shape()
    assert scheduled.record.numbers["shot_cuts_s"] == every.record.numbers["shot_cuts_s"]
    accepted = scheduled.accepted()
    assert len(accepted) == 4
    assert sorted({s.end_s for s in accepted})[0] == pytest.approx(CUT_FRAME / FPS, abs=1e-6)
    assert scheduled.counts["cut_frames"] >= 2
    assert scheduled.detector_calls < every.detector_calls / 2


def test_the_schedule_is_part_of_the_face_stage_fingerprint(tmp_path: Path):
    base = load_config(paths={"data_dir": tmp_path})
    other = load_config(paths={"data_dir": tmp_path}, detection_schedule={"every_k": base.detection_schedule.every_k + 1})
    assert SPEC.config_fingerprint(base) != SPEC.config_fingerprint(other)
