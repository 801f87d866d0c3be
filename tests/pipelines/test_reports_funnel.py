"""The seconds funnel (pipelines/funnel.py), the gates report (pipelines/reports.py), the manifest's
shot fields and the per-stage metadata of the new stages (assets/stage_metadata.py).

Hand-made records pin each accounting rule; the real GRID run (face stage + Light-ASD) checks
that the parts add up on what the pipeline actually wrote.
"""

from __future__ import annotations

import io
import logging

import pytest
from PIL import Image

from assets.stage_metadata import stage_metadata
from pipelines.funnel import compute_funnel, source_buckets
from pipelines.reports import gates_report_png, stage_numbers
from pipelines.runner import StageOutcome
from pipelines.schema.manifest import DatasetStats, SegmentRow, SourceRow, load_manifest
from pipelines.schema.records import (ChildSegment, Segment, SourceInfo, SourceRecord, StageDecision, StageResult)
from pipelines.decisions import apply_results
from pipelines.shards import manifest_rows

INFO = SourceInfo(source_id="src-0123456789", relpath="src.mp4", sha256="0" * 64, size_bytes=1)


def _face(key: str, start: float, end: float, status: str = "accepted", reason: str | None = None,
          **numbers) -> Segment:
    return Segment(key=key, track_id=0, start_s=start, end_s=end, status=status, reason=reason,
                   numbers={"duration_s": end - start, **numbers},
                   files={"mp4": f"{key}.mp4", "wav": f"{key}.wav", "json": f"{key}.json"})


def _record(segments: list[Segment], decoded_s: float | None = 10.0, **numbers) -> SourceRecord:
    extra = {"decoded_duration_s": decoded_s} if decoded_s is not None else {}
    return SourceRecord.from_segments(INFO, {}, segments, {**extra, **numbers})


def _child(key: str, start: float, end: float, **numbers) -> ChildSegment:
    return ChildSegment(key=key, start_s=start, end_s=end, files={}, numbers=numbers, payload={})


def _adds_up(funnel) -> None:
    assert funnel.seconds_in == pytest.approx(funnel.seconds_kept + funnel.seconds_pending + funnel.seconds_lost,
                                              abs=1e-3 * (1 + len(funnel.lost_s)))


def test_quality_split_then_asd_rejection_lands_in_named_gates():
    """0-2 s no face; face 2-10 s: quality keeps 2-6 and 7-10 (1 s failed: 0.75 small, 0.25 blurry),
    ASD rejects 7-10 and splits 2-6 into 2.5-5.5."""
    record = _record([_face("k_s000", 2.0, 10.0)])
    quality = StageResult(stage="quality", segments={"k_s000": StageDecision(
        decision="accepted", numbers={"failed_s": {"face_too_small": 1.5, "face_blurry": 0.5, "head_orientation": 0}},
        children=[_child("k_s000_q00", 2.0, 6.0), _child("k_s000_q01", 7.0, 10.0)])})
    asd = StageResult(stage="asd", segments={
        "k_s000_q00": StageDecision(decision="accepted", children=[_child("k_s000_q00_a00", 2.5, 5.5)]),
        "k_s000_q01": StageDecision(decision="rejected", reason="av_sync_mismatch")})
    decided = apply_results(record, ["quality", "asd"], {"quality": quality, "asd": asd})
    funnel = compute_funnel([decided])
    assert funnel.seconds_in == 10.0 and funnel.seconds_kept == 3.0 and funnel.kept_clip_s == 3.0
    # failed_s shares the 1 s quality cut out (6-7) in its proportions; a reason with 0 s does not appear.
    assert funnel.lost_s == {"faces.no_face": 2.0, "quality.face_too_small": 0.75, "quality.face_blurry": 0.25,
                             "asd.trimmed": 1.0, "asd.av_sync_mismatch": 3.0}
    _adds_up(funnel)


def test_face_rejections_pending_and_whole_source_rejections():
    short = _face("a_s000", 0.0, 0.4, status="rejected", reason="segment_too_short")
    waiting = _face("a_s001", 1.0, 4.0)
    decided = apply_results(_record([short, waiting]), ["asd"], {"asd": None})
    broken = SourceRecord.rejected(INFO, "decode_error", "bad packet", {"decoded_duration_s": 2.5})
    too_long = SourceRecord.rejected(INFO, "source_too_long", "2 h", {"duration_s": 7200.0})
    funnel = compute_funnel([decided, broken, too_long])
    assert funnel.seconds_in == 12.5 and funnel.seconds_pending == 3.0 and funnel.seconds_kept == 0.0
    assert funnel.lost_s == {"faces.no_face": 6.6, "faces.segment_too_short": 0.4, "source.decode_error": 2.5}
    # Turned away from its header: never decoded, counted as a source, not as seconds.
    assert funnel.not_decoded == {"source.source_too_long": 1}
    _adds_up(funnel)


def test_overlapping_faces_count_each_moment_once_for_the_face_that_got_furthest():
    """Two faces at once: where one is kept the moment is kept, whatever the other's fate."""
    left, right = _face("b_s000", 0.0, 6.0), _face("b_s001", 3.0, 9.0)
    asd = StageResult(stage="asd", segments={
        "b_s000": StageDecision(decision="rejected", reason="no_active_speaker"),
        "b_s001": StageDecision(decision="accepted")})
    decided = apply_results(_record([left, right]), ["asd"], {"asd": asd})
    buckets = source_buckets(decided)
    assert buckets == pytest.approx({"asd.no_active_speaker": 3.0, "kept": 6.0, "faces.no_face": 1.0})
    funnel = compute_funnel([decided])
    assert funnel.kept_clip_s == 6.0 and funnel.seconds_kept == 6.0
    _adds_up(funnel)


def test_a_new_stage_and_reason_appear_without_code_changes():
    decided = apply_results(_record([_face("c_s000", 0.0, 10.0)]), ["lighting"], {"lighting": StageResult(
        stage="lighting", segments={"c_s000": StageDecision(decision="rejected", reason="too_dark")})})
    assert compute_funnel([decided]).lost_s == {"lighting.too_dark": 10.0}


def test_stage_numbers_count_each_decision_once_through_splits():
    record = _record([_face("d_s000", 0.0, 10.0)])
    quality = StageResult(stage="quality", segments={"d_s000": StageDecision(
        decision="accepted", numbers={"face_px_median": 120.0, "orientation": "frontal"},
        children=[_child("d_s000_q00", 0.0, 4.0, kept_s=4.0), _child("d_s000_q01", 5.0, 10.0, kept_s=5.0)])})
    asd = StageResult(stage="asd", segments={
        "d_s000_q00": StageDecision(decision="accepted", numbers={"av_offset_frames": 1, "av_confidence": 4.0},
                                    children=[_child("d_s000_q00_a00", 0.5, 3.5)]),
        "d_s000_q01": StageDecision(decision="accepted", numbers={"av_offset_frames": -2, "av_confidence": 2.0})})
    segments = apply_results(record, ["quality", "asd"], {"quality": quality, "asd": asd}).segments
    assert [n["face_px_median"] for n in stage_numbers(segments, "quality")] == [120.0]
    assert sorted(n["av_offset_frames"] for n in stage_numbers(segments, "asd")) == [-2, 1]


def _png_size(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size


def test_gates_report_renders_with_and_without_the_new_stages_numbers(grid_asd_run, tmp_path):
    stats = DatasetStats.load(grid_asd_run.shards.shards_dir)
    segments = [s for r in grid_asd_run.shards.records for s in r.segments]
    plain = gates_report_png(stats, segments)  # no quality stage, maybe no sync numbers: "no data" panels
    empty = gates_report_png(stats.model_copy(update={"funnel": compute_funnel([])}), [])
    assert _png_size(plain) == _png_size(empty) == (960, 1040)
    assert plain != empty
    (tmp_path / "gates.png").write_bytes(plain)


def test_funnel_adds_up_on_a_real_grid_run(grid_asd_run):
    """Face stage + Light-ASD on a GRID clip: all 3 s accounted for, kept equals the accepted clips."""
    stats = DatasetStats.load(grid_asd_run.shards.shards_dir)
    funnel = stats.funnel
    (record,) = grid_asd_run.shards.records
    assert funnel.seconds_in == pytest.approx(record.numbers["decoded_duration_s"], abs=1e-3)
    assert 2.9 <= funnel.seconds_in <= 3.1
    assert funnel.seconds_kept == pytest.approx(stats.accepted_duration_s.total, abs=2e-3)
    assert 0 < funnel.seconds_kept < funnel.seconds_in  # ASD cut the silent lead-in and tail
    assert funnel.seconds_pending == 0 and funnel.not_decoded == {}
    assert all(gate.split(".")[0] in ("faces", "quality", "asd") for gate in funnel.lost_s), funnel.lost_s
    _adds_up(funnel)


def test_manifest_carries_shot_cuts_per_source_and_shot_per_segment():
    cut = _face("e_s001", 5.0, 9.0, shot=1)
    record = _record([_face("e_s000", 0.0, 5.0, shot=0), cut], shot_cuts_s=[5.0])
    asd = StageResult(stage="asd", segments={
        "e_s000": StageDecision(decision="accepted"),
        "e_s001": StageDecision(decision="accepted", children=[_child("e_s001_a00", 5.5, 8.5)])})
    rows = manifest_rows([apply_results(record, ["asd"], {"asd": asd})])
    (source,) = [r for r in rows if isinstance(r, SourceRow)]
    assert source.shot_cuts_s == [5.0]
    shots = {r.key: r.shot for r in rows if isinstance(r, SegmentRow)}
    assert shots == {"e_s000": 0, "e_s001": 1, "e_s001_a00": 1}  # a child stays in its parent's shot


def test_real_manifest_rows_have_no_shot_fields_until_the_face_stage_writes_them(grid_asd_run):
    rows = load_manifest(grid_asd_run.shards.shards_dir)
    (source,) = [r for r in rows if isinstance(r, SourceRow)]
    assert source.shot_cuts_s == [float(t) for t in source.numbers.get("shot_cuts_s", [])]
    for row in rows:
        if isinstance(row, SegmentRow) and "shot" in row.numbers:
            assert row.shot == int(row.numbers["shot"])


def _outcome(stage: str, result: StageResult) -> StageOutcome:
    return StageOutcome(stage, INFO.source_id, "ran", "", 0.0, result)


def test_quality_metadata_sums_failed_seconds_and_takes_medians(grid_asd_run):
    result = StageResult(stage="quality", segments={
        "x_s000": StageDecision(decision="accepted", numbers={
            "face_px_median": 100.0, "upscale_median": 2.5, "sharpness_median": 30.0, "orientation": "frontal",
            "failed_s": {"face_blurry": 0.5}, "kept_s": 4.0, "dropped_s": 0.5}),
        "x_s001": StageDecision(decision="rejected", reason="face_too_small", numbers={
            "face_px_median": 30.0, "upscale_median": 8.5, "sharpness_median": 10.0, "orientation": "side",
            "failed_s": {"face_too_small": 3.0, "face_blurry": 1.0}, "kept_s": 0.0, "dropped_s": 3.0})})
    meta = stage_metadata(_outcome("quality", result), grid_asd_run.config, logging.getLogger("test"))
    assert meta["failed_seconds"].value == {"face_blurry": 1.5, "face_too_small": 3.0}
    assert (meta["face_px_median"], meta["upscale_median"], meta["sharpness_median"]) == (65.0, 5.5, 20.0)
    assert meta["orientations"].value == {"frontal": 1, "side": 1}
    assert meta["rejections"].value == {"face_too_small": 1} and meta["dropped_seconds"] == 3.5


def test_unknown_stage_gets_a_decision_summary_and_asd_shows_sync(grid_asd_run):
    log = logging.getLogger("test")
    meta = stage_metadata(_outcome("lighting", StageResult(stage="lighting", segments={
        "x": StageDecision(decision="rejected", reason="too_dark")})), grid_asd_run.config, log)
    assert meta["segments_decided"] == 1 and meta["rejections"].value == {"too_dark": 1}
    asd = grid_asd_run.asd.model_copy(deep=True)
    for n, decision in enumerate(asd.segments.values()):
        decision.numbers.update(av_offset_frames=n - 1, av_confidence=3.0, av_corrected=n != 1)
    meta = stage_metadata(_outcome("asd", asd), grid_asd_run.config, log)
    assert meta["av_measured"] == len(asd.segments) >= 1
    assert meta["av_confidence_median"] == 3.0
    faces = stage_metadata(_outcome("faces", grid_asd_run.record), grid_asd_run.config, log)
    assert faces["shot_cuts"] == len(grid_asd_run.record.numbers.get("shot_cuts_s", []))
