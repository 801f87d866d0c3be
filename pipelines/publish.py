"""Copy finished shards to object storage (or any fsspec URL) so training jobs elsewhere read them.

Object stores have atomic single-object puts but no rename, so the order carries the
guarantee that local renames give: every shard goes up first (skipped when the remote copy
has the same size), then ``stats.json`` and ``manifest.jsonl``, and ``index.json`` last. A
reader that starts from ``<url>/index.json`` therefore only ever sees complete shards.
Credentials come from the usual environment of the fsspec backend (e.g. s3fs reads
``AWS_*``); install the backend for your store (``s3fs``, ``gcsfs``, ``adlfs``).
"""

from __future__ import annotations

from pathlib import Path

from pipelines.schema.index import INDEX_FILE, MissingShardIndexError, ShardIndex, shards_lock
from pipelines.schema.manifest import MANIFEST_FILE, STATS_FILE

CHUNK_BYTES = 8 << 20


def _put(fs, local: Path, remote: str) -> None:
    with open(local, "rb") as src, fs.open(remote, "wb") as dst:
        while chunk := src.read(CHUNK_BYTES):
            dst.write(chunk)


def publish_shards(shards_dir: Path, url: str) -> dict:
    """Upload the shards listed in ``shards_dir/index.json`` to ``url``; returns what was sent.

    Raises :class:`~pipelines.schema.index.MissingShardIndexError` when there is nothing to
    publish, :class:`~pipelines.schema.index.ShardIndexError` when a listed shard is absent.
    """
    import fsspec

    shards_dir = Path(shards_dir)
    if not shards_dir.is_dir():
        raise MissingShardIndexError(f"nothing to publish: the shard folder {shards_dir} does not exist")
    fs, root = fsspec.core.url_to_fs(url.rstrip("/"))
    with shards_lock(shards_dir, shared=True):  # the index and the shards it names stay in step meanwhile
        index = ShardIndex.load(shards_dir)
        fs.makedirs(root, exist_ok=True)
        return _publish(fs, root, shards_dir, index, url.rstrip("/"))


def _publish(fs, root: str, shards_dir: Path, index: ShardIndex, url: str) -> dict:
    uploaded, kept = [], []
    for entry, local in zip(index.shards, index.paths()):
        remote = f"{root}/{entry.name}"
        if fs.exists(remote) and fs.size(remote) == entry.bytes:
            kept.append(entry.name)  # shard names are content-stable: same name and size, same bytes
            continue
        _put(fs, local, remote)
        uploaded.append(entry.name)
    for name in (STATS_FILE, MANIFEST_FILE):
        if (shards_dir / name).exists():
            _put(fs, shards_dir / name, f"{root}/{name}")
    _put(fs, shards_dir / INDEX_FILE, f"{root}/{INDEX_FILE}")  # last: readers start here
    return {"url": url, "uploaded": uploaded, "unchanged": kept}
