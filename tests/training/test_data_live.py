"""Retired samples: with shards read through an index, only the samples it lists in the shard
they are read from are yielded; without an index (a glob, a single tar) nothing is filtered."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from collections import defaultdict

from training_fixtures import flame_shards_fixture, tiny_config  # noqa: F401

from pipelines.schema.index import INDEX_FILE, ShardIndex
from training.config import load_run_config
from training.data import batches, eval_pipeline, finite_clips, shard_source, train_pipeline
from training.stats import compute_stats


def _data_config(tmp_path, shards, **data):
    return load_run_config(None, **tiny_config("vae", tmp_path / "run", shards, data=data)).data


def _keys(shards) -> list[str]:
    return sorted(ShardIndex.load(shards).samples)


def _one_sample_per_shard(shards, folder):
    """The pipeline's samples repacked one per tar (members byte for byte) with their index."""
    members = defaultdict(dict)
    for path in ShardIndex.load(shards).paths():
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                key, suffix = member.name.split(".", 1)
                members[key][suffix] = tar.extractfile(member).read()
    folder.mkdir()
    index = ShardIndex.load(shards)
    template = index.shards[0]  # the packer's entry, renamed and re-counted per tar (other fields kept)
    entries, samples = [], {}
    for number, (key, parts) in enumerate(sorted(members.items())):
        name = f"shard-{number:06d}.tar"
        with tarfile.open(folder / name, "w") as tar:
            for suffix, data in parts.items():
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        blob = (folder / name).read_bytes()
        entries.append(template.model_copy(update={"name": name, "samples": 1, "bytes": len(blob),
                                                   "sha256": hashlib.sha256(blob).hexdigest()}))
        samples[key] = name
    update = {"shards": tuple(entries), "samples": samples}
    if "next_shard" in ShardIndex.model_fields:
        update["next_shard"] = len(entries)
    index.model_copy(update=update).write(folder)
    ShardIndex.load(folder)  # what was written is a valid index
    return folder


def _rewrite_samples(folder, samples: dict[str, str]) -> None:
    index = ShardIndex.load(folder)
    index.model_copy(update={"samples": samples}).write(folder)


def test_a_key_removed_from_the_index_is_never_yielded(tmp_path, flame_shards):
    folder = tmp_path / "shards"
    shutil.copytree(flame_shards, folder)
    keys = _keys(folder)
    assert len(keys) == 3
    retired = keys[1]
    index = ShardIndex.load(folder)
    _rewrite_samples(folder, {k: v for k, v in index.samples.items() if k != retired})
    assert retired not in json.loads((folder / INDEX_FILE).read_text())["samples"]

    config = _data_config(tmp_path, folder, batch_size=4)
    eval_keys = [k for b in batches(eval_pipeline(str(folder), config), config, keep_last=True) for k in b["key"]]
    assert sorted(eval_keys) == sorted(set(keys) - {retired})
    train_keys = {k for _, b in zip(range(12), batches(train_pipeline(config, seed=0), config)) for k in b["key"]}
    assert train_keys == set(keys) - {retired}  # 48 windows of the two live clips; the retired one never
    assert compute_stats(config).frames == 2 * 72

    # The same tar read as a glob (no index): every sample is there.
    tars = str(folder / "*.tar")
    assert shard_source(tars).live is None
    clips = sorted(c.key for c in finite_clips(tars, _data_config(tmp_path, tars), per_node=False))
    assert clips == keys


def test_a_key_the_index_moved_to_another_shard_is_retired_in_the_old_one(tmp_path, flame_shards):
    folder = _one_sample_per_shard(flame_shards, tmp_path / "split")
    index = ShardIndex.load(folder)
    keys = sorted(index.samples)
    moved = keys[0]  # stored in shard-000000.tar; the index now says it lives in shard-000002.tar
    _rewrite_samples(folder, {**index.samples, moved: "shard-000002.tar"})

    config = _data_config(tmp_path, folder)
    clips = sorted(c.key for c in finite_clips(str(folder), config, per_node=False))
    assert clips == keys[1:]
    every = sorted(c.key for c in finite_clips(str(folder / "shard-*.tar"), config, per_node=False))
    assert every == keys


def test_published_shards_filter_by_their_index(tmp_path, flame_shards):
    import pipelines.publish as publish

    folder = tmp_path / "shards"
    shutil.copytree(flame_shards, folder)
    keys = _keys(folder)
    index = ShardIndex.load(folder)
    _rewrite_samples(folder, {k: v for k, v in index.samples.items() if k != keys[2]})
    url = "memory://live-test/shards"
    publish.publish_shards(folder, url)
    assert shard_source(url).live is not None
    config = _data_config(tmp_path, folder)
    assert sorted(c.key for c in finite_clips(url, config, per_node=False)) == keys[:2]
