"""The face stage end to end on composed media with the real SCRFD weights: sources -> face
clips -> shards.

One run through the stage runner over several sources (module-scoped, about half a minute on
2 cores) feeds most tests; the SCRFD detector is the session one.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from pipelines.config import PipelineConfig, load_config
from pipelines.faces.clips import BOXES_COLUMNS
from pipelines.faces.detectors import build_detector
import pipelines.fixtures.media as mf
from pipelines.ingest import SourceRegistry
from pipelines.media import decode as media
from pipelines.media.wav import read_wav
from pipelines.models import ModelStore
from pipelines.schema.records import Segment, SourceRecord, SourceRef
from pipelines.schema.sample import SampleRecord
from pipelines.runner import run_stage
from pipelines.schema.index import INDEX_FILE
from pipelines.schema.manifest import MANIFEST_FILE
from pipelines.shards import ShardSummary, verify_shards, write_shards
from pipelines.faces.stage import process_source
from pipelines.workdir import RECORD_FILE, SOURCE_AUDIO_FILE, load_record, source_dir
from stage_fixtures import SharedDetectorBackends

GRID_FRAME_W = 360
ONE_OUT_FRAME = 1 / 24


@dataclass
class Run:
    cfg: PipelineConfig
    refs: dict[str, SourceRef]  # by file name in the input folder
    records: dict[str, SourceRecord]
    summary: ShardSummary
    decodes: dict[str, int]  # source decodes made by this run, by file name


def _config(root: Path, model_dir: Path, **overrides) -> PipelineConfig:
    # These tests cover the face stage alone: the later stages (each tested in its own folder) are off.
    overrides.setdefault("quality", {"enabled": False})
    overrides.setdefault("speech", {"enabled": False})
    overrides.setdefault("asd", {"enabled": False})
    overrides.setdefault("flame", {"enabled": False})
    overrides.setdefault("captions", {"enabled": False})
    # The gap tests compose gaps as blue frames, which the whole-frame shot detector rightly takes
    # for two cuts; the tracker's own gap bridging is what they test (cuts: test_shot_cuts_e2e.py).
    overrides.setdefault("shots", {"detector": "none"})
    return load_config(paths={"input_dir": root / "input", "data_dir": root / "data", "model_dir": model_dir},
                       **overrides)


def _scan(cfg: PipelineConfig) -> dict[str, SourceRef]:
    refs = SourceRegistry(cfg.paths.registry_path).scan(cfg.paths.input_dir, cfg.ingest.extensions)
    return {ref.relpath: ref for ref in refs}


@pytest.fixture(scope="module")
def run(tmp_path_factory, composed, grid_clips, model_dir, scrfd_detector) -> Run:
    root = tmp_path_factory.mktemp("e2e")
    clip, other = grid_clips[0], grid_clips[1]
    inputs = {
        "grid.mpg": clip,
        "gap_2s.mp4": composed.get("gap_2s.mp4", mf.concat_with_gap, clip, 2.0),
        "gap_0p4s.mp4": composed.get("gap_0p4s.mp4", mf.concat_with_gap, clip, 0.4),
        "two_faces.mp4": composed.get("two_faces.mp4", mf.side_by_side, clip, other),
        "truncated.mp4": composed.get("truncated.mp4", mf.truncated_copy, clip, keep_fraction=0.5),
        "text.mp4": composed.get("text.mp4", mf.text_as_mp4),
    }
    (root / "input").mkdir()
    for name, path in inputs.items():
        shutil.copyfile(path, root / "input" / name)
    cfg = _config(root, model_dir)
    refs = _scan(cfg)
    assert sorted(refs) == sorted(inputs)
    before = {name: media.DECODE_COUNTS[str(ref.path)] for name, ref in refs.items()}
    backends = SharedDetectorBackends(cfg, scrfd_detector)
    outcomes = {name: run_stage("faces", ref, cfg, backends) for name, ref in sorted(refs.items())}
    assert {o.status for o in outcomes.values()} == {"ran"}
    records = {name: outcome.result for name, outcome in outcomes.items()}
    decodes = {name: media.DECODE_COUNTS[str(ref.path)] - before[name] for name, ref in refs.items()}
    summary = write_shards(list(records.values()), cfg)
    return Run(cfg, refs, records, summary, decodes)


def _accepted(record: SourceRecord) -> list[Segment]:
    return record.accepted_segments()


def _duration(segment: Segment) -> float:
    return segment.end_s - segment.start_s


def test_grid_clip_alone_gives_one_segment(run: Run):
    record = run.records["grid.mpg"]
    assert record.status == "accepted", record.reason
    assert len(record.segments) == 1
    (segment,) = _accepted(record)
    assert segment.start_s == pytest.approx(0.0, abs=0.05)
    assert segment.end_s == pytest.approx(3.0, abs=0.05)
    assert segment.numbers["bridged_frames"] == 0
    assert segment.numbers["detected_frames"] == 75
    assert record.numbers["decoded_frames"] == 75
    # The runner stored its fingerprint in record.json; the source's 16 kHz audio is kept for speech.
    folder = source_dir(run.cfg, record.source_id)
    assert record.fingerprint and SourceRecord.load(folder / RECORD_FILE) == record
    assert (folder / SOURCE_AUDIO_FILE).is_file()


def test_two_second_gap_splits_into_two_segments(run: Run):
    record = run.records["gap_2s.mp4"]
    assert record.status == "accepted", record.reason
    segments = _accepted(record)
    assert len(segments) == len(record.segments) == 2
    first, second = segments
    assert first.track_id != second.track_id
    assert (first.start_s, first.end_s) == pytest.approx((0.0, 3.0), abs=0.05)
    assert (second.start_s, second.end_s) == pytest.approx((5.0, 8.0), abs=0.05)
    assert first.numbers["bridged_frames"] == second.numbers["bridged_frames"] == 0


def test_short_gap_is_bridged_into_one_segment(run: Run):
    record = run.records["gap_0p4s.mp4"]
    assert record.status == "accepted", record.reason
    (segment,) = record.segments
    assert segment.status == "accepted"
    assert (segment.start_s, segment.end_s) == pytest.approx((0.0, 6.4), abs=0.05)
    assert segment.numbers["bridged_frames"] == 10  # 0.4 s of blue frames at 25 fps
    assert segment.numbers["longest_gap_s"] == pytest.approx(0.4, abs=0.01)
    assert segment.numbers["source_frames"] == 160


def test_two_faces_side_by_side_give_two_tracks(run: Run):
    record = run.records["two_faces.mp4"]
    assert record.status == "accepted", record.reason
    segments = _accepted(record)
    assert len(segments) == len(record.segments) == 2
    assert len({s.track_id for s in segments}) == 2
    centres = sorted((s.numbers["first_box"][0] + s.numbers["first_box"][2]) / 2 for s in segments)
    assert centres[0] < GRID_FRAME_W <= centres[1]  # one face in each half of the 720 px frame
    for segment in segments:
        assert _duration(segment) == pytest.approx(3.0, abs=0.05)


def test_broken_sources_are_rejected_with_distinct_reasons(run: Run):
    truncated, text = run.records["truncated.mp4"], run.records["text.mp4"]
    assert truncated.status == text.status == "rejected"
    assert text.reason == "not_a_media_file"
    assert truncated.reason == "truncated_stream"
    assert truncated.numbers["decoded_duration_s"] < 0.9 * truncated.numbers["declared_duration_s"]
    assert truncated.reason != text.reason
    assert truncated.detail and text.detail
    assert truncated.probe is not None and truncated.probe["duration_s"] == pytest.approx(3.0, abs=0.05)
    assert text.probe is None
    for name in ("truncated.mp4", "text.mp4"):
        folder = source_dir(run.cfg, run.refs[name].source_id)
        assert sorted(p.name for p in folder.iterdir()) == [RECORD_FILE], "a rejected source keeps no clip files"
        assert load_record(run.cfg, run.refs[name].source_id) == run.records[name]
    # The bad inputs did not stop the others in the same run.
    for name in ("grid.mpg", "gap_2s.mp4", "gap_0p4s.mp4", "two_faces.mp4"):
        assert run.records[name].status == "accepted"


def test_each_probed_source_is_decoded_once(run: Run):
    assert run.decodes == {name: (0 if name == "text.mp4" else 1) for name in run.refs}


def test_manifest_accounts_for_every_source_and_segment(run: Run):
    rows = [json.loads(line) for line in run.summary.manifest_path.read_text().splitlines()]
    sources = {row["source_id"]: row for row in rows if row["kind"] == "source"}
    assert set(sources) == {ref.source_id for ref in run.refs.values()}
    for name, ref in run.refs.items():
        row = sources[ref.source_id]
        assert row["relpath"] == name
        assert row["status"] == run.records[name].status
        assert row["reason"] == run.records[name].reason
    segment_keys = {row["key"] for row in rows if row["kind"] == "segment"}
    expected = {s.key for rec in run.records.values() for s in rec.segments}
    assert segment_keys == expected and len(expected) == 6
    stats = run.summary.stats.model_dump()
    assert stats["sources"] == {"total": 6, "accepted": 4,
                                "rejected_by_reason": {run.records["truncated.mp4"].reason: 1, "not_a_media_file": 1}}
    assert stats["segments"]["accepted"] == 6
    accepted_keys = {s.key for rec in run.records.values() for s in _accepted(rec)}
    assert set(run.summary.index) == accepted_keys


def _ffprobe_stream(info: dict, kind: str) -> dict:
    streams = [s for s in info["streams"] if s["codec_type"] == kind]
    assert len(streams) == 1, f"expected one {kind} stream"
    return streams[0]


def test_accepted_clips_have_the_output_format(run: Run):
    checked = 0
    for name, record in run.records.items():
        folder = source_dir(run.cfg, record.source_id)
        for segment in _accepted(record):
            duration = _duration(segment)
            mp4 = folder / segment.files["mp4"]
            info = mf.ffprobe(mp4, "-count_frames")
            video, audio = _ffprobe_stream(info, "video"), _ffprobe_stream(info, "audio")
            assert (video["codec_name"], video["width"], video["height"]) == ("h264", 384, 384), mp4.name
            assert Fraction(video["avg_frame_rate"]) == 24
            frames = int(video["nb_read_frames"])
            assert abs(frames - duration * 24) <= 1, (mp4.name, frames, duration)
            assert float(video["duration"]) == pytest.approx(duration, abs=ONE_OUT_FRAME)
            assert (audio["codec_name"], int(audio["sample_rate"]), audio["channels"]) == ("aac", 16000, 1)
            assert float(audio["duration"]) == pytest.approx(duration, abs=ONE_OUT_FRAME)

            samples, rate = read_wav(folder / segment.files["wav"])
            assert rate == 16000 and len(samples) == round(duration * 16000)

            sample = json.loads((folder / segment.files["json"]).read_text())
            assert sample["key"] == segment.key
            assert sample["video"]["frames"] == frames
            assert sample["time_range_s"]["duration"] == pytest.approx(duration, abs=1e-5)
            assert sample["faces"]["detector"].startswith("insightface-scrfd")
            assert sample["config_hash"] == run.cfg.content_hash()

            table = np.load(folder / segment.files["boxes.npy"])
            assert table.shape == (frames, len(BOXES_COLUMNS))
            assert np.all(np.diff(table[:, 0]) > 0)
            assert np.all(table[:, 8] > 0)  # crop sides
            checked += 1
    assert checked == 6


def test_shards_hold_every_accepted_sample(run: Run):
    assert verify_shards(run.summary.shards_dir) == []
    members: dict[str, bytes] = {}
    for entry in run.summary.shards:
        with tarfile.open(run.summary.shards_dir / entry["name"]) as tar:
            for member in tar.getmembers():
                assert member.mtime == 0
                members[member.name] = tar.extractfile(member).read()
    for record in run.records.values():
        folder = source_dir(run.cfg, record.source_id)
        for segment in _accepted(record):
            for ext, file_name in segment.files.items():
                if ext == "json":  # packed: the face stage's JSON plus the fingerprint of the run it came from
                    packed = SampleRecord.load(members[f"{segment.key}.json"])
                    written = SampleRecord.load(folder / file_name)
                    assert packed == written.model_copy(update={"stage_fingerprints": {"faces": record.fingerprint}})
                    assert packed.stage_fingerprints["faces"]
                    continue
                assert members[f"{segment.key}.{ext}"] == (folder / file_name).read_bytes()
    assert len(members) == 6 * 4


def test_process_source_twice_gives_identical_files(run: Run, tmp_path: Path, model_dir: Path, scrfd_detector):
    ref = run.refs["gap_0p4s.mp4"]
    cfg2 = _config(tmp_path, model_dir)
    # The same fingerprint the runner stored, so record.json is comparable byte for byte.
    again = process_source(ref, cfg2, scrfd_detector, fingerprint=run.records["gap_0p4s.mp4"].fingerprint)
    assert again == run.records["gap_0p4s.mp4"]
    first, second = source_dir(run.cfg, ref.source_id), source_dir(cfg2, ref.source_id)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    assert {Path(n).suffix for n in names} >= {".mp4", ".wav", ".json", ".npy"}
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_write_shards_twice_gives_identical_shards(run: Run):
    shards_dir = run.summary.shards_dir
    names = [entry["name"] for entry in run.summary.shards] + [INDEX_FILE, MANIFEST_FILE]
    before = {name: (shards_dir / name).read_bytes() for name in names}
    again = write_shards(list(reversed(list(run.records.values()))), run.cfg)
    assert again.shards == run.summary.shards
    assert {name: (shards_dir / name).read_bytes() for name in names} == before
    assert verify_shards(shards_dir) == []


def test_verify_shards_detects_corruption(run: Run, tmp_path: Path):
    copy = tmp_path / "shards"
    shutil.copytree(run.summary.shards_dir, copy)
    name = run.summary.shards[0]["name"]
    data = bytearray((copy / name).read_bytes())
    middle = len(data) // 2
    data[middle: middle + 16] = bytes(b ^ 0xFF for b in data[middle: middle + 16])
    (copy / name).write_bytes(bytes(data))
    problems = verify_shards(copy)
    assert problems and any(name in p and "sha256" in p for p in problems)
    assert verify_shards(run.summary.shards_dir) == []  # the original is untouched

    (copy / name).unlink()
    problems = verify_shards(copy)
    assert any("cannot be opened" in p for p in problems)
    assert any("missing" in p for p in problems)  # its samples are gone too


def test_verify_shards_detects_a_sample_missing_from_its_shard(run: Run, tmp_path: Path):
    copy = tmp_path / "shards"
    shutil.copytree(run.summary.shards_dir, copy)
    index = json.loads((copy / INDEX_FILE).read_text())
    index["samples"]["not-a-real-key_s000"] = run.summary.shards[0]["name"]
    (copy / INDEX_FILE).write_text(json.dumps(index))
    shard = run.summary.shards[0]["name"]
    assert verify_shards(copy) == [f"not-a-real-key_s000 in {shard}: missing ['json', 'mp4', 'wav']"]


def test_mediapipe_backend_finds_the_grid_face(tmp_path: Path, grid_clip: Path, model_dir: Path):
    if not (model_dir / "mediapipe" / "face_detection_short_range.tflite").is_file():
        pytest.skip("MediaPipe short-range weights not in the model folder")
    (tmp_path / "input").mkdir()
    shutil.copyfile(grid_clip, tmp_path / "input" / "grid.mpg")
    cfg = _config(tmp_path, model_dir, faces={"backend": "mediapipe"})
    (ref,) = _scan(cfg).values()
    detector = build_detector(cfg.faces, ModelStore(cfg.paths.model_dir))
    try:
        record = process_source(ref, cfg, detector)
    finally:
        detector.close()
    assert record.status == "accepted", record.reason
    (segment,) = record.segments
    assert segment.status == "accepted"
    assert _duration(segment) == pytest.approx(3.0, abs=0.05)
    sample = json.loads((source_dir(cfg, ref.source_id) / segment.files["json"]).read_text())
    assert sample["faces"]["detector"].startswith("mediapipe-blazeface")
    assert sample["faces"]["detector_sha256"] == ModelStore(model_dir).status("mediapipe_short_range").sha256
