"""The FLAME stage on real clips: a traced stand-in with the published SHeaP interface runs the
real loading, crop, batching, smoothing and storage code; the npz holds exactly its outputs under
our group names; a stand-in with the names this project used to read is rejected; without weights
the stage says so and keeps the clip."""

from __future__ import annotations

import hashlib
import io
import json
import shutil

import numpy as np
import pytest
import torch

from pipelines.config import load_config
import pipelines.fixtures.media as mf
from pipelines.fixtures.sheap import OLD_PROJECT_NAMES, build_scripted_sheap
from pipelines.flame.groups import MOTION_GROUPS, group_dims
from pipelines.flame.sheap import SheapBackend, SheapOutputError
from pipelines.flame.stage import build_backend, head_crops, run as run_flame
from pipelines.runner import decided_record, run_source, run_stage
from pipelines.schema.records import ACCEPTED
from pipelines.shards import write_shards
from pipelines.stage_spec import StageContext
from pipelines.workdir import source_dir
from stage_fixtures import SharedDetectorBackends, scan


def _candidates(cfg, record):
    """The segments the FLAME stage decides on: accepted after the stages it needs."""
    return tuple(s for s in decided_record(cfg, record, upto="flame").segments if s.status == ACCEPTED)


def _config(root, inputs, models):
    # FLAME alone: the other later stages are off (each has its own tests).
    return load_config(paths={"input_dir": inputs, "data_dir": root / "data", "model_dir": models},
                       asd={"enabled": False}, speech={"enabled": False}, captions={"enabled": False})


@pytest.fixture(scope="module")
def flame_run(tmp_path_factory, grid_clips, scrfd_detector):
    root = tmp_path_factory.mktemp("flame-stage")
    models = root / "models"
    build_scripted_sheap(models / "sheap" / "sheap.pt")
    inputs = root / "input"
    inputs.mkdir()
    for clip in grid_clips[:2]:
        shutil.copyfile(clip, inputs / clip.name)
    cfg = _config(root, inputs, models)
    assert build_backend(cfg) is not None
    backends = SharedDetectorBackends(cfg, scrfd_detector)
    backend = backends.get("flame")
    refs = list(scan(cfg).values())
    records, results = [], []
    for ref in refs:
        outcomes = run_source(ref, cfg, backends, stages=["flame"])
        assert [(o.stage, o.status) for o in outcomes] == [
            ("faces", "ran"), ("quality", "ran"), ("asd", "disabled"), ("speech", "disabled"), ("flame", "ran")]
        records.append(outcomes[0].result)
        results.append(outcomes[-1].result)
    return cfg, refs, records, results, write_shards(records, cfg), backend


def test_shards_hold_flame_arrays_with_the_mp4s_frame_count(flame_run, tmp_path):
    import webdataset as wds

    cfg, _, _, _, summary, _ = flame_run
    samples = list(wds.WebDataset([str(cfg.paths.shards_dir / e["name"]) for e in summary.shards], shardshuffle=False))
    assert len(samples) == 2
    for sample in samples:
        mp4 = tmp_path / "clip.mp4"
        mp4.write_bytes(sample["mp4"])
        frames = int(next(s for s in mf.ffprobe(mp4, "-count_frames")["streams"]
                          if s["codec_type"] == "video")["nb_read_frames"])
        arrays = np.load(io.BytesIO(sample["flame.npz"]))
        for group in MOTION_GROUPS:
            for kind in ("raw", "smooth"):
                array = arrays[f"{kind}/{group}"]
                assert array.shape == (frames, group_dims(group)) and array.dtype == np.float32
                assert np.isfinite(array).all()
        assert arrays["meta/shape"].shape == (300,)
        record = json.loads(sample["json"])
        assert record["flame"]["status"] == "ok" and record["flame"]["frames"] == frames
        assert [f["stage"] for f in record["filters"]] == ["faces", "quality", "flame"]
        # The orientation label now comes from the fitted head, frame by frame.
        orientation = record["flame"]["orientation"]
        assert orientation["source"] == "flame_global_rotation" and len(orientation["yaw_deg"]) == frames
        assert sum(orientation["labels"].values()) == frames


def test_smoothing_reduces_frame_to_frame_jitter(flame_run):
    cfg, refs, _, results, _, _ = flame_run
    (key, decision), = results[0].segments.items()
    arrays = np.load(source_dir(cfg, refs[0].source_id) / decision.files["flame.npz"])
    raw, smooth = arrays["raw/expression"], arrays["smooth/expression"]
    assert np.abs(np.diff(smooth, axis=0)).mean() < np.abs(np.diff(raw, axis=0)).mean()


def test_rerun_gives_identical_arrays(flame_run):
    cfg, refs, records, results, _, _ = flame_run
    name = next(iter(results[0].segments.values())).files["flame.npz"]
    path = source_dir(cfg, refs[0].source_id) / name
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    backends = SharedDetectorBackends(cfg, None)  # the face stage is current: no detector needed
    assert run_stage("flame", refs[0], cfg, backends).status == "unchanged"
    again = run_stage("flame", refs[0], cfg, backends, force=True)
    assert again.status == "ran" and again.result == results[0]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_npz_holds_the_published_outputs_under_our_group_names(flame_run):
    """The stand-in run by hand on the stage's own head crops, mapped with the release's names
    (sheap/tiny_flame.py pose_components_to_rotmats: torso = global rotation), equals the npz."""
    cfg, refs, records, results, _, backend = flame_run
    for ref, record, result in zip(refs, records, results):
        folder = source_dir(cfg, ref.source_id)
        (key, decision), = result.segments.items()
        segment = next(s for s in _candidates(cfg, record) if s.key == key)
        crops = np.stack(list(head_crops(folder, segment, cfg)))
        module = torch.jit.load(str(backend.model_path))
        with torch.no_grad():
            out = {k: v.numpy() for k, v in module(torch.from_numpy(crops.transpose(0, 3, 1, 2).copy()) / 255.0).items()}
        arrays = np.load(folder / decision.files["flame.npz"])
        expected = {"raw/expression": out["expr"], "raw/jaw": out["jaw_pose"], "raw/neck": out["neck_pose"],
                    "raw/eyelids": out["eyelids"], "raw/global_rotation": out["torso_pose"],
                    "raw/eye_pose": np.hstack([out["eye_l_pose"], out["eye_r_pose"]]),
                    "meta/shape": out["shape_from_facenet"].mean(axis=0), "meta/cam_trans": out["cam_trans"]}
        assert set(arrays.files) == set(expected) | {f"smooth/{g}" for g in MOTION_GROUPS}
        for name, value in expected.items():
            np.testing.assert_allclose(arrays[name], value, rtol=1e-5, atol=1e-5, err_msg=name)
        assert len(crops) == decision.numbers["frames"]


def test_a_standin_with_the_old_names_is_rejected(flame_run, tmp_path):
    cfg, refs, records, _, _, _ = flame_run
    old = SheapBackend(build_scripted_sheap(tmp_path / "old.pt", rename=OLD_PROJECT_NAMES))
    with pytest.raises(SheapOutputError) as err:
        run_flame(StageContext(refs[1], cfg, old, source_dir(cfg, refs[1].source_id), "", records[1],
                               _candidates(cfg, records[1])))
    message = str(err.value)
    assert str(tmp_path / "old.pt") in message
    assert all(f"'{name}'" in message for name in OLD_PROJECT_NAMES)


def test_without_weights_clips_are_kept_and_flagged(tmp_path, grid_clip, scrfd_detector):
    inputs = tmp_path / "input"
    inputs.mkdir()
    shutil.copyfile(grid_clip, inputs / grid_clip.name)
    models = tmp_path / "models"  # a private model folder without SHeaP, whatever ../shared holds
    models.mkdir()
    cfg = _config(tmp_path, inputs, models)
    assert build_backend(cfg) is None
    (ref,) = scan(cfg).values()
    record, *_, flame = (o.result for o in run_source(ref, cfg, SharedDetectorBackends(cfg, scrfd_detector),
                                                      stages=["flame"]))
    assert flame.details["installed"] is False
    (decision,) = flame.segments.values()
    assert decision.decision == "accepted" and decision.flags == ["flame_model_not_installed"]
    assert "sheap/sheap.pt" in decision.payload["detail"] and "sheap/model_expressive.pt" in decision.payload["detail"]
    summary = write_shards([record], cfg)
    assert len(summary.index) == 1
