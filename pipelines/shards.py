"""WebDataset shards, their index, dataset statistics and the manifest.

The dataset is append-only (index format: :mod:`pipelines.schema.index`):

- :func:`write_shards` packs only the accepted clips of sources that are new or re-processed
  (their stage fingerprints or accepted clips differ from what the index says was packed) into
  NEW shards, named with the index's ``next_shard`` number; existing shards are never rewritten.
  The earlier samples of a re-processed source, and those of a source no longer among the
  records, are retired in the index (their bytes stay in their shard until compaction).
- :func:`compact_shards` (explicit, never automatic) re-packs the live samples of small or
  largely retired shards into new shards, writes the index, then deletes the replaced shards.
- A clip that cannot be read or whose record the schema rejects costs its sample, not the write:
  the summary names its source (``unpackable``), and the next write tries that source again.
- :func:`verify_shards` streams shards (constant memory, hashing as it reads): the ones a write
  added, or all of them.

Shards are plain (uncompressed) tars with fixed metadata (mtime 0, fixed owner), samples sorted
by key, so packing the same accepted clips into an empty folder gives byte-identical shards
under the same names (``shard-000000.tar`` on), as the one-shot packer did. What appends change
is the grouping: each write's new samples (sorted by key) fill new shards of their own, so a
dataset built by appends holds the same sample bytes as a one-shot pack, in more and smaller
shards with other names; compacting all of them gives the one-shot pack's shard bytes again,
under new names. Each file is written under a temporary name and renamed; ``index.json`` is
written last and is the entry point for readers.

An append must not cost a pass over every source: ``.decided_sources.json`` (hidden, private to
the packer) memoises per source its stage-fingerprint digest, accepted keys, statistics part and
where its rows are in ``manifest.jsonl``, keyed on the face-stage record as passed and the file
identity (mtime, size, inode) of each later stage's stored result. An unchanged source then
costs a few ``stat`` calls; a missing or torn memo only makes one write decide every source again.

Conversation mode (``conversation.mode``): a sample also carries the members the pairing wrote for
it (``role.npy``, ``partner.wav``, ``partner.flame.npz``; pipelines/conversation/pairing.py) and its
JSON the ``conversation`` section, from its session's summary. The summary's digest for the source
joins the source's fingerprints (``stage_fingerprints["conversation"]``) and the summary file's
identity joins the memo's stamp, so a changed pairing re-packs the source. A sample whose session
has no current summary (not paired yet, or its sources changed since) is unpackable and tried again
on the next write. Speaking-only mode reads none of it: its shards are what they were before.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import BinaryIO

import numpy as np
import webdataset as wds
from tqdm import tqdm

from pipelines.atomic import TMP_SUFFIX, atomic_path, atomic_write_bytes
from pipelines.config import PipelineConfig
from pipelines.conversation.summary import ActorSummary, ConversationIndex, SessionSummary, conversations_dir
from pipelines.ingest import skipped_file_rows
from pipelines.schema.index import (
    INDEX_FILE,
    UNKNOWN_FINGERPRINT,
    MissingShardIndexError,
    RetiredReason,
    ShardEntry,
    ShardIndex,
    ShardIndexError,
    shards_lock,
    source_of_key,
)
from pipelines.decisions import sample_record
from pipelines.funnel import funnel_from_parts, source_buckets, source_seconds
from pipelines.registry import STAGES
from pipelines.runner import decided_record, result_path, stage_fingerprints
from pipelines.schema.manifest import (
    MANIFEST_FILE,
    DatasetStats,
    DurationSummary,
    FileRow,
    SegmentCounts,
    SegmentRow,
    ShardTotals,
    SourceCounts,
    SourceRow,
    manifest_text,
)
from pipelines.schema.records import ACCEPTED, SPLIT, Segment, SourceRecord
from pipelines.workdir import source_dir

SAMPLE_MEMBERS = ("mp4", "wav", "json")  # what every sample must hold
READ_CHUNK_BYTES = 1 << 20
# The packer's private memo of each source's decided record and fingerprint digest (hidden name:
# readers ignore it; deleting it only costs one slower write).
PACKER_CACHE_FILE = ".decided_sources.json"


@dataclass
class ShardSummary:
    shard_index: ShardIndex  # what index.json holds
    stats: DatasetStats
    manifest_path: Path
    shards_dir: Path
    added: list[str]  # shards this write created, in index order
    retired: dict[str, RetiredReason]  # sources this write retired, and why
    config: PipelineConfig
    source_records: list[SourceRecord]  # as passed in (the face stage's records)
    unpackable: dict[str, str]  # source id -> why a sample of it could not be packed (retried next write)

    @cached_property
    def records(self) -> list[SourceRecord]:
        """Every source's record after the later stages' decisions, by source id. Computed on first
        use (each source's stored results are read): the append itself does not need them."""
        return sorted((decided_record(self.config, r) for r in self.source_records), key=lambda r: r.source_id)

    @property
    def shards(self) -> list[dict]:
        """Each listed shard's entry (name, samples, bytes, sha256, ...), in index order."""
        return [entry.model_dump() for entry in self.shard_index.shards]

    @property
    def index(self) -> dict[str, str]:
        """Live sample key -> shard name."""
        return dict(self.shard_index.samples)


@dataclass
class CompactionSummary:
    shard_index: ShardIndex  # the index written after compaction
    replaced: list[str]  # shards re-packed and deleted
    added: list[str]  # the shards holding their live samples now
    samples_kept: int  # live samples moved into the new shards
    samples_dropped: int  # retired samples left behind


class _HashingWriter:
    """A write-only file that hashes and counts what passes through (the tar writer streams)."""

    def __init__(self, handle: BinaryIO):
        self.handle, self.digest, self.size = handle, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


class _HashingReader:
    """A read-only file that hashes and counts what is read from it (tarfile in stream mode reads through)."""

    def __init__(self, handle: BinaryIO):
        self.handle, self.digest, self.size = handle, hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.digest.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        """Read to the end (the tar's zero padding after its last member counts in the sha256)."""
        while self.read(READ_CHUNK_BYTES):
            pass


def source_fingerprint(fingerprints: dict[str, str]) -> str:
    """The digest the index stores for a source: its stage fingerprints, in one short string."""
    return hashlib.sha256(json.dumps(dict(sorted(fingerprints.items()))).encode()).hexdigest()[:16]


def iter_samples(path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {ext: bytes}) for each sample of the tar at ``path``, streamed, one sample in memory at a time."""
    with open(path, "rb") as handle, tarfile.open(fileobj=handle, mode="r|") as tar:
        key, members = None, {}
        for member in tar:
            name, _, ext = member.name.partition(".")
            if key is not None and name != key:
                yield key, members
                members = {}
            key = name
            members[ext] = tar.extractfile(member).read()
        if key is not None:
            yield key, members


@dataclass
class _MemberSpan:
    """Where one member's bytes lie in a shard file (for copying samples out during compaction)."""

    ext: str
    offset: int
    size: int


def _write_tar(path: Path, samples: Iterable[dict]) -> tuple[int, str, int]:
    """Write ``samples`` as a tar at ``path`` atomically; returns (bytes, sha256, sample count)."""
    count = 0
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            hashing = _HashingWriter(handle)
            writer = wds.TarWriter(hashing, user="talkinghead", group="talkinghead", mtime=0.0, encoder=False)
            for sample in samples:
                writer.write(sample)
                count += 1
            writer.close()
    return hashing.size, hashing.digest.hexdigest(), count


def _sample_bytes(config: PipelineConfig, source_id: str, segment: Segment, fingerprints: dict[str, str],
                  pairings: _Pairings | None = None) -> dict:
    """The sample's members; its JSON is validated against the schema before it is packed. In
    conversation mode (``pairings``) the pairing's members and record section join them, or
    ValueError says why they cannot."""
    folder = source_dir(config, source_id)
    sample = {"__key__": segment.key}
    for ext, name in sorted(segment.files.items()):
        sample[ext] = (folder / name).read_bytes()
    record = sample_record(sample["json"], segment, fingerprints)
    if pairings is not None:
        actor = pairings.actor(source_id, segment.key)
        for member, name in sorted(actor.files.items()):
            data = (folder / name).read_bytes()
            if hashlib.sha256(data).hexdigest() != actor.sha256[member]:
                raise ValueError(f"{name}: changed since the pairing wrote it")
            sample[member] = data
        record = record.model_copy(update={"conversation": actor.info})
    sample["json"] = record.dumps()
    return sample


class _Pairings:
    """Conversation mode: the pairing's session summaries as the packer reads them (its index once per
    write, each summary once). A summary is current while every source it was computed from still has
    the stage fingerprints it read."""

    def __init__(self, config: PipelineConfig):
        self.config = config
        self.folder = conversations_dir(config)
        self.index = ConversationIndex.load(self.folder)
        self._summaries: dict[str, SessionSummary | str] = {}  # file name -> summary, or why it is unusable
        self._digests: dict[str, str] = {}

    def stamp(self, source_id: str) -> str:
        name = self.index.sources.get(source_id)
        return f"conversation:{name}:{_file_identity(self.folder / name)}" if name else "conversation:-"

    def _digest(self, source_id: str) -> str:
        if source_id not in self._digests:
            self._digests[source_id] = source_fingerprint(stage_fingerprints(self.config, source_id))
        return self._digests[source_id]

    def summary(self, source_id: str) -> SessionSummary | str:
        """The source's current session summary, or why there is none."""
        name = self.index.sources.get(source_id)
        if name is None:
            return "not paired (conversation mode: run the pairing, `talkinghead run` or the conversations asset)"
        if name not in self._summaries:
            try:
                summary = SessionSummary.load(self.folder / name)
            except (OSError, ValueError) as error:
                self._summaries[name] = f"its session summary {name} cannot be read ({error})"
            else:
                changed = sorted(sid for sid, digest in summary.inputs.items() if self._digest(sid) != digest)
                self._summaries[name] = summary if not changed else \
                    f"its session {summary.session} was paired before {', '.join(changed)} changed: pair it again"
        return self._summaries[name]

    def fingerprint(self, source_id: str) -> str | None:
        """What the source's samples gain from the pairing, as one digest; None while it is not current."""
        summary = self.summary(source_id)
        return summary.digest_of(source_id) if isinstance(summary, SessionSummary) else None

    def actor(self, source_id: str, key: str) -> ActorSummary:
        """The pairing's entry for sample ``key``; ValueError when it has none."""
        summary = self.summary(source_id)
        if not isinstance(summary, SessionSummary):
            raise ValueError(summary)
        actor = summary.actor(key)
        if actor is None:
            raise ValueError(f"not among the actors of its session {summary.session}: pair it again")
        return actor


def planned_bytes(folder: Path, segment: Segment, source_id: str, pairings: _Pairings | None) -> int:
    """The bytes of the files packed into ``segment``'s sample (what the shard plan fills shards with): its
    clip files and, in conversation mode, the pairing's members (partner audio and FLAME, roles)."""
    names = list(segment.files.values())
    if pairings is not None:
        names += list(pairings.actor(source_id, segment.key).files.values())
    return sum((folder / name).stat().st_size for name in names)


def conversation_pairings(config: PipelineConfig) -> _Pairings | None:
    """The pairing as the packer reads it in conversation mode; None in speaking-only mode."""
    return _Pairings(config) if config.conversation.mode == "conversation" else None


def sample_fingerprints(config: PipelineConfig, source_id: str, pairings: _Pairings | None) -> dict[str, str]:
    """What a source's samples record as ``stage_fingerprints``: every stage's, plus in conversation mode
    the pairing's (under ``conversation``) while it is current."""
    prints = stage_fingerprints(config, source_id)
    paired = pairings.fingerprint(source_id) if pairings is not None else None
    return {**prints, "conversation": paired} if paired else prints


def _plan_shards(sizes: list[tuple[str, int]], max_samples: int, max_bytes: int) -> list[list[str]]:
    shards: list[list[str]] = [[]]
    used = 0
    for key, size in sizes:
        if shards[-1] and (len(shards[-1]) >= max_samples or used + size > max_bytes):
            shards.append([])
            used = 0
        shards[-1].append(key)
        used += size
    return [s for s in shards if s]


def manifest_rows(records: list[SourceRecord]) -> list[SourceRow | SegmentRow]:
    """One row per source and one per candidate segment, each with status and reason."""
    rows: list[SourceRow | SegmentRow] = []
    for rec in records:
        rows.append(SourceRow(source_id=rec.source_id, relpath=rec.source.relpath, status=rec.status,
                              reason=rec.reason, detail=rec.detail, numbers=rec.numbers))
        rows.extend(SegmentRow(source_id=rec.source_id, key=seg.key, status=seg.status, reason=seg.reason,
                               start_s=seg.start_s, end_s=seg.end_s, parent=seg.parent, numbers=seg.numbers)
                    for seg in rec.segments)
    return rows


def _duration_summary(durations: np.ndarray) -> DurationSummary:
    if not len(durations):
        return DurationSummary(total=0.0, mean=0.0, min=0.0, max=0.0)
    return DurationSummary(total=round(float(durations.sum()), 3), mean=round(float(durations.mean()), 3),
                           min=round(float(durations.min()), 3), max=round(float(durations.max()), 3))


@dataclass
class SourceStatsPart:
    """What one decided source adds to the dataset statistics (memoised per source, so an append
    does not re-decide unchanged sources to recount them)."""

    status: str
    reason: str | None
    segments: list[tuple[str, str | None]]  # (status, reason) of each candidate segment
    accepted_durations: list[float]
    accepted_flags: list[str]
    decoded_s: float | None  # None: turned away before decoding
    kept_clip_s: float  # this source's accepted clip seconds
    buckets: dict[str, float]  # funnel bucket -> seconds (pipelines.funnel.source_buckets)

    def to_memo(self) -> list:
        """The fields in declaration order (``SourceStatsPart(*memo)`` reads them back)."""
        return [self.status, self.reason, self.segments, self.accepted_durations, self.accepted_flags,
                self.decoded_s, self.kept_clip_s, self.buckets]

    @classmethod
    def of(cls, record: SourceRecord) -> SourceStatsPart:
        accepted = [s for s in record.segments if s.status == ACCEPTED]
        decoded = source_seconds(record)
        return cls(status=record.status, reason=record.reason,
                   segments=[(s.status, s.reason) for s in record.segments],
                   accepted_durations=[s.numbers["duration_s"] for s in accepted],
                   accepted_flags=[flag for s in accepted for decision in s.stages.values() for flag in decision.flags],
                   decoded_s=decoded, kept_clip_s=sum(s.duration_s for s in accepted),
                   buckets=source_buckets(record) if decoded is not None else {})


def dataset_stats(records: list[SourceRecord], shards: list[ShardEntry], skipped: list[FileRow]) -> DatasetStats:
    """Statistics of decided ``records`` (in source id order) and the listed shards."""
    return stats_from_parts([SourceStatsPart.of(r) for r in records], shards, skipped)


def stats_from_parts(parts: list[SourceStatsPart], shards: list[ShardEntry], skipped: list[FileRow]) -> DatasetStats:
    segments = [segment for part in parts for segment in part.segments]
    return DatasetStats(
        sources=SourceCounts(total=len(parts), accepted=sum(p.status == ACCEPTED for p in parts),
                             rejected_by_reason=dict(sorted(Counter(p.reason for p in parts
                                                                    if p.status != ACCEPTED).items()))),
        segments=SegmentCounts(total=len(segments), accepted=sum(status == ACCEPTED for status, _ in segments),
                               split=sum(status == SPLIT for status, _ in segments),
                               rejected_by_reason=dict(sorted(Counter(reason for status, reason in segments
                                                                      if status not in (ACCEPTED, SPLIT)).items()))),
        accepted_duration_s=_duration_summary(np.array([d for p in parts for d in p.accepted_durations])),
        accepted_flags=dict(sorted(Counter(flag for p in parts for flag in p.accepted_flags).items())),
        shards=ShardTotals(count=len(shards), bytes=sum(entry.bytes for entry in shards)),
        skipped_files=dict(sorted(Counter(row.reason for row in skipped).items())),
        funnel=funnel_from_parts(parts),
    )


def _existing_index(shards_dir: Path) -> ShardIndex:
    """The folder's index (format 1 read as format 2), or an empty one for a new folder."""
    try:
        return ShardIndex.load(shards_dir)
    except MissingShardIndexError:
        return ShardIndex()


def _fill_unknown_fingerprints(index: ShardIndex, shards_dir: Path) -> dict[str, str]:
    """Source digests of ``index``, with those a format-1 index lacks read from the packed samples' records
    (once: the next index stores them)."""
    sources = dict(index.sources)
    unknown = {sid for sid, digest in sources.items() if digest == UNKNOWN_FINGERPRINT}
    if not unknown:
        return sources
    first_key = {sid: keys[0] for sid, keys in index.live_keys_of().items() if sid in unknown}
    by_shard: dict[str, dict[str, str]] = {}
    for sid, key in first_key.items():
        by_shard.setdefault(index.samples[key], {})[key] = sid
    for shard, wanted in by_shard.items():
        for key, members in iter_samples(shards_dir / shard):
            if key in wanted:
                record = json.loads(members["json"])
                sources[wanted[key]] = source_fingerprint(record.get("stage_fingerprints") or {})
    return sources


@dataclass
class _DecidedSource:
    """What the packer needs of one source, and the stamp it was computed for: the digest of its stage
    fingerprints, its accepted keys (sorted), its manifest lines and its statistics part."""

    stamp: str
    digest: str
    accepted: list[str]
    manifest: bytes
    stats: SourceStatsPart
    record: SourceRecord | None = None  # the decided record, when this write decided the source

    def to_memo(self, span: tuple[int, int]) -> list:
        return [self.stamp, self.digest, self.accepted, span, self.stats.to_memo()]

    @classmethod
    def from_memo(cls, item: list, manifest: bytes) -> _DecidedSource:
        stamp, digest, accepted, (start, end), stats = item
        part = SourceStatsPart(*stats)
        part.segments = [tuple(pair) for pair in part.segments]
        return cls(stamp, digest, accepted, manifest[start:end], part)


class _Stamper:
    """What a source's packing facts depend on, as one short string: the config, the face-stage record
    as passed, and the identity (mtime, size, inode) of each later stage's stored result, which every
    stage run replaces atomically. A few stat calls per source, no file reads."""

    def __init__(self, config: PipelineConfig, pairings: _Pairings | None = None):
        self.pairings = pairings
        self.config_hash = config.content_hash()
        probe = "source"  # where result files lie inside a source folder, from the runner's own layout
        self.results = [str(result_path(config, probe, spec.name).relative_to(source_dir(config, probe)))
                        for spec in STAGES if not spec.is_root and spec.enabled(config)]
        self.sources_root = str(source_dir(config, probe).parent)

    def __call__(self, record: SourceRecord) -> str:
        parts = [self.config_hash, record.fingerprint or "", record.status, record.reason or "",
                 *(f"{seg.key}:{seg.status}" for seg in record.segments)]
        folder = f"{self.sources_root}/{record.source_id}/"
        for name in self.results:
            try:
                info = os.stat(folder + name)
                parts.append(f"{name}:{info.st_mtime_ns}:{info.st_size}:{info.st_ino}")
            except FileNotFoundError:
                parts.append(f"{name}:-")
        if self.pairings is not None:
            parts.append(self.pairings.stamp(record.source_id))
        return "|".join(parts)  # compared as is: a few hundred bytes per source in the memo


def _file_identity(path: Path) -> list[int] | None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return [info.st_size, info.st_mtime_ns, info.st_ino]


def _load_decided(shards_dir: Path) -> dict[str, _DecidedSource]:
    """The memo: per source its facts and where its rows are in ``manifest.jsonl`` (valid while the
    manifest is the one written with the memo); anything unreadable is decided again."""
    try:
        memo = json.loads((shards_dir / PACKER_CACHE_FILE).read_bytes())
        if memo["manifest"] != _file_identity(shards_dir / MANIFEST_FILE):
            return {}
        manifest = (shards_dir / MANIFEST_FILE).read_bytes()
        sources = memo["sources"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    out = {}
    for source_id, item in sources.items():
        try:
            out[source_id] = _DecidedSource.from_memo(item, manifest)
        except (ValueError, TypeError):
            continue
    return out


def _decide(records: list[SourceRecord], config: PipelineConfig, shards_dir: Path,
            pairings: _Pairings | None = None) -> dict[str, _DecidedSource]:
    """Every source's packing facts: from the memo where its stamp still matches (an unchanged source
    costs a few stat calls), else from its decided record (:func:`pipelines.runner.decided_record`)."""
    memo = _load_decided(shards_dir)
    stamp_of = _Stamper(config, pairings)
    out = {}
    for record in records:
        stamp = stamp_of(record)
        hit = memo.get(record.source_id)
        if hit is not None and hit.stamp == stamp:
            out[record.source_id] = hit
            continue
        decided = decided_record(config, record)
        accepted = sorted(seg.key for seg in decided.accepted_segments()) if decided.status == ACCEPTED else []
        out[record.source_id] = _DecidedSource(
            stamp, source_fingerprint(sample_fingerprints(config, record.source_id, pairings)), accepted,
            manifest_text(manifest_rows([decided])).encode(), SourceStatsPart.of(decided), record=decided)
    return out


def _write_manifest(shards_dir: Path, decided: dict[str, _DecidedSource], skipped: list[FileRow]) -> dict:
    """``manifest.jsonl`` (sources by id, then the skipped files); returns each source's byte span in it."""
    spans, parts, offset = {}, [], 0
    for sid in sorted(decided):
        text = decided[sid].manifest
        spans[sid] = (offset, offset + len(text))
        parts.append(text)
        offset += len(text)
    atomic_write_bytes(shards_dir / MANIFEST_FILE, b"".join(parts) + manifest_text(skipped).encode())
    return spans


def _save_decided(shards_dir: Path, decided: dict[str, _DecidedSource], spans: dict) -> None:
    # Written in place, not renamed: a memo torn by a crash does not parse and is rebuilt (one slower
    # write); no reader ever opens it.
    memo = {"manifest": _file_identity(shards_dir / MANIFEST_FILE),
            "sources": {sid: entry.to_memo(spans[sid]) for sid, entry in sorted(decided.items())}}
    (shards_dir / PACKER_CACHE_FILE).write_text(json.dumps(memo))


def write_shards(records: list[SourceRecord], config: PipelineConfig, progress: bool = False) -> ShardSummary:
    """Bring the shard folder in line with ``records`` (all the dataset's sources) by appending.

    Segments are first re-decided by the enabled later stages' stored results
    (:func:`pipelines.runner.decided_record`). A source whose packed samples are current (same
    stage fingerprints, same accepted keys) is left alone; a new source's accepted clips go into
    new shards; a re-processed source's earlier samples are retired and its current ones
    appended; a packed source missing from ``records`` is retired as removed. Existing shards
    are never rewritten. Stats and manifest describe all ``records``; the index is written last.
    Holds the shard folder's lock, so two packers never interleave their files.
    """
    with shards_lock(config.paths.shards_dir):
        return _write_shards(records, config, progress)


def _remove_unindexed(shards_dir: Path, index: ShardIndex, config: PipelineConfig) -> None:
    """Temporaries and shards no index names (a writer or compaction that died before its index or
    its deletions); nobody else writes while we hold the lock."""
    for leftover in shards_dir.glob(f".*{TMP_SUFFIX}*"):
        leftover.unlink()
    listed = set(index.names)
    for stale in shards_dir.glob(config.shards.name_pattern.split("{")[0] + "*.tar"):
        if stale.name not in listed:
            stale.unlink()


def _write_shards(records: list[SourceRecord], config: PipelineConfig, progress: bool) -> ShardSummary:
    shards_dir = config.paths.shards_dir
    shards_dir.mkdir(parents=True, exist_ok=True)
    old = _existing_index(shards_dir)
    _remove_unindexed(shards_dir, old, config)
    pairings = conversation_pairings(config)
    decided = _decide(records, config, shards_dir, pairings)
    by_id = {record.source_id: record for record in records}
    current = {sid: sorted(decided[sid].accepted) for sid in sorted(decided)}
    digests = {sid: decided[sid].digest for sid, keys in current.items() if keys}
    packed = _fill_unknown_fingerprints(old, shards_dir)
    live = old.live_keys_of()

    retired: dict[str, RetiredReason] = {}
    for sid, keys in live.items():
        if sid not in current:
            retired[sid] = "removed"
        elif packed.get(sid) != digests.get(sid) or keys != current[sid]:
            retired[sid] = "reprocessed"
    to_pack = sorted(sid for sid, keys in current.items() if keys and (sid not in live or sid in retired))

    samples = {key: shard for key, shard in old.samples.items() if source_of_key(key) not in retired} \
        if retired else dict(old.samples)
    sources = {sid: digest for sid, digest in packed.items() if sid not in retired}
    entries = []
    for entry in old.shards:
        newly = {sid: retired[sid] for sid in entry.sources if sid in retired and sid not in entry.retired}
        entries.append(entry.model_copy(update={"retired": dict(sorted({**entry.retired, **newly}.items()))})
                       if newly else entry)

    # Only the sources being packed are decided again here, for their segments' stage decisions.
    segments = {}
    for sid in to_pack:
        record = decided[sid].record or decided_record(config, by_id[sid])
        segments.update({seg.key: seg for seg in record.accepted_segments()})
    owner = {key: sid for sid in to_pack for key in current[sid]}
    unpackable: dict[str, str] = {}  # one bad clip costs its sample, never the write
    sizes = []
    for key in sorted(owner):
        folder = source_dir(config, owner[key])
        try:
            sizes.append((key, planned_bytes(folder, segments[key], owner[key], pairings)))
        except (OSError, ValueError) as error:
            unpackable.setdefault(owner[key], f"{key}: {error}")
    plan = _plan_shards(sizes, config.shards.max_samples_per_shard, config.shards.max_bytes_per_shard)
    stage_prints = {sid: sample_fingerprints(config, sid, pairings) for sid in to_pack}

    added, number, listed = [], old.next_shard, set(old.names)
    bar = tqdm(total=len(sizes), desc="packing", unit="sample", disable=not progress)

    def packed_samples(keys: list[str], written: list[str]) -> Iterator[dict]:
        for key in keys:
            sid = owner[key]
            try:
                sample = _sample_bytes(config, sid, segments[key], stage_prints[sid], pairings)
            except (OSError, ValueError) as error:  # unreadable member, or a JSON the schema rejects
                unpackable.setdefault(sid, f"{key}: {error}")
                continue
            written.append(key)
            yield sample
            bar.update()

    for keys in plan:
        name = config.shards.name_pattern.format(index=number)
        number += 1
        if name in listed:
            raise ShardIndexError(f"{shards_dir / INDEX_FILE}: next_shard {number - 1} names {name}, which it "
                                  "already lists; the index was edited by hand")
        written: list[str] = []
        size, digest, count = _write_tar(shards_dir / name, packed_samples(keys, written))
        if not written:
            (shards_dir / name).unlink()  # every sample of it failed; its number stays used
            continue
        entries.append(ShardEntry(name=name, samples=count, bytes=size, sha256=digest,
                                  config_hash=config.content_hash(),
                                  sources=tuple(sorted({owner[key] for key in written}))))
        samples.update(dict.fromkeys(written, name))
        added.append(name)
    bar.close()
    new_shards = set(added)
    packed_now = {owner[key] for key, shard in samples.items() if shard in new_shards}
    sources.update({sid: source_fingerprint(stage_prints[sid]) for sid in packed_now})  # what the samples carry

    shard_index = ShardIndex(next_shard=number, shards=tuple(entries), samples=samples,
                             sources=dict(sorted(sources.items()))).at(shards_dir)
    skipped = skipped_file_rows(config.paths.registry_path)  # input files that are not sources, with why
    order = sorted(decided)
    stats = stats_from_parts([decided[sid].stats for sid in order], list(shard_index.shards), skipped)
    spans = _write_manifest(shards_dir, decided, skipped)
    stats.save(shards_dir)
    shard_index.write(shards_dir)
    _save_decided(shards_dir, decided, spans)
    return ShardSummary(shard_index, stats, shards_dir / MANIFEST_FILE, shards_dir, added,
                        dict(sorted(retired.items())), config, list(records), dict(sorted(unpackable.items())))


def compaction_candidates(index: ShardIndex, config: PipelineConfig) -> list[str]:
    """Shards compaction re-packs: below ``shards.compact_below_bytes``, or with more than
    ``shards.compact_retired_share`` of their samples retired (or all of them). A lone small shard
    with nothing retired is left alone: re-packing it would only rename it."""
    live = index.live_counts()
    chosen, dirty = [], False
    for entry in index.shards:
        retired_share = 1 - live[entry.name] / entry.samples if entry.samples else 1.0
        if entry.bytes < config.shards.compact_below_bytes or retired_share > config.shards.compact_retired_share \
                or live[entry.name] == 0:
            chosen.append(entry.name)
            dirty |= live[entry.name] < entry.samples
    return chosen if dirty or len(chosen) > 1 else []


def compact_shards(config: PipelineConfig, progress: bool = False) -> CompactionSummary:
    """Re-pack the live samples of small or largely retired shards into new shards (explicit, never automatic).

    Order of effects: the new shards are written (new names, ``next_shard`` onwards), then the
    index that lists them instead of the replaced ones, then the replaced shards are deleted.
    Sample bytes are copied unchanged; live keys are packed in sorted order with the same
    grouping rule as :func:`write_shards`. A reader that loaded the previous index and opens a
    replaced shard after the deletion gets "file not found"; readers that need the index and
    the shards to agree hold :func:`~pipelines.schema.index.shards_lock` shared (compaction waits
    for them); a trainer re-resolves the index (``training.data.shard_urls``) when it starts a pass.
    """
    with shards_lock(config.paths.shards_dir):
        return _compact_shards(config, progress)


def _compact_shards(config: PipelineConfig, progress: bool) -> CompactionSummary:
    shards_dir = config.paths.shards_dir
    index = ShardIndex.load(shards_dir)
    _remove_unindexed(shards_dir, index, config)
    chosen = compaction_candidates(index, config)
    if not chosen:
        return CompactionSummary(index, [], [], 0, 0)
    chosen_set = set(chosen)
    spans: dict[str, tuple[Path, list[_MemberSpan]]] = {}
    seen: set[tuple[str, str]] = set()  # (shard, key): a re-processed key is in two shards
    for name in chosen:
        path = shards_dir / name
        with tarfile.open(path) as tar:  # random access: headers only
            for member in tar.getmembers():
                key, _, ext = member.name.partition(".")
                seen.add((name, key))
                if index.samples.get(key) == name:
                    spans.setdefault(key, (path, []))[1].append(_MemberSpan(ext, member.offset_data, member.size))
    sizes = [(key, sum(span.size for span in spans[key][1])) for key in sorted(spans)]
    plan = _plan_shards(sizes, config.shards.max_samples_per_shard, config.shards.max_bytes_per_shard)
    bar = tqdm(total=len(sizes), desc="compacting", unit="sample", disable=not progress)

    def copied_samples(keys: list[str]) -> Iterator[dict]:
        for key in keys:
            path, members = spans[key]
            sample = {"__key__": key}
            with open(path, "rb") as handle:
                for span in members:
                    handle.seek(span.offset)
                    sample[span.ext] = handle.read(span.size)
            yield sample
            bar.update()

    samples = {key: shard for key, shard in index.samples.items() if shard not in chosen_set}
    entries = [entry for entry in index.shards if entry.name not in chosen_set]
    number, added = index.next_shard, []
    config_hash_of = {entry.name: entry.config_hash for entry in index.shards}
    for keys in plan:
        name = config.shards.name_pattern.format(index=number)
        number += 1
        size, digest, count = _write_tar(shards_dir / name, copied_samples(keys))
        # The samples keep the config hash of the run that made them; a mix is recorded as such.
        origin = {config_hash_of[spans[key][0].name] for key in keys}
        entries.append(ShardEntry(name=name, samples=count, bytes=size, sha256=digest,
                                  config_hash=origin.pop() if len(origin) == 1 else "mixed:" + ",".join(sorted(origin)),
                                  sources=tuple(sorted({source_of_key(key) for key in keys}))))
        samples.update(dict.fromkeys(keys, name))
        added.append(name)
    bar.close()
    live_sources = {source_of_key(key) for key in samples}
    new_index = ShardIndex(next_shard=number, shards=tuple(entries), samples=samples,
                           sources={sid: d for sid, d in index.sources.items() if sid in live_sources}).at(shards_dir)
    _update_stats_totals(shards_dir, new_index)
    new_index.write(shards_dir)
    for name in chosen:
        (shards_dir / name).unlink(missing_ok=True)
    return CompactionSummary(new_index, chosen, added, len(sizes), len(seen) - len(sizes))


def _update_stats_totals(shards_dir: Path, index: ShardIndex) -> None:
    """stats.json's shard totals after compaction (everything else in it describes sources, unchanged)."""
    try:
        stats = DatasetStats.load(shards_dir)
    except FileNotFoundError:
        return
    totals = ShardTotals(count=len(index.shards), bytes=sum(entry.bytes for entry in index.shards))
    stats.model_copy(update={"shards": totals}).save(shards_dir)


def verify_shards(shards_dir: Path, names: Iterable[str] | None = None) -> list[str]:
    """Problems found when streaming the shards ``names`` (default: every shard the index lists)
    (empty list: all good). Each shard is read once, in constant memory: its sha256 and size are
    compared with the index, its sample count too, and every live sample the index places in it
    must hold mp4, wav and json."""
    if not (Path(shards_dir) / INDEX_FILE).exists():
        return [f"{Path(shards_dir) / INDEX_FILE} is missing"]
    with shards_lock(shards_dir, shared=True):
        return _verify_shards(Path(shards_dir), names)


def _verify_shards(shards_dir: Path, names: Iterable[str] | None) -> list[str]:
    problems = []
    try:
        index = ShardIndex.load(shards_dir, check_shards=False)  # an absent shard is reported below
    except (MissingShardIndexError, ShardIndexError) as error:
        return [str(error)]
    wanted = index.names if names is None else list(names)
    unknown = sorted(set(wanted) - set(index.names))
    if unknown:
        problems.append(f"not listed in the index: {unknown}")
    live_here: dict[str, list[str]] = {}
    for key, shard in index.samples.items():
        live_here.setdefault(shard, []).append(key)
    for name in [n for n in wanted if n in set(index.names)]:
        entry = index.entry(name)
        seen: dict[str, set[str]] = {}
        try:
            with open(shards_dir / name, "rb") as handle:
                reader = _HashingReader(handle)
                with tarfile.open(fileobj=reader, mode="r|") as tar:
                    for member in tar:  # data not read is skipped by reading through: it is hashed too
                        key, _, ext = member.name.partition(".")
                        seen.setdefault(key, set()).add(ext)
                reader.drain()
            if reader.digest.hexdigest() != entry.sha256 or reader.size != entry.bytes:
                problems.append(f"{name}: sha256 differs from the index")
            elif len(seen) != entry.samples:
                problems.append(f"{name}: holds {len(seen)} samples, the index says {entry.samples}")
        except (OSError, tarfile.TarError) as error:
            problems.append(f"{name}: cannot be opened ({error})")  # its live samples are reported lost below
        for key in sorted(live_here.get(name, [])):
            missing = set(SAMPLE_MEMBERS) - seen.get(key, set())
            if missing:
                problems.append(f"{key} in {name}: missing {sorted(missing)}")
    return problems
