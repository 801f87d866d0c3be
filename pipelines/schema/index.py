"""``index.json``: the one description of a shard folder, written by the packer and read by every consumer.

The dataset is append-only (:func:`pipelines.shards.write_shards`): new accepted clips go into
new shards, an existing shard's bytes never change, and a source that was re-processed or
removed is *retired* in the index rather than cut out of its shard. Only the explicit
compaction job (:func:`pipelines.shards.compact_shards`) re-packs shards, under new names.

Layout, format 2 (one small JSON file, written atomically and last, after every shard it names)::

    {"format": 2,
     "next_shard": 7,
     "samples": {"<live sample key>": "<shard name>", ...},
     "sources": {"<live source id>": "<digest of the stage fingerprints it was packed with>", ...},
     "shards": [{"name": "shard-000000.tar", "samples": 6, "bytes": 1234, "sha256": "<64 hex>",
                 "config_hash": "<pipeline config hash of the run that packed it>",
                 "sources": ["<source id>", ...],
                 "retired": {"<source id>": "reprocessed" | "removed"}}, ...]}

- ``samples`` maps each LIVE key to its shard. A sample that a shard holds but whose key is
  absent from ``samples`` or maps to another shard is retired: readers skip it (the trainer
  filters ``index.samples.get(key) == <shard of the sample>``).
- ``shards[].samples`` counts every sample in the tar, live or retired; the live count is the
  number of ``samples`` values naming the shard, so the retired share is known without reading it.
- ``shards[].sources`` are the sources the tar holds; ``shards[].retired`` says which of them are
  retired there and why: ``reprocessed`` (its stage fingerprints or accepted clips changed; its
  new samples are in a newer shard) or ``removed`` (no longer among the packed sources).
- ``sources`` holds, per live source, a digest of the stage fingerprints its samples were packed
  with; the packer compares it with the current fingerprints to find re-processed sources.
- ``next_shard`` is the number the next new shard is named with (``shards.name_pattern``); it
  only grows, so a new shard never takes the name of an existing or deleted one, and a name
  always means the same bytes (publishing relies on that).
- ``config_hash`` is per shard: shards of one folder can come from runs with different configs.

Format 1 (before appends: a global ``config_hash``, shards without ``config_hash``/``sources``/
``retired``) still loads: it is read as all live, each shard taking the global config hash, and
source fingerprints unknown (empty digest; the packer reads them from the packed samples' records
once). The next write stores format 2; nothing needs migrating by hand.

A shard folder is a local folder or any fsspec URL holding the same files (published shards,
see :mod:`pipelines.publish`). :meth:`ShardIndex.load` reads and validates the index and, by
default, checks that every listed shard is there; the helpers give what readers need: the
shards with live samples (``locations()``: paths or URLs), the live keys of each shard
(``keys_in``) and each shard's sha256; ``paths()`` lists every shard, aligned with ``shards``.

Readers and compaction: compaction writes its new shards, then the index, then deletes the
replaced shards. A reader that resolved the previous index keeps working until it opens a
replaced shard after the deletion, which then fails with "file not found"; readers that need
the index and the shards to agree hold :func:`shards_lock` shared (compaction and the packer
wait for them). Appends never delete or change a shard, so they never disturb a reader.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, ValidationError, model_validator

from pipelines.atomic import atomic_write_bytes, file_lock
from pipelines.schema.base import StrictModel

INDEX_FILE = "index.json"
LOCK_FILE = ".lock"
FORMAT_VERSION = 2
UNKNOWN_FINGERPRINT = ""  # a source packed by a format-1 writer: its fingerprints are only in its samples

RetiredReason = Literal["reprocessed", "removed"]

_SOURCE_OF_KEY = re.compile(r"^(.+?)_s\d{3}")


class MissingShardIndexError(FileNotFoundError):
    """The shard folder has no ``index.json`` (nothing packed or published there yet)."""


class ShardIndexError(ValueError):
    """``index.json`` exists but cannot be used: not the written layout, or a shard it lists is absent."""


@contextmanager
def shards_lock(shards_dir: Path, shared: bool = False) -> Iterator[None]:
    """The shard folder's lock: one writer at a time; readers that need the index and the
    shards to agree hold it shared (compaction deletes replaced shards after it rewrites the index)."""
    with file_lock(Path(shards_dir) / LOCK_FILE, shared=shared):
        yield


def is_url(location: str | Path) -> bool:
    """True for an fsspec URL (``s3://...``, ``memory://...``); ``file://`` and plain paths are local."""
    return isinstance(location, str) and "://" in location and not location.startswith("file://")


def _local(location: str | Path) -> Path:
    return Path(str(location).removeprefix("file://"))


def source_of_key(key: str) -> str:
    """The source id of a sample key ``<source_id>_s<NNN>[child suffix]``."""
    match = _SOURCE_OF_KEY.match(key)
    if match is None:
        raise ValueError(f"{key!r} is not a sample key (<source_id>_s<NNN>...)")
    return match.group(1)


class ShardEntry(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # a file name in the folder, no path
    samples: int = Field(ge=0)  # every sample in the tar, live or retired
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    config_hash: str
    sources: tuple[str, ...]
    retired: dict[str, RetiredReason] = Field(default_factory=dict)


class _ShardEntryV1(StrictModel):
    name: str
    samples: int
    bytes: int
    sha256: str


class _ShardIndexV1(StrictModel):
    config_hash: str
    shards: tuple[_ShardEntryV1, ...]
    samples: dict[str, str]


def _number_in(name: str) -> int | None:
    digits = re.findall(r"\d+", name)
    return int(digits[-1]) if digits else None


def _upgrade_v1(old: _ShardIndexV1) -> dict:
    """A format-1 index as format 2: everything live, the global config hash on every shard."""
    held: dict[str, set[str]] = {}
    for key, shard in old.samples.items():
        held.setdefault(shard, set()).add(source_of_key(key))
    numbers = [n for n in (_number_in(e.name) for e in old.shards) if n is not None]
    return {
        "format": FORMAT_VERSION,
        "next_shard": max(numbers, default=len(old.shards) - 1) + 1,
        "shards": [{**e.model_dump(), "config_hash": old.config_hash, "sources": sorted(held.get(e.name, ())),
                    "retired": {}} for e in old.shards],
        "samples": dict(old.samples),
        "sources": {sid: UNKNOWN_FINGERPRINT for sids in held.values() for sid in sids},
    }


class ShardIndex(StrictModel):
    format: Literal[2] = FORMAT_VERSION
    next_shard: int = Field(0, ge=0)  # the number of the next new shard's name; only grows
    shards: tuple[ShardEntry, ...] = ()
    samples: dict[str, str] = Field(default_factory=dict)  # LIVE sample key -> name of the shard holding it
    sources: dict[str, str] = Field(default_factory=dict)  # live source id -> digest of its packed fingerprints

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
        # Compact: the C encoder (an indent would take the pure-Python one), the index stays small.
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

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
                                  "(format, next_shard, samples, sources, shards)")
        try:
            if "format" not in data:  # format 1: read as all live
                data = _upgrade_v1(_ShardIndexV1.model_validate(data))
            return cls.model_validate(data)
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'index'}: {e['msg']}"
                                 for e in error.errors())
            layout = f"format {data.get('format')}" if "format" in data else "format 1 (no 'format' field)"
            raise ShardIndexError(f"{source} is not a shard index as pipelines/shards.py writes it "
                                  f"(read as {layout}): {problems}") from None
        except ValueError as error:  # a format-1 key that is not <source_id>_s<NNN>
            raise ShardIndexError(f"{source} (format 1) cannot be read: {error}") from None

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
            with os.scandir(root) as entries:  # one listing, not a stat per shard
                files = {entry.name for entry in entries if entry.is_file()}
            present = files.__contains__
        index = cls.parse(text, source)
        index._root = root
        if check_shards:
            missing = [entry.name for entry in index.shards if not present(entry.name)]
            if missing:
                raise ShardIndexError(f"{source} lists shards that are not in {root}: {missing}")
        return index

    def at(self, root: str | Path) -> ShardIndex:
        """This index as the index of the folder ``root`` (for one built in memory by the packer)."""
        self._root = str(root).rstrip("/") if is_url(root) else str(_local(root))
        return self

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
        """Every listed shard, in index order (including those whose samples are all retired)."""
        return [entry.name for entry in self.shards]

    def live_counts(self) -> dict[str, int]:
        """Live samples per listed shard."""
        counts = dict.fromkeys(self.names, 0)
        for shard in self.samples.values():
            counts[shard] += 1
        return counts

    @property
    def live_names(self) -> list[str]:
        """The shards holding at least one live sample, in index order."""
        counts = self.live_counts()
        return [name for name in self.names if counts[name]]

    def entry(self, name: str) -> ShardEntry:
        for entry in self.shards:
            if entry.name == name:
                return entry
        raise KeyError(f"{name} is not a shard of this index (shards: {self.names})")

    def sha256(self, name: str) -> str:
        return self.entry(name).sha256

    def keys_in(self, name: str) -> list[str]:
        """Live sample keys stored in shard ``name``, sorted (the order the packer writes them)."""
        self.entry(name)
        return sorted(key for key, shard in self.samples.items() if shard == name)

    def live_keys_of(self) -> dict[str, list[str]]:
        """Source id -> its live sample keys, sorted."""
        keys: dict[str, list[str]] = {}
        for key in sorted(self.samples):
            keys.setdefault(source_of_key(key), []).append(key)
        return keys

    def location(self, name: str) -> str:
        """Where shard ``name`` is: a local path, or ``<url>/<name>`` for published shards."""
        self.entry(name)
        return f"{self.root}/{name}" if self.remote else str(Path(self.root) / name)

    def locations(self) -> list[str]:
        """Path or URL of every shard holding at least one live sample, in index order (what readers open)."""
        return [self.location(name) for name in self.live_names]

    def paths(self) -> list[Path]:
        """Local path of every listed shard, in index order, aligned with ``names`` and ``shards``
        (those whose samples are all retired included; a local folder only)."""
        if self.remote:
            raise ShardIndexError(f"{self.root} is a URL: use locations() for published shards")
        return [Path(self.root) / name for name in self.names]
