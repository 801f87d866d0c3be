"""The Dagster code location: definitions, the sensor, and whole-graph materialisation."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import dagster as dg
import pytest
import webdataset as wds

from assets.definitions import ALL_ASSETS, ALL_CHECKS, defs
from assets.demo import run_demo
from assets.partitions import SOURCE_PARTITIONS_NAME
from assets.resources import PipelineSettings
from assets.sources import watch_input_folder
from pipelines.media.wav import read_wav
from tests.graph_runs import private_models


# The weights the default config runs on: SCRFD-500M faces and Light-ASD. Nothing else, so what the
# graph does (e.g. FLAME and captions "model not installed") never depends on what ../shared/models holds.
DEMO_WEIGHTS = ("scrfd/scrfd_500m_kps.onnx", "light-asd/pretrain_AVA_CVPR.model")


@pytest.fixture(scope="module")
def demo_models(tmp_path_factory, model_dir: Path) -> Path:
    """A private model folder: links to just DEMO_WEIGHTS in the shared one."""
    return private_models(tmp_path_factory.mktemp("demo-models"), model_dir, DEMO_WEIGHTS)


def _write_config(tmp_path: Path, input_dir: Path, model_dir: Path, **sections: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps({"paths": {"input_dir": str(input_dir), "data_dir": str(tmp_path / "data"),
                                          "model_dir": str(model_dir)}, **sections}))
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_definitions_list_the_graph():
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {"source_probe", "face_clips", "face_quality", "active_speakers", "speech_analysis", "flame_parameters",
                    "expression_captions", "conversations", "dataset_shards", "annotation_tasks", "human_scores",
                    "judge_scores", "agreement_report"}
    assert {j.name for j in defs.jobs} >= {"process_sources", "build_dataset", "annotation_loop",
                                          "refresh_annotations", "train_job"}
    assert {"watch_input_folder", "new_annotations"} <= {s.name for s in defs.sensors}
    checks = {k.name for k in graph.asset_check_keys}
    assert checks == {"every_source_accounted_for", "shards_open"}


def test_sensor_registers_each_new_video_once(tmp_path, grid_clips, demo_models):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for clip in grid_clips[:2]:
        shutil.copy(clip, inputs / clip.name)
    (inputs / "notes.txt").write_text("not a video")
    settings = PipelineSettings(config_path=str(_write_config(tmp_path, inputs, demo_models)))
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources={"settings": settings})
        result = watch_input_folder(context)
        keys = sorted(r.partition_key for r in result.run_requests)
        assert len(keys) == 2 and all(k.startswith(("bbaf2n-", "brbk7n-")) for k in keys)
        assert result.dynamic_partitions_requests[0].partition_keys == keys
        instance.add_dynamic_partitions(SOURCE_PARTITIONS_NAME, keys)
        again = watch_input_folder(dg.build_sensor_context(instance=instance, resources={"settings": settings}))
        assert not again.run_requests and "no new" in again.skip_reason.skip_message


def test_face_clips_asset_called_directly(tmp_path, grid_clip, demo_models):
    """Assets are thin functions: call them with a built context, no run needed. The stage asset
    returns a small summary (the record is in the work folder) and reports what the runner did."""
    from assets.resources import StageModels
    from assets.sources import source_probe
    from assets.stages import STAGE_ASSETS
    from pipelines.config import load_config
    from pipelines.ingest import SourceRegistry
    from pipelines.registry import stage
    from pipelines.workdir import load_record

    face_clips = next(a for a in STAGE_ASSETS if a.key == dg.AssetKey("face_clips"))
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(grid_clip, inputs / grid_clip.name)
    settings = PipelineSettings(config_path=str(_write_config(tmp_path, inputs, demo_models)))
    config = settings.load()
    (ref,) = SourceRegistry(config.paths.registry_path).scan(inputs, config.ingest.extensions)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(SOURCE_PARTITIONS_NAME, [ref.source_id])
        probed = source_probe(dg.build_asset_context(partition_key=ref.source_id, instance=instance), settings)
        assert probed["rejection"] is None and probed["probe"]["width"] == 360
        runs = [face_clips(dg.build_asset_context(partition_key=ref.source_id, instance=instance),
                           settings=settings, models=StageModels()) for _ in range(2)]
    record = load_record(load_config(settings.config_path), ref.source_id)
    assert record.status == "accepted" and len(record.segments) == 1
    assert record.fingerprint and record.fingerprint != stage("faces").config_fingerprint(config)
    assert [r.value["status"] for r in runs] == ["ran", "unchanged"]
    for output in runs:
        assert output.value == {"stage": "faces", "source_id": ref.source_id, "status": output.value["status"],
                                "fingerprint": record.fingerprint}
        assert output.data_version == dg.DataVersion(record.fingerprint)
        assert output.metadata["run"].value == output.value["status"]
        assert output.metadata["accepted_segments"].value == 1


def _ffprobe(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.slow
def test_whole_graph_on_every_grid_clip_and_rerun_changes_no_shard_byte(tmp_path, grid_clips, demo_models):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for clip in grid_clips:
        shutil.copy(clip, inputs / clip.name)
    (inputs / "broken.mp4").write_text("this is a text file, not a video\n")
    config_path = str(_write_config(tmp_path, inputs, demo_models))
    with dg.instance_for_test() as instance:
        first = run_demo(config_path, instance, log=lambda *_: None)
        assert first["dataset_run_ok"] and not first["failed_runs"]
        assert first["checks"] == {"every_source_accounted_for": True, "shards_open": True}
        stats = first["stats"]
        assert stats["sources"]["total"] == len(grid_clips) + 1
        assert stats["segments"]["accepted"] == len(grid_clips) == 6
        assert stats["sources"]["rejected_by_reason"] == {"not_a_media_file": 1}
        assert stats["accepted_flags"] == {"caption_model_not_installed": 6, "flame_model_not_installed": 6,
                                           "language_unknown": 6}
        # Clips are cut to the speaking frames: about 1.2-1.9 s of each 3 s GRID clip.
        assert 6 < stats["accepted_duration_s"]["total"] < 6 * 2.5
        hashes = {p: _sha(Path(p)) for p in first["shards"]}
        index = (tmp_path / "data" / "shards" / "index.json").read_bytes()

        second = run_demo(config_path, instance, log=lambda *_: None)
        assert {p: _sha(Path(p)) for p in second["shards"]} == hashes
        assert (tmp_path / "data" / "shards" / "index.json").read_bytes() == index

        # Every run is recorded in the instance with its metadata: what the UI shows.
        event = instance.get_latest_materialization_event(dg.AssetKey("dataset_shards"))
        meta = event.asset_materialization.metadata
        assert meta["samples"].value == 6 and "qc_overview" in meta
        assert len(instance.get_dynamic_partitions(SOURCE_PARTITIONS_NAME)) == len(grid_clips) + 1

    # Read the shards back with webdataset's own reader and check each sample's media.
    samples = list(wds.WebDataset(first["shards"], shardshuffle=False))
    assert len(samples) == 6
    for sample in samples:
        record = json.loads(sample["json"])
        mp4 = tmp_path / f"{sample['__key__']}.mp4"
        mp4.write_bytes(sample["mp4"])
        info = _ffprobe(mp4)
        video = next(s for s in info["streams"] if s["codec_type"] == "video")
        audio = next(s for s in info["streams"] if s["codec_type"] == "audio")
        assert (video["width"], video["height"], video["r_frame_rate"]) == (384, 384, "24/1")
        # Active speaker detection cuts each clip to its speaking frames (about 1-2.2 s of 3 s).
        span = record["time_range_s"]
        assert 0 <= span["start"] < span["end"] <= record["source_probe"]["duration_s"] + 1e-6
        assert abs(float(video["duration"]) - span["duration"]) <= 1 / 24 + 1e-6
        assert [f["stage"] for f in record["filters"]] == ["faces", "quality", "asd", "speech", "flame", "captions"]
        # No SHeaP or Qwen-VL weights in the private model folder: the stages ran and say so, the clip is kept.
        assert record["flame"]["status"] == record["captions"]["status"] == "model not installed"
        assert "flame_model_not_installed" in record["flame"]["flags"]
        assert (int(audio["sample_rate"]), audio["channels"]) == (16000, 1)
        samples, rate = read_wav(sample["wav"], name=record["key"])
        assert rate == 16000
        assert abs(len(samples) / 16000 - record["time_range_s"]["duration"]) < 1e-3


def test_every_source_accounted_for_fails_and_names_the_unaccounted_sources(tmp_path, grid_clips, demo_models):
    """One source processed; a second registered but never run; a third only in the input folder.
    The manifest lists the first only, so the check fails and names the other two."""
    from assets.demo import _materialize_in_process
    from assets.sources import register_sources

    inputs = tmp_path / "in"
    inputs.mkdir()
    config_path = str(_write_config(tmp_path, inputs, demo_models, asd={"enabled": False},
                                    speech={"enabled": False}, flame={"enabled": False},
                                    captions={"enabled": False}))
    config = PipelineSettings(config_path=config_path).load()
    with dg.instance_for_test() as instance:
        def arrive(clip: Path, register: bool) -> str:
            shutil.copy(clip, inputs / clip.name)
            _, (new,) = register_sources(config, instance)
            if register:
                instance.add_dynamic_partitions(SOURCE_PARTITIONS_NAME, [new])
            return new

        processed = arrive(grid_clips[0], register=True)
        assert _materialize_in_process(config_path, instance, processed).success
        never_run = arrive(grid_clips[1], register=True)
        unregistered = arrive(grid_clips[2], register=False)
        result = _materialize_in_process(config_path, instance, None)
        assert result.success
        checks = {e.asset_check_key.name: e for e in result.get_asset_check_evaluations()}

    assert checks["shards_open"].passed
    check = checks["every_source_accounted_for"]
    assert not check.passed
    meta = {k: getattr(v, "value", v) for k, v in check.metadata.items()}
    assert meta["missing"] == sorted([never_run, unregistered])
    assert meta["not_registered"] == [unregistered]
    assert (meta["registered"], meta["in_input_folder"], meta["in_manifest"]) == (2, 3, 1)
    rows = [json.loads(line) for line in (tmp_path / "data" / "shards" / "manifest.jsonl").read_text().splitlines()]
    assert [r["source_id"] for r in rows if r["kind"] == "source"] == [processed]


def test_every_asset_and_check_is_in_the_demo_selection():
    """The demo runs every data asset; only the annotation group (it needs a Label Studio) stays out."""
    from assets.annotation import ANNOTATION_ASSETS

    demo = {a.key.to_user_string() for a in ALL_ASSETS}
    annotation = {a.key.to_user_string() for a in ANNOTATION_ASSETS}
    assert not demo & annotation
    assert demo | annotation == {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert len(ALL_CHECKS) == 2


def test_flame_asset_on_a_demo_clip_with_the_scripted_model(tmp_path, grid_clip, model_dir):
    """The flame_parameters asset, called directly, with a SHeaP-shaped scripted model in the model dir."""
    import numpy as np

    from assets.resources import StageModels
    from assets.sources import source_probe
    from assets.stages import STAGE_ASSETS
    from pipelines.fixtures.sheap import build_scripted_sheap
    from pipelines.ingest import SourceRegistry
    from pipelines.runner import load_result

    by_name = {a.key.to_user_string(): a for a in STAGE_ASSETS}
    models = tmp_path / "models"
    build_scripted_sheap(models / "sheap" / "sheap.pt")
    (models / "scrfd").mkdir()
    (models / "scrfd" / "scrfd_500m_kps.onnx").symlink_to(model_dir / "scrfd" / "scrfd_500m_kps.onnx")
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(grid_clip, inputs / grid_clip.name)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(json.dumps({"paths": {"input_dir": str(inputs), "data_dir": str(tmp_path / "data"),
                                                 "model_dir": str(models)},
                                       "asd": {"enabled": False}, "speech": {"enabled": False}}))
    settings = PipelineSettings(config_path=str(config_path))
    config = settings.load()
    (ref,) = SourceRegistry(config.paths.registry_path).scan(inputs, config.ingest.extensions)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(SOURCE_PARTITIONS_NAME, [ref.source_id])
        context = lambda: dg.build_asset_context(partition_key=ref.source_id, instance=instance)  # noqa: E731
        source_probe(context(), settings)
        statuses = {name: by_name[name](context(), settings=settings, models=StageModels()).value["status"]
                    for name in ("face_clips", "face_quality", "active_speakers", "speech_analysis",
                                 "flame_parameters")}
    # ASD and speech are switched off: FLAME decides on the quality stage's verdict on the face segment.
    assert statuses == {"face_clips": "ran", "face_quality": "ran", "active_speakers": "disabled",
                        "speech_analysis": "disabled", "flame_parameters": "ran"}
    result = load_result(config, ref.source_id, "flame")
    (decision,) = result.segments.values()
    assert decision.decision == "accepted" and result.details.get("installed")
    arrays = np.load(config.paths.work_dir / "sources" / ref.source_id / decision.files["flame.npz"])
    assert arrays["smooth/expression"].shape == (72, 100) and arrays["raw/global_rotation"].shape == (72, 3)
