"""``index.json``: the one description of a shard folder, written by the packer and read by every consumer.

Layout (written by :func:`pipelines.shards.write_shards`, last, after every shard it names)::

    {"config_hash": "<pipeline config hash>",
     "samples": {"<sample key>": "<shard name>", ...},
     "shards": [{"name": "shard-000000.tar", "samples": 6, "bytes": 1234, "sha256": "<64 hex>"}, ...]}

A shard folder is a local folder or any fsspec URL holding the same files (published shards,
see :mod:`pipelines.publish`). :meth:`ShardIndex.load` reads and validates the index and, by
default, checks that every listed shard is there; the helpers give what readers need: the
shards' paths or URLs, the sample keys of each shard and each shard's sha256.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import Field, PrivateAttr, ValidationError, model_validator

from pipelines.atomic import atomic_write_bytes, file_lock
from pipelines.schema.base import StrictModel

INDEX_FILE = "index.json"
LOCK_FILE = ".lock"


class MissingShardIndexError(FileNotFoundError):
    """The shard folder has no ``index.json`` (nothing packed or published there yet)."""


class ShardIndexError(ValueError):
    """``index.json`` exists but cannot be used: not the written layout, or a shard it lists is absent."""


@contextmanager
def shards_lock(shards_dir: Path, shared: bool = False) -> Iterator[None]:
    """The shard folder's lock: one writer at a time; readers that need the index and the
    shards to agree hold it shared (a writer replaces shards before it rewrites the index)."""
    with file_lock(Path(shards_dir) / LOCK_FILE, shared=shared):
        yield


def is_url(location: str | Path) -> bool:
    """True for an fsspec URL (``s3://...``, ``memory://...``); ``file://`` and plain paths are local."""
    return isinstance(location, str) and "://" in location and not location.startswith("file://")


def _local(location: str | Path) -> Path:
    return Path(str(location).removeprefix("file://"))


class ShardEntry(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # a file name in the folder, no path
    samples: int = Field(ge=0)
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ShardIndex(StrictModel):
    config_hash: str
    shards: tuple[ShardEntry, ...]
    samples: dict[str, str]  # sample key -> name of the shard holding it

    _root: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _consistent(self) -> ShardIndex:
        names = [entry.name for entry in self.shards]
        doubled = sorted({name for name in names if names.count(name) > 1})
        if doubled:
            raise ValueError(f"shards listed twice: {doubled}")
        unlisted = sorted({shard for shard in self.samples.values()} - set(names))
        if unlisted:
            raise ValueError(f"samples point at shards the index does not list: {unlisted}")
        return self

    # ----------------------------------------------------------------- writing

    def to_json(self) -> str:
        data = self.model_dump(mode="json")
        data["samples"] = dict(sorted(data["samples"].items()))
        return json.dumps(data, indent=1, sort_keys=True)

    def write(self, folder: Path) -> Path:
        """Write ``<folder>/index.json`` atomically (the packer does this after every shard is in place)."""
        path = Path(folder) / INDEX_FILE
        atomic_write_bytes(path, self.to_json().encode())
        return path

    # ----------------------------------------------------------------- reading

    @classmethod
    def parse(cls, text: str | bytes, source: str = INDEX_FILE) -> ShardIndex:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ShardIndexError(f"{source} is not JSON: {error}") from None
        if not isinstance(data, dict):
            raise ShardIndexError(f"{source} holds a {type(data).__name__}, not the index object "
                                  "(config_hash, samples, shards)")
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'index'}: {e['msg']}"
                                 for e in error.errors())
            raise ShardIndexError(f"{source} is not a shard index as pipelines/shards.py writes it: "
                                  f"{problems}") from None

    @classmethod
    def load(cls, location: str | Path, check_shards: bool = True) -> ShardIndex:
        """The index of the shard folder at ``location`` (a local folder or an fsspec URL).

        Raises :class:`MissingShardIndexError` when there is no index, :class:`ShardIndexError`
        when it is malformed or, with ``check_shards``, when a shard it lists is missing.
        """
        root = str(location).rstrip("/") if is_url(location) else str(_local(location))
        source = f"{root}/{INDEX_FILE}"
        if is_url(location):
            import fsspec

            fs, path = fsspec.core.url_to_fs(root)
            try:
                text = fs.cat_file(f"{path}/{INDEX_FILE}")
            except FileNotFoundError:
                raise MissingShardIndexError(f"no shard index: {source} does not exist") from None
            present = lambda name: fs.exists(f"{path}/{name}")  # noqa: E731
        else:
            index_path = Path(root) / INDEX_FILE
            if not index_path.is_file():
                raise MissingShardIndexError(f"no shard index: {index_path} does not exist")
            text = index_path.read_bytes()
            present = lambda name: (Path(root) / name).is_file()  # noqa: E731
        index = cls.parse(text, source)
        index._root = root
        if check_shards:
            missing = [entry.name for entry in index.shards if not present(entry.name)]
            if missing:
                raise ShardIndexError(f"{source} lists shards that are not in {root}: {missing}")
        return index

    # ----------------------------------------------------------------- helpers

    @property
    def root(self) -> str:
        if self._root is None:
            raise ShardIndexError("this index was not loaded from a shard folder: pass the folder to load()")
        return self._root

    @property
    def remote(self) -> bool:
        return is_url(self.root)

    @property
    def names(self) -> list[str]:
        return [entry.name for entry in self.shards]

    def entry(self, name: str) -> ShardEntry:
        for entry in self.shards:
            if entry.name == name:
                return entry
        raise KeyError(f"{name} is not a shard of this index (shards: {self.names})")

    def sha256(self, name: str) -> str:
        return self.entry(name).sha256

    def keys_in(self, name: str) -> list[str]:
        """Sample keys stored in shard ``name``, sorted (the order the packer writes them)."""
        self.entry(name)
        return sorted(key for key, shard in self.samples.items() if shard == name)

    def location(self, name: str) -> str:
        """Where shard ``name`` is: a local path, or ``<url>/<name>`` for published shards."""
        self.entry(name)
        return f"{self.root}/{name}" if self.remote else str(Path(self.root) / name)

    def locations(self) -> list[str]:
        """Every shard's path or URL, in index order."""
        return [self.location(name) for name in self.names]

    def paths(self) -> list[Path]:
        """Every shard's local path, in index order (a local folder only)."""
        if self.remote:
            raise ShardIndexError(f"{self.root} is a URL: use locations() for published shards")
        return [Path(self.root) / name for name in self.names]
