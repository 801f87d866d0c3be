"""WebDataset shards, their index, dataset statistics and the manifest.

Shards are plain (uncompressed) tars with fixed metadata (mtime 0, fixed owner), samples
sorted by key, so the same accepted clips always give byte-identical shards. Each file is
written under a temporary name and renamed; ``index.json`` is written last and is the
entry point for readers.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import webdataset as wds
from tqdm import tqdm

from pipelines.atomic import TMP_SUFFIX, atomic_path
from pipelines.config import PipelineConfig
from pipelines.ingest import skipped_file_rows
from pipelines.schema.index import (
    INDEX_FILE,
    MissingShardIndexError,
    ShardEntry,
    ShardIndex,
    ShardIndexError,
    shards_lock,
)
from pipelines.decisions import sample_record
from pipelines.funnel import compute_funnel
from pipelines.runner import decided_record, stage_fingerprints
from pipelines.schema.manifest import (
    DatasetStats,
    DurationSummary,
    FileRow,
    SegmentCounts,
    SegmentRow,
    ShardTotals,
    SourceCounts,
    SourceRow,
    save_manifest,
)
from pipelines.schema.records import ACCEPTED, SPLIT, Segment, SourceRecord
from pipelines.workdir import source_dir



@dataclass
class ShardSummary:
    records: list[SourceRecord]  # after the later stages' decisions
    shard_index: ShardIndex  # what index.json holds
    stats: DatasetStats
    manifest_path: Path
    shards_dir: Path

    @property
    def shards(self) -> list[dict]:
        """Each shard's name, sample count, bytes and sha256, in index order."""
        return [entry.model_dump() for entry in self.shard_index.shards]

    @property
    def index(self) -> dict[str, str]:
        """Sample key -> shard name."""
        return dict(self.shard_index.samples)


def _sample_bytes(config: PipelineConfig, source_id: str, segment: Segment, fingerprints: dict[str, str]) -> dict:
    """The sample's members; its JSON is validated against the schema before it is packed."""
    folder = source_dir(config, source_id)
    sample = {"__key__": segment.key}
    for ext, name in sorted(segment.files.items()):
        sample[ext] = (folder / name).read_bytes()
    sample["json"] = sample_record(sample["json"], segment, fingerprints).dumps()
    return sample


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


def dataset_stats(records: list[SourceRecord], shards: list[ShardEntry], skipped: list[FileRow]) -> DatasetStats:
    segments = [s for r in records for s in r.segments]
    accepted = [s for s in segments if s.status == ACCEPTED]
    return DatasetStats(
        sources=SourceCounts(total=len(records), accepted=sum(r.status == ACCEPTED for r in records),
                             rejected_by_reason=dict(sorted(Counter(r.reason for r in records
                                                                    if r.status != ACCEPTED).items()))),
        segments=SegmentCounts(total=len(segments), accepted=len(accepted),
                               split=sum(s.status == SPLIT for s in segments),
                               rejected_by_reason=dict(sorted(Counter(s.reason for s in segments
                                                                      if s.status not in (ACCEPTED, SPLIT)).items()))),
        accepted_duration_s=_duration_summary(np.array([s.numbers["duration_s"] for s in accepted])),
        accepted_flags=dict(sorted(Counter(flag for s in accepted for decision in s.stages.values()
                                           for flag in decision.flags).items())),
        shards=ShardTotals(count=len(shards), bytes=sum(entry.bytes for entry in shards)),
        skipped_files=dict(sorted(Counter(row.reason for row in skipped).items())),
        funnel=compute_funnel(records),
    )


def write_shards(records: list[SourceRecord], config: PipelineConfig, progress: bool = False) -> ShardSummary:
    """Pack every accepted segment of ``records`` into shards; write index, stats and manifest.

    Segments are first re-decided by the enabled later stages' stored results
    (:func:`pipelines.runner.decided_record`).
    Holds the shard folder's lock, so two packers never interleave their files.
    """
    with shards_lock(config.paths.shards_dir):
        return _write_shards(records, config, progress)


def _write_shards(records: list[SourceRecord], config: PipelineConfig, progress: bool) -> ShardSummary:
    shards_dir = config.paths.shards_dir
    shards_dir.mkdir(parents=True, exist_ok=True)
    for leftover in shards_dir.glob(f".*{TMP_SUFFIX}*"):
        leftover.unlink()  # temporaries of a packer that died; no live packer exists while we hold the lock
    records = sorted((decided_record(config, r) for r in records), key=lambda r: r.source_id)
    owner = {seg.key: rec.source_id for rec in records if rec.status == ACCEPTED for seg in rec.accepted_segments()}
    segs = {seg.key: seg for rec in records for seg in rec.accepted_segments()}
    fingerprints = {rec.source_id: stage_fingerprints(config, rec.source_id) for rec in records}
    sizes = []
    for key in sorted(segs):
        folder = source_dir(config, owner[key])
        sizes.append((key, sum((folder / name).stat().st_size for name in segs[key].files.values())))
    plan = _plan_shards(sizes, config.shards.max_samples_per_shard, config.shards.max_bytes_per_shard)

    shard_entries, index = [], {}
    bar = tqdm(total=len(sizes), desc="packing", unit="sample", disable=not progress)
    for number, keys in enumerate(plan):
        name = config.shards.name_pattern.format(index=number)
        with atomic_path(shards_dir / name) as tmp:
            with open(tmp, "wb") as handle:
                writer = wds.TarWriter(handle, user="talkinghead", group="talkinghead", mtime=0.0, encoder=False)
                for key in keys:
                    writer.write(_sample_bytes(config, owner[key], segs[key], fingerprints[owner[key]]))
                    index[key] = name
                    bar.update()
                writer.close()
            digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
        shard_entries.append(ShardEntry(name=name, samples=len(keys), bytes=(shards_dir / name).stat().st_size,
                                        sha256=digest))
    bar.close()

    skipped = skipped_file_rows(config.paths.registry_path)  # input files that are not sources, with why
    stats = dataset_stats(records, shard_entries, skipped)
    manifest_path = save_manifest(shards_dir, [*manifest_rows(records), *skipped])
    stats.save(shards_dir)
    shard_index = ShardIndex(config_hash=config.content_hash(), shards=tuple(shard_entries), samples=index)
    shard_index.write(shards_dir)
    # Shards from an earlier, larger dataset are no longer indexed: remove them last.
    keep = set(shard_index.names)
    for stale in shards_dir.glob(config.shards.name_pattern.split("{")[0] + "*.tar"):
        if stale.name not in keep:
            stale.unlink()
    return ShardSummary(records, shard_index, stats, manifest_path, shards_dir)


def verify_shards(shards_dir: Path) -> list[str]:
    """Problems found when opening every shard listed in the index (empty list: all good)."""
    if not (Path(shards_dir) / INDEX_FILE).exists():
        return [f"{Path(shards_dir) / INDEX_FILE} is missing"]
    with shards_lock(shards_dir, shared=True):
        return _verify_shards(Path(shards_dir))


def _verify_shards(shards_dir: Path) -> list[str]:
    problems = []
    try:
        index = ShardIndex.load(shards_dir, check_shards=False)  # an absent shard is reported below
    except (MissingShardIndexError, ShardIndexError) as error:
        return [str(error)]
    seen: dict[str, set[str]] = {}
    for entry, path in zip(index.shards, index.paths()):
        try:
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != entry.sha256:
                problems.append(f"{entry.name}: sha256 differs from the index")
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                for member in tar.getmembers():
                    key, _, ext = member.name.partition(".")
                    seen.setdefault(key, set()).add(ext)
        except (OSError, tarfile.TarError) as error:
            problems.append(f"{entry.name}: cannot be opened ({error})")
    for key, shard in index.samples.items():
        exts = seen.get(key, set())
        missing = {"mp4", "wav", "json"} - exts
        if missing:
            problems.append(f"{key} in {shard}: missing {sorted(missing)}")
    return problems
