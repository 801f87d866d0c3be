"""index.json read back through ShardIndex: the packer's own output, locally and from an fsspec URL,
and clear errors for a missing index, a foreign layout and a listed shard that is gone."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from pathlib import Path

import fsspec
import pytest
from training_fixtures import flame_shards_fixture  # noqa: F401

from pipelines.schema.index import (
    INDEX_FILE,
    MissingShardIndexError,
    ShardIndex,
    ShardIndexError,
)


def _copy(shards: Path, folder: Path) -> Path:
    shutil.copytree(shards, folder, ignore=shutil.ignore_patterns(".*"))
    return folder


def test_the_written_index_reads_back_with_every_helper(flame_shards):
    index = ShardIndex.load(flame_shards)
    assert index.to_json() == (flame_shards / INDEX_FILE).read_text()  # the writer's bytes, one shape
    assert index.root == str(flame_shards) and not index.remote
    assert index.paths() == [flame_shards / name for name in index.names]
    assert index.locations() == [str(p) for p in index.paths()]
    assert len(index.samples) == 3
    for entry, path in zip(index.shards, index.paths()):
        assert index.sha256(entry.name) == hashlib.sha256(path.read_bytes()).hexdigest()
        assert entry.bytes == path.stat().st_size
        with tarfile.open(path) as tar:
            keys = sorted({m.name.partition(".")[0] for m in tar.getmembers()})
        assert index.keys_in(entry.name) == keys and entry.samples == len(keys)
    with pytest.raises(KeyError, match="not a shard of this index"):
        index.keys_in("shard-999999.tar")


def test_published_index_gives_urls(flame_shards):
    url = "memory://shard-index-test/published"
    fs = fsspec.filesystem("memory")
    for path in [*ShardIndex.load(flame_shards).paths(), flame_shards / INDEX_FILE]:
        fs.pipe_file(f"/shard-index-test/published/{path.name}", path.read_bytes())
    index = ShardIndex.load(url + "/")
    assert index.remote and index.locations() == [f"{url}/{name}" for name in index.names]
    assert index.model_dump() == ShardIndex.load(flame_shards).model_dump()
    with pytest.raises(ShardIndexError, match="is a URL"):
        index.paths()
    fs.rm(f"/shard-index-test/published/{index.names[0]}")
    with pytest.raises(ShardIndexError, match=f"lists shards that are not in {url}: \\['{index.names[0]}'\\]"):
        ShardIndex.load(url)
    with pytest.raises(MissingShardIndexError, match="memory://shard-index-test/nothing/index.json"):
        ShardIndex.load("memory://shard-index-test/nothing")


def test_missing_index_foreign_layouts_and_missing_shards_are_named(tmp_path, flame_shards):
    with pytest.raises(MissingShardIndexError, match=f"{tmp_path}/index.json does not exist"):
        ShardIndex.load(tmp_path)
    folder = _copy(flame_shards, tmp_path / "shards")
    written = json.loads((folder / INDEX_FILE).read_text())
    name = written["shards"][0]["name"]

    cases = {
        "not JSON": "{",
        "holds a list, not the index object": json.dumps([name]),
        "config_hash: Field required": json.dumps({name: "sha"}),  # shard -> sha256 at the top level
        "shards.0.sha256: String should match pattern": json.dumps(
            {**written, "shards": [{**written["shards"][0], "sha256": "sha"}]}),
        "samples point at shards the index does not list: \\['shard-000009.tar'\\]": json.dumps(
            {**written, "samples": {**written["samples"], "extra_s000": "shard-000009.tar"}}),
        "shards listed twice": json.dumps({**written, "shards": written["shards"] * 2}),
        "extra: Extra inputs are not permitted": json.dumps({**written, "extra": 1}),
    }
    for message, text in cases.items():
        (folder / INDEX_FILE).write_text(text)
        with pytest.raises(ShardIndexError, match=message):
            ShardIndex.load(folder)

    (folder / INDEX_FILE).write_text(json.dumps(written))
    (folder / name).unlink()
    with pytest.raises(ShardIndexError, match=f"lists shards that are not in {folder}: \\['{name}'\\]"):
        ShardIndex.load(folder)
    assert ShardIndex.load(folder, check_shards=False).names == [name]  # verify_shards reports it itself
