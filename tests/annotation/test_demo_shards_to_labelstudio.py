"""The default annotation source end to end: the demo's own shards (a real Dagster run on GRID clips,
``annotation.versions_dir`` unset) become blinded Label Studio rating tasks on the real server (one
version per sample: no ranking task), and every task's media reaches an annotator as a playable
mp4 of the clip's length."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import urllib.request

import dagster as dg
import graph_runs
import pytest
from labelstudio_server import write_config

from annotation.blinding import load_blinding
from annotation.labelstudio_client import AnnotationClient
from annotation.labelstudio_server import create_annotator_account
from annotation.locations import blinding_file, server_token, server_url
from annotation.versions import SHARDS_VERSION, collect_versions
from assets.annotation import annotation_tasks
from assets.resources import PipelineSettings
from pipelines.schema.index import ShardIndex
from pipelines.shards import verify_shards

pytestmark = pytest.mark.slow

FPS = 24


def _metadata(result: dg.MaterializeResult, key: str):
    value = result.metadata[key]
    return getattr(value, "value", value)


def _shard_members(index: ShardIndex) -> dict[str, dict]:
    """Per sample key: its mp4 bytes and its sample record, read from the shard the index names."""
    out = {}
    for name, path in zip(index.names, index.paths()):
        with tarfile.open(path) as tar:
            for key in index.keys_in(name):
                out[key] = {"mp4": tar.extractfile(f"{key}.mp4").read(),
                            "record": json.loads(tar.extractfile(f"{key}.json").read())}
    return out


def _decoded(mp4: bytes) -> tuple[int, float, tuple[int, int]]:
    """(video frames decoded, container duration in s, frame size) of mp4 bytes, decoded with PyAV."""
    import av

    with av.open(io.BytesIO(mp4)) as container:
        stream = container.streams.video[0]
        frames = [frame for frame in container.decode(stream)]
        duration = container.duration / av.time_base
    return len(frames), duration, (frames[0].width, frames[0].height)


def test_demo_shards_become_tasks_whose_media_play(ls, tmp_path, tmp_path_factory, grid_dir, model_dir):
    demo_shards = graph_runs.reference_run(tmp_path_factory, grid_dir, model_dir)
    # The server's media root is <data>/annotation/media: the shards go where that config reads them.
    shards = ls["data"] / "shards"
    shutil.copytree(demo_shards, shards, ignore=shutil.ignore_patterns(".*"))
    assert verify_shards(shards) == []
    index = ShardIndex.load(shards)
    members = _shard_members(index)
    assert sorted(members) == sorted(index.samples) and len(members) == len(graph_runs.CLIPS)

    config_path = write_config(tmp_path / "config.yaml", ls["data"], ls["port"], None, "demo-shards")
    settings = PipelineSettings(config_path=str(config_path))
    config = settings.load()
    assert config.annotation.versions_dir is None and config.paths.shards_dir == shards

    pushed = annotation_tasks(dg.build_asset_context(), settings)
    assert _metadata(pushed, "source") == "shards"
    assert _metadata(pushed, "rating_added") == len(members) and _metadata(pushed, "rating_tasks") == len(members)
    assert "ranking_project_id" not in pushed.metadata  # nothing to rank with one version per sample
    again = annotation_tasks(dg.build_asset_context(), settings)
    assert _metadata(again, "rating_added") == 0 and _metadata(again, "rating_tasks") == len(members)

    # Each version carries the speech stage's transcript from its sample record (the judges' context).
    transcripts = {c.sample: c.transcript for c in collect_versions(config)}
    assert transcripts == {key: m["record"]["speech"]["transcript"] or None for key, m in members.items()}
    assert all(transcripts.values())  # GRID sentences are English: pocketsphinx hears words

    url = server_url(config.annotation)
    admin = AnnotationClient(url, server_token(config))
    project_id = _metadata(pushed, "rating_project_id")
    blinding = load_blinding(blinding_file(config), config.annotation.seed)
    tasks = admin.tasks(project_id)
    assert sorted(blinding.clips[t.data["clip"]] for t in tasks) == sorted((key, SHARDS_VERSION) for key in members)

    token = create_annotator_account(url, "shard-rater@example.com", "pw-shard-rater-0123456789")
    for task in tasks:
        key, _ = blinding.clips[task.data["clip"]]
        assert key not in task.data["video"]
        request = urllib.request.Request(url + task.data["video"], headers={"Authorization": f"Token {token}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 200 and response.headers["Content-Type"] == "video/mp4"
            body = response.read()
        assert body == members[key]["mp4"]  # the clip in the shard, byte for byte
        frames, duration, size = _decoded(body)
        expected = members[key]["record"]["time_range_s"]["duration"]
        assert size == (384, 384)
        assert abs(frames / FPS - expected) <= 1 / FPS + 1e-6, (key, frames, expected)
        assert abs(duration - expected) <= 2 / FPS, (key, duration, expected)
