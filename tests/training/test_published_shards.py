"""Shards published to an object-store URL (fsspec's in-memory store here) train like local ones."""

from __future__ import annotations

import fsspec
import numpy as np
import pytest
from training_fixtures import flame_shards_fixture, tiny_config  # noqa: F401

import pipelines.publish as publish
from training.config import load_run_config
from training.data import finite_clips, shard_urls


def test_publish_sends_index_last_then_the_loader_reads_the_url(tmp_path, flame_shards, monkeypatch):
    url = "memory://published-test/shards"
    order = []
    put = publish._put
    monkeypatch.setattr(publish, "_put", lambda fs, local, remote: (order.append(remote.rsplit("/", 1)[1]),
                                                                    put(fs, local, remote)))
    sent = publish.publish_shards(flame_shards, url)
    assert sent.uploaded and not sent.unchanged and not sent.deleted
    assert order[-1] == "index.json" and set(sent.uploaded) < set(order[:-1])
    again = publish.publish_shards(flame_shards, url)  # unchanged shards are not sent twice
    assert again.uploaded == [] and again.unchanged == sent.uploaded

    remote = shard_urls(url)
    assert remote == [f"{url}/{name}" for name in sent.uploaded]
    fs = fsspec.filesystem("memory")
    for name in sent.uploaded:
        assert fs.cat(f"/published-test/shards/{name}") == (flame_shards / name).read_bytes()

    config = load_run_config(None, **tiny_config("vae", tmp_path / "run", flame_shards)).data
    local = {c.key: c for c in finite_clips(str(flame_shards), config, per_node=False)}
    published = {c.key: c for c in finite_clips(url, config, per_node=False)}
    assert sorted(published) == sorted(local) and local
    for key, clip in local.items():
        np.testing.assert_array_equal(published[key].motion, clip.motion)
        np.testing.assert_array_equal(published[key].audio, clip.audio)


def test_publish_needs_an_index(tmp_path):
    with pytest.raises(FileNotFoundError, match="index.json"):
        publish.publish_shards(tmp_path, "memory://nothing/here")
