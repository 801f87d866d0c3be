"""Applying the later stages' decisions (pipelines/decisions.py) to a real record: a GRID clip
through the real face stage and Light-ASD, which splits the clip into its speaking run; the
speech verdicts on that child are written here so that each path can be taken on purpose."""

from __future__ import annotations

import pytest

from pipelines.decisions import apply_results, sample_record
from pipelines.schema.records import ACCEPTED, PENDING, REJECTED, SPLIT, StageDecision, StageResult
from pipelines.workdir import source_dir


@pytest.fixture(scope="module")
def grid(grid_asd_run):
    run = grid_asd_run
    (segment,) = run.record.segments
    (decision,) = run.asd.segments.values()
    assert decision.decision == ACCEPTED and len(decision.children) == 1, "ASD keeps the speaking run only"
    return run


def _speech(decisions: dict[str, StageDecision]) -> StageResult:
    return StageResult(stage="speech", fingerprint="f", segments=decisions)


def test_a_split_hands_its_children_to_the_next_stage(grid):
    (parent,) = grid.record.segments
    (child,) = grid.asd.segments[parent.key].children
    verdict = StageDecision(decision=ACCEPTED, numbers={"overlap_ratio": 0.01}, flags=["language_unknown"],
                            payload={"transcript": "bin blue"})
    view = apply_results(grid.record, ["asd", "speech"], {"asd": grid.asd, "speech": _speech({child.key: verdict})})
    assert view.status == ACCEPTED and view.numbers["accepted_segments"] == 1
    split, kept = view.segments
    assert (split.key, split.status, split.reason) == (parent.key, SPLIT, None)
    assert (kept.key, kept.parent, kept.status) == (child.key, parent.key, ACCEPTED)
    assert (kept.start_s, kept.end_s, kept.files) == (child.start_s, child.end_s, child.files)
    assert kept.start_s > parent.start_s and kept.end_s < parent.end_s
    assert kept.numbers["duration_s"] == pytest.approx(child.end_s - child.start_s, abs=1e-4)
    # The child's own ASD numbers, then speech's, reach the manifest under the stage's name.
    assert kept.numbers["asd.kept_s"] == child.numbers["kept_s"]
    assert kept.numbers["speech.overlap_ratio"] == 0.01
    assert list(kept.stages) == ["asd", "speech"]
    assert kept.stages["asd"].payload == child.payload and kept.stages["asd"].children == []
    assert kept.stages["speech"] == verdict
    assert grid.record.segments[0].status == ACCEPTED, "the stored record is not modified"

    # The sample's JSON gains each stage's payload and decision, and the fingerprints named.
    face_json = (source_dir(grid.config, grid.record.source_id) / kept.files["json"]).read_bytes()
    sample = sample_record(face_json, kept, {"faces": "a", "asd": "b", "speech": "c"})
    assert sample.parent_key == parent.key and sample.key == child.key
    assert [f.stage for f in sample.filters] == ["faces", "asd", "speech"]
    assert sample.speech == {"transcript": "bin blue", "flags": ["language_unknown"]}
    assert sample.asd["mean_probability"] == child.payload["mean_probability"]
    assert sample.stage_fingerprints == {"faces": "a", "asd": "b", "speech": "c"}


def test_a_missing_result_leaves_the_segment_pending(grid):
    (parent,) = grid.record.segments
    (child,) = grid.asd.segments[parent.key].children
    for results in ({"asd": grid.asd, "speech": None},  # speech has not run
                    {"asd": grid.asd, "speech": _speech({})}):  # ran before this child existed
        view = apply_results(grid.record, ["asd", "speech"], results)
        split, waiting = view.segments
        assert split.status == SPLIT
        assert (waiting.key, waiting.status, waiting.reason) == (child.key, PENDING, "speech_not_run")
        assert (view.status, view.reason) == (PENDING, "stages_pending")
    view = apply_results(grid.record, ["asd", "speech"], {"asd": None, "speech": None})
    (segment,) = view.segments
    assert (segment.key, segment.status, segment.reason) == (parent.key, PENDING, "asd_not_run")


def test_a_rejection_of_every_child_rejects_the_source(grid):
    (parent,) = grid.record.segments
    (child,) = grid.asd.segments[parent.key].children
    no = StageDecision(decision=REJECTED, reason="overlapping_speech", numbers={"overlap_ratio": 0.5})
    view = apply_results(grid.record, ["asd", "speech"], {"asd": grid.asd, "speech": _speech({child.key: no})})
    split, rejected = view.segments
    assert (rejected.status, rejected.reason) == (REJECTED, "overlapping_speech")
    assert (view.status, view.reason) == (REJECTED, "no_accepted_segment")
    assert "overlapping_speech" in view.detail and view.numbers["accepted_segments"] == 0


def test_no_stage_leaves_the_record_as_the_face_stage_wrote_it(grid):
    assert apply_results(grid.record, [], {}) is grid.record
