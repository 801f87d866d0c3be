"""Copy finished shards to object storage (or any fsspec URL) so training jobs elsewhere read them.

Shard names are immutable (the packer never rewrites a shard and never reuses a name, see
:mod:`pipelines.schema.index`), so a shard already on the remote under its name is the same
bytes: only shards the remote lacks are sent (one listing of the remote folder, no per-shard
requests; a remote copy of another size is a broken upload and is sent again). Object stores
have atomic single-object puts but no rename, so the order carries the guarantee that local
renames give: new shards first, then ``stats.json`` and ``manifest.jsonl``, and ``index.json``
last. A reader that starts from ``<url>/index.json`` therefore only ever sees complete shards.
Remote shards the index no longer lists (replaced by compaction) are deleted only after the new
index is up; a reader still holding the previous remote index can lose them from that moment.
Credentials come from the usual environment of the fsspec backend (e.g. s3fs reads ``AWS_*``);
install the backend for your store (``s3fs``, ``gcsfs``, ``adlfs``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipelines.schema.index import INDEX_FILE, MissingShardIndexError, ShardIndex, shards_lock
from pipelines.schema.manifest import MANIFEST_FILE, STATS_FILE

CHUNK_BYTES = 8 << 20


@dataclass
class PublishResult:
    url: str
    uploaded: list[str]  # shards sent by this call
    unchanged: list[str]  # listed shards the remote already had
    deleted: list[str]  # remote shards no longer listed, removed after the index went up


def _put(fs, local: Path, remote: str) -> None:
    with open(local, "rb") as src, fs.open(remote, "wb") as dst:
        while chunk := src.read(CHUNK_BYTES):
            dst.write(chunk)


def publish_shards(shards_dir: Path, url: str) -> PublishResult:
    """Upload what ``url`` lacks of the shards listed in ``shards_dir/index.json``, then the index.

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


def _remote_sizes(fs, root: str) -> dict[str, int]:
    """Name -> size of the ``.tar`` files in the remote folder (one listing)."""
    try:
        listing = fs.ls(root, detail=True)
    except FileNotFoundError:
        return {}
    return {item["name"].rstrip("/").rsplit("/", 1)[-1]: item.get("size") for item in listing
            if item.get("type") == "file" and item["name"].endswith(".tar")}


def _publish(fs, root: str, shards_dir: Path, index: ShardIndex, url: str) -> PublishResult:
    remote = _remote_sizes(fs, root)
    uploaded, kept = [], []
    for entry, local in zip(index.shards, index.paths()):
        if remote.get(entry.name) == entry.bytes:
            kept.append(entry.name)  # an immutable name: same name and size, same bytes
            continue
        _put(fs, local, f"{root}/{entry.name}")
        uploaded.append(entry.name)
    for name in (STATS_FILE, MANIFEST_FILE):
        if (shards_dir / name).exists():
            _put(fs, shards_dir / name, f"{root}/{name}")
    _put(fs, shards_dir / INDEX_FILE, f"{root}/{INDEX_FILE}")  # last: readers start here
    listed = set(index.names)
    deleted = sorted(name for name in remote if name not in listed)
    for name in deleted:  # only now: the index that stops naming them is up
        fs.rm_file(f"{root}/{name}")
    return PublishResult(url=url, uploaded=uploaded, unchanged=kept, deleted=deleted)
