"""Smoke test of bench/bench_scale.py and its scale_*.py modules on one real GRID clip at 1x, so the
benchmark does not rot.

It runs the benchmark's own functions (every stage with the real face/ASD/speech weights and
the tiny FLAME/caption stand-ins, the ffmpeg floor, the shard read, one stage in a child
process for the memory figures) and checks the JSON's structure and that every figure is
positive and finite. It never asserts a timing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.bench_scale import bench_scale
from bench.scale_corpus import make_base_source, prepare_model_dir
from bench.scale_measure import run_stage_in_child
from bench.scale_report import build_payload, markdown, memory_summary
from bench.scale_stages import STAGES
from pipelines.config import load_config
from pipelines.media.decode import probe

pytestmark = pytest.mark.slow


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def one_clip_run(tmp_path_factory, grid_clip: Path, model_dir: Path, scrfd_model: Path):
    work = tmp_path_factory.mktemp("bench-scale")
    models, used = prepare_model_dir(model_dir, work)
    config = load_config(paths={"model_dir": models})
    base = make_base_source([grid_clip], work / "base.mp4")
    run = bench_scale(1, base, config, work / "x1", in_process=True)
    return work, config, used, base, run


def test_every_stage_has_positive_finite_figures(one_clip_run):
    _, _, _, base, run = one_clip_run
    assert list(run["stages"]) == list(STAGES)
    assert run["source"]["duration_s"] == pytest.approx(probe(base).duration_s)
    for stage, result in run["stages"].items():
        assert result["model_installed"], stage
        for key in ("wall_s", "rtf", "load_s"):
            assert _positive(result[key]), (stage, key, result[key])
        assert 0 <= result["model_s"] <= result["wall_s"], stage
        assert math.isfinite(result["non_model_s"])
    for stage in ("face_clips", "asd", "speech", "flame", "captions"):
        assert run["stages"][stage]["model_calls"] > 0, stage
    face = run["stages"]["face_clips"]
    assert face["statuses"] == ["accepted"] and face["output_frames"] > 0
    assert run["totals"]["decodes_per_source"] == 1  # the face stage decodes the source once, later stages never
    assert run["totals"]["stages"] == list(STAGES)
    assert all(_positive(run["floor"][k]) for k in ("decode_only_s", "crop_encode_floor_s", "frames"))
    assert all(_positive(v) for v in run["non_model_over_floor"].values())


def test_shard_read_compares_the_loader_with_a_raw_read(one_clip_run):
    _, _, _, _, run = one_clip_run
    read = run["shard_read"]
    assert read["samples"] == run["stages"]["shards"]["samples"] >= 1
    assert read["bytes"] == run["stages"]["shards"]["bytes"]
    assert read["loader"]
    for key in ("raw_bytes_per_s", "loader_bytes_per_s", "raw_samples_per_s", "loader_samples_per_s",
                "loader_over_raw"):
        assert _positive(read[key]), key
    assert _positive(read["decode_all_members"]["over_raw"])


def test_child_process_reports_peak_memory_and_the_payload_is_json(one_clip_run):
    work, config, used, base, run = one_clip_run
    child = run_stage_in_child("shards", work / "x1" / "config.yaml", work / "shards.result.json")
    assert child["samples"] == run["stages"]["shards"]["samples"]
    for key in ("peak_mib", "peak_process_rss_mib", "peak_tree_rss_mib", "process_s"):
        assert _positive(child[key]), key
    assert child["peak_mib"] >= child["peak_process_rss_mib"]

    # Two scales with the same child figures: flat by definition of the ratio.
    memory = memory_summary({"1": {"stages": {"shards": child}}, "4": {"stages": {"shards": child}}})
    assert memory["ratio_4x_over_1x"] == pytest.approx(1.0) and memory["flat"] is True
    assert memory["growing_stages"] == []

    payload = build_payload({"1": run}, config, used, [base], base, {"durations": [1]})
    decoded = json.loads(json.dumps(payload))
    for key in ("cores", "cpu_model", "python", "torch", "date"):
        assert decoded["machine"][key], key
    assert decoded["invocations"][0]["loadavg_end"] and decoded["runs"]["1"]["stages"]
    assert set(decoded["models"]) >= {"faces", "asd", "speech", "flame", "captions"}
    table = markdown(decoded)
    assert all(f"| {stage} |" in table for stage in STAGES)


def test_scale_parts_times_the_asd_and_speech_parts(one_clip_run):
    """bench/scale_parts.py on the same folder: every part it names exists in the stages' code (a
    renamed function would silently drop out of the table), and the timers come off afterwards."""
    from bench.bench_scale import scale_config
    from bench.scale_parts import PARTS, profile_stage
    from pipelines.asd.model import LightASD

    work, config, *_ = one_clip_run
    cfg = scale_config(config, work / "x1")
    visual = LightASD.encode_visual
    for stage in ("asd", "speech"):
        result = profile_stage(stage, cfg, repeat=1, warmup=False)
        assert set(result["parts"]) == {"stage", *(part.label for part in PARTS[stage])}, stage
        assert result["parts"]["stage"]["calls"] == 1
        for label, part in result["parts"].items():
            assert math.isfinite(part["cpu_s"]) and part["wall_s"] >= 0, (stage, label)
    parts = result["parts"]
    assert parts["Whisper encoder pass"]["calls"] == parts["language from encoder output"]["calls"] >= 1
    assert LightASD.encode_visual is visual
