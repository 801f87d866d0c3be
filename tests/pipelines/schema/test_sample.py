"""The sample JSON as packed in the shards (pipelines/schema/sample.py), read from real shards:
a GRID clip through the real face stage and Light-ASD, packed by write_shards."""

from __future__ import annotations

import json
import tarfile

import pytest
from pydantic import ValidationError

from pipelines.schema.sample import SAMPLE_SCHEMA, SampleRecord


@pytest.fixture(scope="module")
def packed(grid_asd_run) -> tuple[object, dict[str, bytes]]:
    """(the run, sample key -> its JSON bytes as found in the shards)."""
    run = grid_asd_run
    samples = {}
    for entry in run.shards.shards:
        with tarfile.open(run.shards.shards_dir / entry["name"]) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    samples[member.name[: -len(".json")]] = tar.extractfile(member).read()
    assert len(samples) == 1, "the GRID clip's speaking run is the one sample"
    return run, samples


def _one(packed) -> bytes:
    (data,) = packed[1].values()
    return data


def test_a_shard_sample_round_trips_byte_for_byte(packed):
    run, _ = packed
    data = _one(packed)
    sample = SampleRecord.load(data)
    assert sample.dumps() == data
    assert SampleRecord.load(data.decode()) == sample
    # What a reader relies on, from the real run.
    assert sample.schema_ == SAMPLE_SCHEMA
    assert sample.stage_fingerprints == {"faces": run.record.fingerprint, "quality": run.quality.fingerprint,
                                         "asd": run.asd.fingerprint}
    assert sample.parent_key == run.record.segments[0].key
    assert [f.stage for f in sample.filters] == ["faces", "quality", "asd"]
    assert sample.video.fps == run.config.crops.fps and sample.audio.sample_rate == run.config.audio.sample_rate
    # Absent optional fields stay absent (not null) in the JSON.
    raw = json.loads(data)
    assert "speech" not in raw and "flame" not in raw and "captions" not in raw
    assert raw["schema"] == SAMPLE_SCHEMA


def test_a_sample_written_before_schema_2_still_loads(packed, tmp_path):
    raw = json.loads(_one(packed))
    del raw["stage_fingerprints"]
    raw["schema"] = "talkinghead.sample/1"
    path = tmp_path / "old.json"
    path.write_text(json.dumps(raw))
    old = SampleRecord.load(path)
    assert old.stage_fingerprints == {} and old.schema_ == "talkinghead.sample/1"
    assert old.video == SampleRecord.load(_one(packed)).video


def _errors(raw: dict) -> list[dict]:
    with pytest.raises(ValidationError) as caught:
        SampleRecord.load(json.dumps(raw))
    return caught.value.errors()


def test_an_unknown_key_is_rejected_by_name(packed):
    raw = json.loads(_one(packed))
    raw["speaker_name"] = "someone"
    (error,) = _errors(raw)
    assert error["loc"] == ("speaker_name",) and error["type"] == "extra_forbidden"
    raw = json.loads(_one(packed))
    raw["video"]["frame_rate"] = raw["video"].pop("fps")  # a renamed field never passes silently
    assert {(e["loc"], e["type"]) for e in _errors(raw)} == {
        (("video", "fps"), "missing"), (("video", "frame_rate"), "extra_forbidden")}


def test_a_missing_fps_is_rejected_by_name(packed):
    raw = json.loads(_one(packed))
    del raw["video"]["fps"]
    (error,) = _errors(raw)
    assert error["loc"] == ("video", "fps") and error["type"] == "missing"
    with pytest.raises(ValidationError, match=r"video\.fps"):
        SampleRecord.load(json.dumps(raw))


def test_a_foreign_schema_name_is_rejected(packed):
    raw = json.loads(_one(packed))
    raw["schema"] = "someone.else/1"
    (error,) = _errors(raw)
    assert error["loc"] == ("schema",)
