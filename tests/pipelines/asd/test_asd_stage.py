"""The active speaker stage end to end: real Light-ASD weights, real GRID media, composed cases."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from pipelines.config import PipelineConfig, load_config
import pipelines.fixtures.media as mf
from pipelines.runner import load_result, result_path, run_source
from pipelines.schema.records import SourceRecord, StageDecision, StageResult
from pipelines.schema.sample import SampleRecord
from pipelines.schema.manifest import MANIFEST_FILE
from pipelines.shards import write_shards
from pipelines.speech.base import SAMPLE_RATE
from stage_fixtures import SharedDetectorBackends, scan

BOUNDARY_TOLERANCE_S = 0.4


@dataclass
class AsdRun:
    cfg: PipelineConfig
    records: dict[str, SourceRecord]
    results: dict[str, StageResult]
    summary: object


@pytest.fixture(scope="module")
def run(tmp_path_factory, composed, grid_clips, model_dir, scrfd_detector) -> AsdRun:
    if not (model_dir / "light-asd" / "pretrain_AVA_CVPR.model").is_file():
        pytest.skip("Light-ASD weights not in the model dir")
    root = tmp_path_factory.mktemp("asd-stage")
    inputs = root / "input"
    inputs.mkdir()
    male, female = grid_clips[0], grid_clips[1]
    sources = {clip.name: clip for clip in grid_clips}
    sources["silent.mp4"] = composed.get("silent.mp4", mf.silenced, male)
    # bbaf2n + lbax4n: every GRID face moves its lips in the same window, so Light-ASD tells
    # pairs apart only narrowly; bench/eval_asd_pairs.py measures all 15 pairs (20/30 right).
    left, right = grid_clips[0], grid_clips[2]
    sources["pair_left_speaks.mp4"] = composed.get("pair_left.mp4", mf.side_by_side, left, right, audio_from="left")
    sources["pair_right_speaks.mp4"] = composed.get("pair_right.mp4", mf.side_by_side, left, right,
                                                    audio_from="right")
    other_audio = composed.get("female.wav", lambda out: (mf.run_ffmpeg(
        ["-i", str(female), "-vn", "-ac", "1", "-ar", "16000", str(out)]) or out))
    sources["dubbed.mp4"] = composed.get("dubbed_female.mp4", mf.dubbed, male, other_audio, lead_in_s=0.0, loops=0)
    for name, path in sources.items():
        shutil.copyfile(path, inputs / name)
    # The ASD stage alone: the stages after it (each tested in its own folder) are off.
    cfg = load_config(paths={"input_dir": inputs, "data_dir": root / "data", "model_dir": model_dir},
                      speech={"enabled": False}, flame={"enabled": False}, captions={"enabled": False})
    backends = SharedDetectorBackends(cfg, scrfd_detector)
    records, results = {}, {}
    for name, ref in scan(cfg).items():
        faces, *_, asd = run_source(ref, cfg, backends, stages=["asd"])  # the runner writes asd.json
        assert (faces.stage, faces.status, asd.stage, asd.status) == ("faces", "ran", "asd", "ran"), name
        records[name], results[name] = faces.result, asd.result
        assert records[name].status == "accepted", name
        assert StageResult.load(result_path(cfg, ref.source_id, "asd")) == results[name]
    return AsdRun(cfg, records, results, write_shards(list(records.values()), cfg))


def _only(result: StageResult) -> StageDecision:
    (decision,) = result.segments.values()
    return decision


def _speech_bounds(path: Path) -> tuple[float, float]:
    """First and last speech of a clip by silero VAD (its weights ship in the wheel)."""
    import subprocess

    import torch
    from silero_vad import get_speech_timestamps, load_silero_vad

    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1", "-ar",
                          str(SAMPLE_RATE), "-"], capture_output=True, check=True).stdout
    audio = torch.from_numpy(np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768)
    spans = get_speech_timestamps(audio, load_silero_vad(), sampling_rate=SAMPLE_RATE, return_seconds=True)
    return spans[0]["start"], spans[-1]["end"]


def test_each_grid_clip_keeps_its_speech_within_tolerance(run, grid_clips):
    for clip in grid_clips:
        decision = _only(run.results[clip.name])
        assert decision.decision == "accepted", (clip.name, decision.numbers)
        (child,) = decision.children  # the silent lead-in and tail are cut off
        vad_start, vad_end = _speech_bounds(clip)
        print(f"\n{clip.name}: kept {child.start_s:.2f}-{child.end_s:.2f} s, "
              f"speech (VAD) {vad_start:.2f}-{vad_end:.2f} s, mean P {decision.numbers['mean_probability']:.2f}")
        assert abs(child.start_s - vad_start) <= BOUNDARY_TOLERANCE_S
        assert abs(child.end_s - vad_end) <= BOUNDARY_TOLERANCE_S
        probability = np.array(decision.payload["probability"])
        times = (np.arange(len(probability)) + 0.5) / run.cfg.crops.fps
        assert probability[times < 0.5].max() < 0.5 and probability[times > 2.6].max() < 0.5


def test_silent_audio_means_no_active_speaker(run):
    decision = _only(run.results["silent.mp4"])
    assert decision.decision == "rejected" and decision.reason == "no_active_speaker"
    assert decision.numbers["max_probability"] < 0.5
    rows = [json.loads(line) for line in (run.cfg.paths.shards_dir / MANIFEST_FILE).read_text().splitlines()]
    source = next(r for r in rows if r["kind"] == "source" and r["relpath"] == "silent.mp4")
    assert source["status"] == "rejected" and source["reason"] == "no_accepted_segment"
    segment = next(r for r in rows if r["kind"] == "segment" and r["source_id"] == source["source_id"])
    assert segment["reason"] == "no_active_speaker"


@pytest.mark.parametrize("name, speaking_side", [("pair_left_speaks.mp4", 0), ("pair_right_speaks.mp4", 1)])
def test_the_speaking_face_of_two_is_kept(run, name, speaking_side):
    record = run.records[name]
    by_side = sorted(record.segments, key=lambda s: s.numbers["first_box"][0])
    decisions = run.results[name].segments
    speaker, listener = decisions[by_side[speaking_side].key], decisions[by_side[1 - speaking_side].key]
    assert speaker.decision == "accepted"
    assert listener.decision == "rejected"
    assert listener.reason in ("no_active_speaker", "another_face_speaking")
    assert speaker.numbers["mean_probability"] > listener.numbers["mean_probability"]


def _mean_while_speech(decision: StageDecision, audio_source: Path, fps: float) -> float:
    """Mean speaking probability over the frames where the scored audio holds speech (silero VAD):
    a whole-clip mean would reward audio that simply contains more speech."""
    probability = np.array(decision.payload["probability"])
    times = (np.arange(len(probability)) + 0.5) / fps
    start, end = _speech_bounds(audio_source)
    return float(probability[(times >= start) & (times < end)].mean())


def test_a_dubbed_clip_scores_lower_than_with_its_own_audio(run, grid_clips):
    own = _mean_while_speech(_only(run.results[grid_clips[0].name]), grid_clips[0], run.cfg.crops.fps)
    dubbed = _mean_while_speech(_only(run.results["dubbed.mp4"]), grid_clips[1], run.cfg.crops.fps)
    print(f"\nmean P(speaking) while the audio has speech: own audio {own:.3f}, another speaker's {dubbed:.3f}")
    assert dubbed < own


def test_split_clips_reach_the_shards_cut_to_the_kept_frames(run, grid_clips):
    import webdataset as wds

    samples = {s["__key__"]: s for s in wds.WebDataset(
        [str(run.cfg.paths.shards_dir / e["name"]) for e in run.summary.shards], shardshuffle=False)}
    key = _only(run.results[grid_clips[0].name]).children[0].key
    sample = samples[key]
    record = json.loads(sample["json"])
    assert record["parent_key"] + "_a00" == key
    # The packed JSON validates against the sample schema and names the stage runs it came from.
    source = run.records[grid_clips[0].name]
    quality = load_result(run.cfg, source.source_id, "quality")
    assert SampleRecord.load(sample["json"]).stage_fingerprints == {
        "faces": source.fingerprint, "quality": quality.fingerprint, "asd": run.results[grid_clips[0].name].fingerprint}
    assert record["asd"]["mean_probability"] > 0.5 and [f["stage"] for f in record["filters"]] == ["faces", "quality", "asd"]
    mp4 = run.cfg.paths.data_dir / f"{key}.mp4"
    mp4.write_bytes(sample["mp4"])
    info = mf.ffprobe(mp4, "-count_frames")
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    assert (video["width"], video["height"], video["r_frame_rate"]) == (384, 384, "24/1")
    assert int(video["nb_read_frames"]) == record["video"]["frames"] == len(record["asd"]["probability"])
    assert abs(float(info["format"]["duration"]) - record["time_range_s"]["duration"]) <= 1 / 24 + 1e-3
    rows = [json.loads(line) for line in (run.cfg.paths.shards_dir / MANIFEST_FILE).read_text().splitlines()]
    parent = next(r for r in rows if r.get("key") == record["parent_key"])
    assert parent["status"] == "split"

