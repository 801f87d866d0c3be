"""The source record and stage results (pipelines/schema/records.py) as the runner wrote them
for a GRID clip through the real face stage and Light-ASD: load/save round trips, strictness."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from pipelines.runner import load_result, result_path
from pipelines.schema.records import ACCEPTED, SourceInfo, SourceRecord, SourceRef, StageDecision, StageResult
from pipelines.workdir import RECORD_FILE, load_record, source_dir


@pytest.fixture(scope="module")
def grid(grid_asd_run):
    return grid_asd_run


def test_source_record_round_trips_through_record_json(grid, tmp_path):
    stored = source_dir(grid.config, grid.record.source_id) / RECORD_FILE
    data = stored.read_bytes()
    record = SourceRecord.load(stored)
    assert record == grid.record == load_record(grid.config, grid.record.source_id)
    assert record.dumps() == data
    record.save(tmp_path / RECORD_FILE)
    assert (tmp_path / RECORD_FILE).read_bytes() == data
    # The record names the source without a machine path: the input folder may move.
    raw = json.loads(data)
    assert set(raw["source"]) == {"source_id", "relpath", "sha256", "size_bytes"}
    assert raw["fingerprint"] == grid.record.fingerprint != ""
    assert raw["source"]["sha256"] == grid.ref.sha256
    assert type(record.source) is SourceInfo and record.source == grid.ref.info()
    (segment,) = record.segments
    assert segment.status == ACCEPTED and segment.files["mp4"].endswith(".mp4")


def test_stage_result_round_trips_through_its_json(grid, tmp_path):
    path = result_path(grid.config, grid.record.source_id, "asd")
    data = path.read_bytes()
    result = StageResult.load(path)
    assert result == grid.asd == load_result(grid.config, grid.record.source_id, "asd")
    result.save(tmp_path / "asd.json")
    assert (tmp_path / "asd.json").read_bytes() == data
    ((key, decision),) = result.segments.items()
    assert key == grid.record.segments[0].key and isinstance(decision, StageDecision)
    assert set(result.details["plots"]) == {key}
    assert result.fingerprint and result.stage == "asd" and result.skipped is None


def test_unknown_or_missing_fields_are_errors_not_dropped(grid):
    raw = json.loads(source_dir(grid.config, grid.record.source_id).joinpath(RECORD_FILE).read_text())
    raw["segments"][0]["legacy"] = 1
    with pytest.raises(ValidationError) as caught:
        SourceRecord.model_validate(raw)
    assert caught.value.errors()[0]["loc"] == ("segments", 0, "legacy")
    raw = json.loads(result_path(grid.config, grid.record.source_id, "asd").read_text())
    key = next(iter(raw["segments"]))
    raw["segments"][key]["decision"] = "maybe"
    with pytest.raises(ValidationError) as caught:
        StageResult.model_validate(raw)
    assert caught.value.errors()[0]["loc"] == ("segments", key, "decision")
    del raw["stage"]
    with pytest.raises(ValidationError, match="stage"):
        StageResult.model_validate(raw)


def test_decisions_are_immutable_and_refs_keep_their_path_out_of_records(grid):
    (decision,) = grid.asd.segments.values()
    with pytest.raises(ValidationError):
        decision.decision = "rejected"
    ref = grid.ref
    assert isinstance(ref, SourceRef) and ref.path.is_file()
    assert "path" not in ref.model_dump()
    with pytest.raises(ValidationError):
        SourceRef(source_id=ref.source_id, relpath=ref.relpath, sha256=ref.sha256, size_bytes=ref.size_bytes)
