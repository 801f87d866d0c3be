"""The face stage on composed cuts (issue 14): a track never crosses a cut, crops never blend shots.

Media are composed from the real GRID clips (pipelines/fixtures/footage.py): frames [0, 38) of
one shot then [38, 75) of another at 25 fps, each with its own audio, so speech continues
across the cut at 1.52 s.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.faces.clips import BOXES_COLUMNS
from pipelines.fixtures.footage import CUT_FRAME, hard_cut, zoom_cut
from pipelines.fixtures.media import FPS, concat_with_gap
from pipelines.runner import run_stage
from pipelines.schema.records import ACCEPTED, SourceRecord
from pipelines.workdir import source_dir
from stage_fixtures import SharedDetectorBackends, scan, stage_config

CUT_S = CUT_FRAME / FPS
OUTPUT_FRAME_S = 1 / 24


def _faces(root: Path, video: Path, model_dir: Path, detector, **overrides) -> tuple[SourceRecord, Path]:
    config = stage_config(root, model_dir, inputs=video.parent, **overrides)
    (ref,) = scan(config).values()
    outcome = run_stage("faces", ref, config, SharedDetectorBackends(config, detector))
    return outcome.result, source_dir(config, ref.source_id)


def _column(folder: Path, segment, name: str) -> np.ndarray:
    return np.load(folder / segment.files["boxes.npy"])[:, BOXES_COLUMNS.index(name)]


def _crop_sides(folder: Path, segment) -> np.ndarray:
    return _column(folder, segment, "crop_side")


@pytest.fixture(scope="module")
def composed(tmp_path_factory, grid_clips: list[Path]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cuts")
    out = {}
    for name, make in (("hard", lambda p: hard_cut(grid_clips[0], grid_clips[1], p)),
                       ("zoom", lambda p: zoom_cut(grid_clips[0], p)),
                       ("interlude", lambda p: concat_with_gap(grid_clips[0], 0.4, p))):
        (root / name).mkdir()
        out[name] = make(root / name / f"{name}_cut.mp4")
    return out


def test_a_cut_between_two_people_at_the_same_place_gives_two_clips_split_at_the_cut(
        composed, tmp_path: Path, model_dir: Path, scrfd_detector):
    record, _ = _faces(tmp_path, composed["hard"], model_dir, scrfd_detector)
    accepted = [s for s in record.segments if s.status == ACCEPTED]
    assert len(accepted) == 2
    first, second = sorted(accepted, key=lambda s: s.start_s)
    assert first.end_s == pytest.approx(CUT_S, abs=OUTPUT_FRAME_S)
    assert second.start_s == pytest.approx(CUT_S, abs=OUTPUT_FRAME_S)
    assert not any(s.start_s < CUT_S - OUTPUT_FRAME_S and s.end_s > CUT_S + OUTPUT_FRAME_S for s in record.segments)
    # Same framing and backdrop: the whole-frame detector may miss it; the face check does not.
    assert first.numbers["ended_by"] in {"face_change", "cut"}


def test_a_zoom_cut_gives_crops_that_do_not_blend_the_two_framings(
        composed, tmp_path: Path, model_dir: Path, scrfd_detector):
    record, folder = _faces(tmp_path, composed["zoom"], model_dir, scrfd_detector)
    accepted = sorted((s for s in record.segments if s.status == ACCEPTED), key=lambda s: s.start_s)
    assert [s.numbers["shot"] for s in accepted] == [0, 1]
    assert record.numbers["shot_cuts_s"] == [pytest.approx(CUT_S, abs=1e-3)]
    before, after = (_crop_sides(folder, s) for s in accepted)
    # Each clip keeps its own framing throughout (no ramp towards the other shot's)...
    assert before.max() / before.min() < 1.05 and after.max() / after.min() < 1.05
    # ...and the second framing is the 1.5x zoom (the face; its crop is capped at the 288 px frame).
    faces = [np.median(_column(folder, s, "face_px")) for s in accepted]
    assert faces[1] / faces[0] == pytest.approx(1.5, rel=0.08)
    assert after.mean() > before.mean()


def test_without_the_gates_the_zoom_cut_blends_into_one_clip(composed, tmp_path: Path, model_dir: Path,
                                                             scrfd_detector):
    """The control: what the two tests above guard against happens when the gates are off."""
    record, folder = _faces(tmp_path, composed["zoom"], model_dir, scrfd_detector,
                            shots={"detector": "none", "face_check": False})
    (only,) = [s for s in record.segments if s.status == ACCEPTED]
    sides = _crop_sides(folder, only)
    cut = int(round((CUT_S - only.start_s) * 24))
    ramp = sides[cut - 3: cut + 3]
    assert len(np.unique(np.round(ramp))) > 3  # the smoothing window blends the framings across the cut


def test_a_short_cutaway_and_back_is_two_shots_not_a_bridged_gap(composed, tmp_path: Path, model_dir: Path,
                                                                 scrfd_detector):
    """0.4 s of a blue picture between two copies of one clip: the tracker alone would bridge the
    missing face (test_face_stage.py), but the picture cut away and back, so the clip splits there."""
    record, _ = _faces(tmp_path, composed["interlude"], model_dir, scrfd_detector)
    accepted = sorted((s for s in record.segments if s.status == ACCEPTED), key=lambda s: s.start_s)
    # The cut back comes 0.4 s after the cut away, within shots.min_shot_s: one cut is reported.
    assert record.numbers["shot_cuts_s"] == [pytest.approx(3.0, abs=OUTPUT_FRAME_S)]
    assert len(accepted) == 2 and accepted[0].numbers["shot"] < accepted[1].numbers["shot"]
    assert accepted[0].numbers["ended_by"] == "cut" and accepted[0].numbers["bridged_frames"] == 0
    assert accepted[0].end_s == pytest.approx(3.0, abs=OUTPUT_FRAME_S)


def test_a_track_ended_by_a_cut_closes_its_encoder_before_the_next_shot_encodes(
        composed, tmp_path: Path, model_dir: Path, scrfd_detector, monkeypatch):
    """One live x264 encoder per open track: a source of many shots must not keep an encoder per
    shot until it ends (memory grew with the number of shots before)."""
    from pipelines.media.encode import ClipEncoder

    started: list[ClipEncoder] = []
    alive_at_start: list[int] = []
    real_start = ClipEncoder._start

    def watched_start(encoder: ClipEncoder) -> None:
        alive_at_start.append(sum(not e.closed for e in started))
        real_start(encoder)
        started.append(encoder)

    monkeypatch.setattr(ClipEncoder, "_start", watched_start)
    record, folder = _faces(tmp_path, composed["hard"], model_dir, scrfd_detector)
    assert len([s for s in record.segments if s.status == ACCEPTED]) == len(started) == 2
    # The first shot's stream had ended (x264 flushing in its thread at most) when the second one started.
    assert alive_at_start == [0, 0]
    assert all((folder / s.files["mp4"]).is_file() for s in record.segments if s.status == ACCEPTED)
