"""The quality stage end to end: GRID clips composed with ffmpeg, the real face stage (SCRFD),
then the quality gates, run by the runner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import pipelines.fixtures.media as mf
from pipelines.runner import run_source
from pipelines.schema.records import StageDecision, StageResult
from stage_fixtures import SharedDetectorBackends, scan, stage_config

# bench/measure_face_quality.py: GRID faces as recorded measure 82-183 (median 139), after
# gblur sigma 2 14-31, sigma 8 5-9; 40 is the recommended default.
MIN_SHARPNESS = 40.0
PROFILE_FROM_S = 1.5


def _filtered(clip: Path, vf: str, out: Path) -> Path:
    mf.run_ffmpeg(["-i", str(clip), "-vf", vf, "-c:v", "libx264", "-crf", "14", "-c:a", "aac", str(out)])
    return out


def _sidecar(ranges) -> str:
    return json.dumps({"format": "talkinghead.face_directions/1", "ranges": ranges})


@pytest.fixture(scope="module")
def results(tmp_path_factory, composed, grid_clips, model_dir, scrfd_detector) -> dict[str, StageResult]:
    root = tmp_path_factory.mktemp("quality-stage")
    inputs = root / "input"
    inputs.mkdir()
    clip = grid_clips[0]
    sources = {
        "sharp.mp4": composed.get("q_sharp.mp4", mf.to_mp4, clip),
        # ~40 px face in a 1280x720 frame: the crop is enlarged ~6x to 384 px.
        "small.mp4": composed.get("q_small.mp4", _filtered, clip,
                                  "scale=iw*0.35:-2:flags=area,pad=1280:720:(ow-iw)/2:(oh-ih)/2"),
        "blurred.mp4": composed.get("q_blur.mp4", _filtered, clip, "gblur=sigma=8"),
        "half_blurred.mp4": composed.get("q_half_blur.mp4", _filtered, clip, "gblur=sigma=8:enable='gte(t,1.5)'"),
    }
    # Other speakers: the registry keeps one source per content hash.
    sources["profile_tail.mp4"] = composed.get("q_sharp1.mp4", mf.to_mp4, grid_clips[1])
    sources["bad_sidecar.mp4"] = composed.get("q_sharp2.mp4", mf.to_mp4, grid_clips[2])
    for name, path in sources.items():
        shutil.copyfile(path, inputs / name)
    (inputs / "profile_tail.directions.json").write_text(_sidecar([
        {"start_s": 0.0, "end_s": PROFILE_FROM_S, "label": "frontal"},
        {"start_s": PROFILE_FROM_S, "end_s": 10.0, "label": "profile"}]))
    (inputs / "bad_sidecar.directions.json").write_text(_sidecar([{"start_s": 0, "end_s": 1, "label": "sideways"}]))
    cfg = stage_config(root, model_dir, inputs, quality={"min_sharpness": MIN_SHARPNESS})
    flag_cfg = stage_config(root / "flag", model_dir, inputs, quality={"min_sharpness": MIN_SHARPNESS,
                                                                        "size_policy": "flag"})
    out = {}
    for config, suffix in ((cfg, ""), (flag_cfg, ":flag")):
        backends = SharedDetectorBackends(config, scrfd_detector)
        for name, ref in scan(config).items():
            if suffix and name != "small.mp4":
                continue
            faces, quality = run_source(ref, config, backends, stages=["quality"])
            assert (faces.stage, quality.stage, faces.result.status) == ("faces", "quality", "accepted"), name
            out[name + suffix] = quality.result
    return out


def _only(result: StageResult) -> StageDecision:
    (decision,) = result.segments.values()
    return decision


def test_a_sharp_frontal_grid_face_passes_whole(results):
    d = _only(results["sharp.mp4"])
    assert d.decision == "accepted" and not d.children and not d.flags
    assert d.numbers["orientation"] == "frontal" and d.numbers["orientation_source"] == "keypoints"
    assert d.numbers["upscale_median"] < 4.0 and d.numbers["sharpness_median"] > MIN_SHARPNESS
    assert d.numbers["dropped_s"] == 0 and all(v == 0 for v in d.numbers["failed_s"].values())


def test_a_small_face_is_rejected_with_its_upscale(results):
    d = _only(results["small.mp4"])
    assert (d.decision, d.reason) == ("rejected", "face_too_small")
    assert d.numbers["upscale_median"] > d.numbers["max_upscale"] == 4.0
    assert d.numbers["upscale_max"] >= d.numbers["upscale_median"]
    assert d.numbers["failed_s"]["face_too_small"] > 2.0


def test_a_small_face_is_only_flagged_under_the_flag_policy(results):
    d = _only(results["small.mp4:flag"])
    assert d.decision == "accepted" and d.flags == ["face_small"] and d.numbers["upscale_median"] > 4.0


def test_a_blurred_face_is_rejected(results):
    d = _only(results["blurred.mp4"])
    assert (d.decision, d.reason) == ("rejected", "face_blurry")
    assert d.numbers["sharpness_median"] < d.numbers["min_sharpness"] == MIN_SHARPNESS


def test_a_clip_blurred_in_its_second_half_keeps_its_sharp_part(results):
    d = _only(results["half_blurred.mp4"])
    (child,) = d.children
    assert d.decision == "accepted" and child.key.endswith("_q00")
    assert child.start_s < 0.3 and abs(child.end_s - 1.5) < 0.3
    assert d.numbers["failed_s"]["face_blurry"] > 1.0 and child.numbers["sharpness_median"] > MIN_SHARPNESS


def test_the_sidecar_overrides_the_estimate(results):
    d = _only(results["profile_tail.mp4"])
    (child,) = d.children
    assert abs(child.end_s - PROFILE_FROM_S) < 0.1
    assert d.numbers["orientation_source"] == "sidecar" and child.numbers["orientation"] == "frontal"
    labels = d.payload["frame_orientation"]
    assert labels[-1] == "profile" and labels[0] == "frontal"
    assert d.numbers["failed_s"]["head_orientation"] > 1.0


def test_a_bad_sidecar_rejects_with_an_error_naming_it(results):
    result = results["bad_sidecar.mp4"]
    d = _only(result)
    assert (d.decision, d.reason) == ("rejected", "direction_sidecar_invalid")
    assert d.payload["error"].startswith("bad_sidecar.directions.json: ranges.0.label")
    assert result.details["sidecar_error"] == d.payload["error"]

