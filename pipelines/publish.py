"""Copy finished shards to object storage (or any fsspec URL) so training jobs elsewhere read them.

Object stores have atomic single-object puts but no rename, so the order carries the
guarantee that local renames give: every shard goes up first (skipped when the remote copy
has the same size), then ``stats.json`` and ``manifest.jsonl``, and ``index.json`` last. A
reader that starts from ``<url>/index.json`` therefore only ever sees complete shards.
Credentials come from the usual environment of the fsspec backend (e.g. s3fs reads
``AWS_*``); install the backend for your store (``s3fs``, ``gcsfs``, ``adlfs``).
"""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.shards import INDEX_FILE, MANIFEST_FILE, STATS_FILE

CHUNK_BYTES = 8 << 20


def _put(fs, local: Path, remote: str) -> None:
    with open(local, "rb") as src, fs.open(remote, "wb") as dst:
        while chunk := src.read(CHUNK_BYTES):
            dst.write(chunk)


def publish_shards(shards_dir: Path, url: str) -> dict:
    """Upload the shards listed in ``shards_dir/index.json`` to ``url``; returns what was sent."""
    import fsspec

    shards_dir = Path(shards_dir)
    index_path = shards_dir / INDEX_FILE
    if not index_path.exists():
        raise FileNotFoundError(f"nothing to publish: {index_path} is missing")
    index = json.loads(index_path.read_text())
    fs, root = fsspec.core.url_to_fs(url.rstrip("/"))
    fs.makedirs(root, exist_ok=True)
    uploaded, kept = [], []
    for entry in index["shards"]:
        remote = f"{root}/{entry['name']}"
        if fs.exists(remote) and fs.size(remote) == entry["bytes"]:
            kept.append(entry["name"])  # shard names are content-stable: same name and size, same bytes
            continue
        _put(fs, shards_dir / entry["name"], remote)
        uploaded.append(entry["name"])
    for name in (STATS_FILE, MANIFEST_FILE):
        if (shards_dir / name).exists():
            _put(fs, shards_dir / name, f"{root}/{name}")
    _put(fs, index_path, f"{root}/{INDEX_FILE}")  # last: readers start here
    return {"url": url.rstrip("/"), "uploaded": uploaded, "unchanged": kept}
