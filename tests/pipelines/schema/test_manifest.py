"""The manifest and the dataset statistics next to the shards (pipelines/schema/manifest.py),
read from what write_shards wrote for a real GRID clip through the face stage and Light-ASD."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from pipelines.schema.manifest import (MANIFEST_FILE, DatasetStats, SegmentRow, SourceRow, load_manifest,
                                       save_manifest)


@pytest.fixture(scope="module")
def run(grid_asd_run):
    return grid_asd_run


def test_manifest_rows_account_for_the_source_and_every_segment_and_round_trip(run, tmp_path):
    shards_dir = run.shards.shards_dir
    rows = load_manifest(shards_dir)
    (source,) = [row for row in rows if isinstance(row, SourceRow)]
    assert source.source_id == run.record.source_id and source.status == "accepted"
    segments = {row.key: row for row in rows if isinstance(row, SegmentRow)}
    # The face segment was split by ASD: the parent is listed as split, its child as accepted.
    (child,) = [row for row in segments.values() if row.parent is not None]
    assert segments[child.parent].status == "split" and child.status == "accepted"
    assert child.numbers["asd.kept_s"] == pytest.approx(child.end_s - child.start_s, abs=1 / 24)
    save_manifest(tmp_path, rows)
    assert (tmp_path / MANIFEST_FILE).read_bytes() == (shards_dir / MANIFEST_FILE).read_bytes()


def test_stats_agree_with_the_manifest_and_round_trip(run, tmp_path):
    stats = DatasetStats.load(run.shards.shards_dir)
    accepted = [row for row in load_manifest(run.shards.shards_dir)
                if isinstance(row, SegmentRow) and row.status == "accepted"]
    assert stats.segments.accepted == len(accepted) == 1
    assert stats.accepted_duration_s.total == pytest.approx(sum(r.end_s - r.start_s for r in accepted), abs=1e-3)
    assert stats.shards.count == len(run.shards.shard_index.shards)
    stats.save(tmp_path)
    assert DatasetStats.load(tmp_path) == stats


def test_an_unknown_row_kind_or_a_missing_field_is_an_error_naming_it(tmp_path):
    (tmp_path / MANIFEST_FILE).write_text(json.dumps({"kind": "clip", "key": "x"}) + "\n")
    with pytest.raises(ValidationError, match="clip"):
        load_manifest(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text(json.dumps({"kind": "source", "source_id": "a", "relpath": "a.mp4",
                                                      "status": "accepted", "reason": None, "detail": None}) + "\n")
    with pytest.raises(ValidationError, match="numbers"):
        load_manifest(tmp_path)
