"""The append-only dataset (pipelines/shards.py, index format 2) on real packed samples.

Two GRID clips go through the real face stage (SCRFD) and the quality stage once per module;
a dataset of 100 sources is 100 copies of the first one's work folder under synthetic source
ids (pipelines/fixtures/append_dataset.py). "Re-processing" a source replaces its work folder
with a copy of the other clip's outputs: different stage fingerprints, different clip bytes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import fsspec
import pytest
import webdataset as wds

from pipelines.fixtures.append_dataset import (
    ProcessedTemplates,
    append_config,
    clone_source,
    process_templates,
    synthetic_id,
)
from pipelines.publish import publish_shards
from pipelines.schema.index import INDEX_FILE, ShardIndex, source_of_key
from pipelines.schema.manifest import DatasetStats
from pipelines.schema.records import SourceRecord
from pipelines.shards import compact_shards, compaction_candidates, iter_samples, verify_shards, write_shards
from training.data import live_only, read_samples, shard_source

SHARD_SAMPLES = 8  # small shards, so that 100 sources make several and one more makes a new one


@pytest.fixture(scope="module")
def templates(tmp_path_factory, grid_clips: list[Path], model_dir: Path) -> ProcessedTemplates:
    return process_templates(tmp_path_factory.mktemp("append-templates"), grid_clips[:2], model_dir)


def _dataset(root: Path, templates: ProcessedTemplates, count: int, **shards) -> tuple:
    """``count`` copies of the first template under synthetic ids, in a fresh data folder under ``root``."""
    config = append_config(root, templates.config.paths.model_dir, max_samples_per_shard=SHARD_SAMPLES, **shards)
    for sid in templates.source_ids:  # the templates' folders, to clone from
        shutil.copytree(templates.config.paths.work_dir / "sources" / sid,
                        config.paths.work_dir / "sources" / sid, copy_function=_link)
    records = [clone_source(config, templates.source_ids[0], synthetic_id(n)) for n in range(count)]
    return config, records


def _link(src: str, dst: str) -> None:
    Path(dst).hardlink_to(src)


def _file_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tar"))}


def _live_members(folder: Path) -> dict[str, dict[str, str]]:
    """Live key -> {member: sha256} read from the shards the index lists, retired samples skipped."""
    index = ShardIndex.load(folder)
    out: dict[str, dict[str, str]] = {}
    for path in index.paths():
        for key, members in iter_samples(path):
            if index.samples.get(key) == path.name:
                assert key not in out
                out[key] = {ext: hashlib.sha256(data).hexdigest() for ext, data in members.items()}
    return out


def _loader_keys(folder: Path) -> list[str]:
    """Sample keys the trainer's reader yields: the index's shards, filtered to live samples."""
    source = shard_source(str(folder))
    pipeline = wds.DataPipeline(wds.SimpleShardList(source.urls), read_samples, live_only(source.live))
    return sorted(sample["__key__"] for sample in pipeline)


def test_an_empty_folder_packs_as_one_shot_and_a_rewrite_changes_nothing(tmp_path, templates):
    config, records = _dataset(tmp_path / "a", templates, 20)
    first = write_shards(records, config)
    assert first.added == [f"shard-{n:06d}.tar" for n in range(3)] and first.retired == {}
    assert [entry.samples for entry in first.shard_index.shards] == [8, 8, 4]
    before = _file_hashes(config.paths.shards_dir)
    index_bytes = (config.paths.shards_dir / INDEX_FILE).read_bytes()

    again = write_shards(list(reversed(records)), config)  # nothing changed: nothing appended or retired
    assert again.added == [] and again.retired == {}
    assert _file_hashes(config.paths.shards_dir) == before
    assert (config.paths.shards_dir / INDEX_FILE).read_bytes() == index_bytes

    # The same records packed into another empty folder give the same bytes under the same names.
    other, other_records = _dataset(tmp_path / "b", templates, 20)
    write_shards(list(reversed(other_records)), other)
    assert _file_hashes(other.paths.shards_dir) == before
    assert verify_shards(config.paths.shards_dir) == []


def test_adding_one_source_to_100_rewrites_no_shard(tmp_path, templates):
    config, records = _dataset(tmp_path, templates, 100)
    write_shards(records, config)
    shards_dir = config.paths.shards_dir
    before_files = _file_hashes(shards_dir)
    before = ShardIndex.load(shards_dir)
    assert len(before.shards) == 13

    new = clone_source(config, templates.source_ids[0], synthetic_id(100))
    summary = write_shards([*records, new], config)
    after_files = _file_hashes(shards_dir)
    assert {name: after_files[name] for name in before_files} == before_files  # no existing shard's bytes changed
    assert summary.added == ["shard-000013.tar"] and set(after_files) == {*before_files, "shard-000013.tar"}
    assert summary.shard_index.shards[:13] == before.shards  # nor their entries
    (new_key,) = [seg.key for seg in new.accepted_segments()]
    assert summary.index == {**before.samples, new_key: "shard-000013.tar"}
    assert summary.shard_index.next_shard == 14
    assert verify_shards(shards_dir, summary.added) == []
    stats = DatasetStats.load(shards_dir)
    assert (stats.sources.total, stats.shards.count) == (101, 14)
    assert len(_loader_keys(shards_dir)) == 101


def test_reprocessed_and_removed_sources_are_retired_and_the_loader_skips_them(tmp_path, templates):
    config, records = _dataset(tmp_path, templates, 20)
    shards_dir = config.paths.shards_dir
    write_shards(records, config)
    before_files = _file_hashes(shards_dir)
    old = ShardIndex.load(shards_dir)
    live_before = _live_members(shards_dir)

    reprocessed, removed = synthetic_id(3), synthetic_id(12)
    changed = clone_source(config, templates.source_ids[1], reprocessed)  # other outputs, other fingerprints
    kept = [changed if r.source_id == reprocessed else r for r in records if r.source_id != removed]
    summary = write_shards(kept, config)

    assert summary.retired == {reprocessed: "reprocessed", removed: "removed"}
    assert {n: h for n, h in _file_hashes(shards_dir).items() if n in before_files} == before_files
    (new_shard,) = summary.added
    index = ShardIndex.load(shards_dir)
    (changed_key,) = [seg.key for seg in changed.accepted_segments()]
    (removed_key,) = [k for k in old.samples if source_of_key(k) == removed]
    assert index.samples[changed_key] == new_shard and old.samples[changed_key] != new_shard
    assert removed_key not in index.samples and removed not in index.sources
    assert index.entry(old.samples[changed_key]).retired == {reprocessed: "reprocessed"}
    assert index.entry(old.samples[removed_key]).retired == {removed: "removed"}
    assert index.entry(new_shard).sources == (reprocessed,)
    # The old shard still holds the old sample's bytes; the live one is the re-processed clip.
    live_after = _live_members(shards_dir)
    assert live_after[changed_key] != live_before[changed_key]
    assert {k: v for k, v in live_after.items() if k != changed_key} == \
        {k: v for k, v in live_before.items() if k not in (changed_key, removed_key)}
    loader = _loader_keys(shards_dir)
    assert removed_key not in loader and loader.count(changed_key) == 1 and len(loader) == 19
    # What the trainer reads for the re-processed key is the new clip, not the retired one.
    source = shard_source(str(shards_dir))
    (sample,) = [s for s in wds.DataPipeline(wds.SimpleShardList(source.urls), read_samples,
                                             live_only(source.live)) if s["__key__"] == changed_key]
    assert hashlib.sha256(sample["json"]).hexdigest() == live_after[changed_key]["json"]
    assert verify_shards(shards_dir) == []

    # A rejected source (no accepted clips now) is retired too.
    write_shards([r for r in kept if r.source_id != synthetic_id(0)] + [_rejected(kept[0])], config)
    assert not any(source_of_key(k) == synthetic_id(0) for k in ShardIndex.load(shards_dir).samples)


def _rejected(record: SourceRecord) -> SourceRecord:
    return record.model_copy(update={"status": "rejected", "reason": "no_face"})


def test_compaction_keeps_the_live_sample_set_and_drops_retired_ones(tmp_path, templates):
    config, records = _dataset(tmp_path, templates, 20, compact_below_bytes=0, compact_retired_share=0.1)
    shards_dir = config.paths.shards_dir
    write_shards(records, config)
    changed = clone_source(config, templates.source_ids[1], synthetic_id(1))
    kept = [changed if r.source_id == synthetic_id(1) else r for r in records if r.source_id != synthetic_id(9)]
    write_shards(kept, config)  # shard 0: one reprocessed of 8; shard 1: one removed of 8; shard 3: new
    index = ShardIndex.load(shards_dir)
    assert compaction_candidates(index, config) == ["shard-000000.tar", "shard-000001.tar"]
    live_before = _live_members(shards_dir)
    untouched = _file_hashes(shards_dir)

    result = compact_shards(config)
    assert result.replaced == ["shard-000000.tar", "shard-000001.tar"]
    assert result.added == ["shard-000004.tar", "shard-000005.tar"]
    assert (result.samples_kept, result.samples_dropped) == (14, 2)
    assert _live_members(shards_dir) == live_before  # same keys, same member bytes
    files = _file_hashes(shards_dir)
    assert set(files) == {"shard-000002.tar", "shard-000003.tar", *result.added}  # replaced ones deleted
    assert {n: files[n] for n in ("shard-000002.tar", "shard-000003.tar")} == \
        {n: untouched[n] for n in ("shard-000002.tar", "shard-000003.tar")}
    after = ShardIndex.load(shards_dir)
    assert all(not entry.retired for entry in after.shards)
    assert sum(entry.samples for entry in after.shards) == len(after.samples) == 19
    assert after.next_shard == 6 and compaction_candidates(after, config) == []
    assert sorted(_loader_keys(shards_dir)) == sorted(live_before)
    assert verify_shards(shards_dir) == []
    assert DatasetStats.load(shards_dir).shards.count == 4

    # Compacting everything gives the bytes of packing the live records into an empty folder.
    everything = config.model_copy(update={"shards": config.shards.model_copy(
        update={"compact_below_bytes": 10**12})})
    compact_shards(everything)
    fresh, fresh_records = _dataset(tmp_path / "fresh", templates, 20)
    fresh_changed = clone_source(fresh, templates.source_ids[1], synthetic_id(1))
    write_shards([fresh_changed if r.source_id == synthetic_id(1) else r for r in fresh_records
                  if r.source_id != synthetic_id(9)], fresh)
    assert sorted(_file_hashes(shards_dir).values()) == sorted(_file_hashes(fresh.paths.shards_dir).values())


def test_publish_sends_only_new_shards_and_deletes_replaced_ones_after_the_index(tmp_path, templates, monkeypatch):
    import pipelines.publish as publish

    config, records = _dataset(tmp_path, templates, 20, compact_below_bytes=10**12)
    shards_dir = config.paths.shards_dir
    url = "memory://append-publish-test/shards"
    write_shards(records, config)
    first = publish_shards(shards_dir, url)
    assert first.uploaded == ShardIndex.load(shards_dir).names and first.unchanged == [] and first.deleted == []

    summary = write_shards([*records, clone_source(config, templates.source_ids[0], synthetic_id(20))], config)
    order: list[str] = []
    put = publish._put
    monkeypatch.setattr(publish, "_put", lambda fs, local, remote: (order.append(remote.rsplit("/", 1)[1]),
                                                                    put(fs, local, remote)))
    second = publish_shards(shards_dir, url)
    assert second.uploaded == summary.added and second.unchanged == first.uploaded
    assert order[0] == summary.added[0] and order[-1] == INDEX_FILE

    compacted = compact_shards(config)  # every shard is below the size threshold: 21 samples re-packed
    assert compacted.replaced == [*first.uploaded, *summary.added] and len(compacted.added) == 3
    removed_at: list[str] = []
    fs = fsspec.filesystem("memory")
    rm = fs.rm_file
    monkeypatch.setattr(type(fs), "rm_file", lambda self, path: (removed_at.append(
        json.loads(self.cat_file("/append-publish-test/shards/index.json"))["next_shard"]), rm(path)))
    third = publish_shards(shards_dir, url)
    assert third.uploaded == compacted.added and third.deleted == sorted(compacted.replaced)
    assert set(removed_at) == {compacted.shard_index.next_shard}  # the new index was up before each deletion
    remote = ShardIndex.load(url)
    assert remote.model_dump() == ShardIndex.load(shards_dir).model_dump()
    remote_tars = [p.rsplit("/", 1)[-1] for p in fs.ls("/append-publish-test/shards", detail=False)]
    assert sorted(name for name in remote_tars if name.endswith(".tar")) == compacted.added


def test_a_format_1_index_loads_as_all_live_and_the_next_write_upgrades_it(tmp_path, templates):
    config, records = _dataset(tmp_path, templates, 12)
    shards_dir = config.paths.shards_dir
    summary = write_shards(records, config)
    v2 = summary.shard_index
    (config_hash,) = {entry.config_hash for entry in v2.shards}
    v1 = {"config_hash": config_hash, "samples": dict(v2.samples),
          "shards": [{"name": e.name, "samples": e.samples, "bytes": e.bytes, "sha256": e.sha256} for e in v2.shards]}
    (shards_dir / INDEX_FILE).write_text(json.dumps(v1))
    files = _file_hashes(shards_dir)

    loaded = ShardIndex.load(shards_dir)
    assert loaded.samples == v2.samples and loaded.next_shard == 2
    assert [e.sources for e in loaded.shards] == [e.sources for e in v2.shards]
    assert all(e.config_hash == config_hash and not e.retired for e in loaded.shards)
    assert set(loaded.sources) == set(v2.sources) and set(loaded.sources.values()) == {""}
    assert len(_loader_keys(shards_dir)) == 12

    again = write_shards(records, config)  # fingerprints read from the packed samples: nothing is re-packed
    assert again.added == [] and again.retired == {}
    assert _file_hashes(shards_dir) == files
    assert ShardIndex.load(shards_dir).model_dump() == v2.model_dump()


def test_memoised_stats_and_manifest_equal_a_full_recount(tmp_path, templates):
    """Unchanged sources' statistics and manifest rows come from the packer's memo; they must equal
    what the decided records give (pipelines.funnel.compute_funnel, save_manifest's layout)."""
    from pipelines.funnel import compute_funnel
    from pipelines.ingest import skipped_file_rows
    from pipelines.schema.manifest import MANIFEST_FILE, save_manifest
    from pipelines.shards import dataset_stats, manifest_rows

    config, records = _dataset(tmp_path, templates, 30)
    records += [clone_source(config, templates.source_ids[1], synthetic_id(30)), _rejected(records[0])]
    records.pop(0)
    write_shards(records, config)
    summary = write_shards([*records, clone_source(config, templates.source_ids[1], synthetic_id(31))], config)
    decided = summary.records  # decided again from the stored results
    skipped = skipped_file_rows(config.paths.registry_path)
    assert summary.stats == dataset_stats(decided, list(summary.shard_index.shards), skipped)
    assert summary.stats.funnel == compute_funnel(decided)
    assert DatasetStats.load(config.paths.shards_dir) == summary.stats
    memoised = (config.paths.shards_dir / MANIFEST_FILE).read_bytes()
    save_manifest(tmp_path, [*manifest_rows(decided), *skipped])
    assert memoised == (tmp_path / MANIFEST_FILE).read_bytes()


def test_a_later_stage_result_that_changes_repacks_its_source(tmp_path, templates):
    """The memo is keyed on each stage result's file identity: a re-run stage (new result file, new
    fingerprint) makes its source re-processed even though its face-stage record is unchanged."""
    from pipelines.runner import load_result, result_path

    config, records = _dataset(tmp_path, templates, 10)
    write_shards(records, config)
    sid = synthetic_id(4)
    result = load_result(config, sid, "quality")
    rerun = result.model_copy(update={"fingerprint": hashlib.sha256(b"quality, run again").hexdigest()})
    path = result_path(config, sid, "quality")
    staged = path.with_name(".quality.rerun")
    staged.write_text(rerun.model_dump_json())
    staged.replace(path)  # as the runner replaces a result
    summary = write_shards(records, config)
    assert summary.retired == {sid: "reprocessed"} and len(summary.added) == 1
    (key,) = [k for k, shard in summary.index.items() if source_of_key(k) == sid]
    assert summary.index[key] == summary.added[0]
    (packed,) = [json.loads(m["json"]) for k, m in iter_samples(config.paths.shards_dir / summary.added[0])]
    assert packed["stage_fingerprints"]["quality"] == rerun.fingerprint


def test_an_unreadable_clip_costs_its_source_not_the_write_and_is_retried(tmp_path, templates):
    config, records = _dataset(tmp_path, templates, 10)
    write_shards(records, config)
    broken, fine = (clone_source(config, templates.source_ids[0], synthetic_id(n)) for n in (10, 11))
    (key,) = [seg.key for seg in broken.accepted_segments()]
    wav = config.paths.work_dir / "sources" / broken.source_id / f"{key}.wav"
    kept = wav.read_bytes()
    wav.unlink()
    summary = write_shards([*records, broken, fine], config)
    assert list(summary.unpackable) == [broken.source_id] and "No such file" in summary.unpackable[broken.source_id]
    assert key not in summary.index and broken.source_id not in summary.shard_index.sources
    (fine_key,) = [seg.key for seg in fine.accepted_segments()]
    assert summary.index[fine_key] in summary.added
    assert verify_shards(config.paths.shards_dir) == []

    wav.write_bytes(kept)
    again = write_shards([*records, broken, fine], config)
    assert again.unpackable == {} and again.retired == {} and again.index[key] in again.added
    assert len(_loader_keys(config.paths.shards_dir)) == 12


def test_the_cli_compacts_and_verifies_a_dataset(tmp_path, templates, capsys):
    """``talkinghead compact`` and ``talkinghead verify-shards`` on a dataset with a retired source:
    compaction re-packs the partly retired shard, verification passes, then names a damaged shard."""
    import yaml

    from pipelines.cli import main

    config, records = _dataset(tmp_path, templates, 12, compact_below_bytes=0, compact_retired_share=0.1)
    write_shards(records, config)
    write_shards([r for r in records if r.source_id != synthetic_id(3)], config)  # retires one source
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))

    assert main(["--config", str(config_file), "compact", "--quiet"]) == 0
    compacted = json.loads(capsys.readouterr().out)
    assert compacted["replaced"] == ["shard-000000.tar"] and compacted["samples_dropped"] == 1
    assert synthetic_id(3) not in {source_of_key(key) for key in ShardIndex.load(config.paths.shards_dir).samples}

    assert main(["--config", str(config_file), "verify-shards"]) == 0
    assert capsys.readouterr().out.strip().endswith(": ok")
    damaged = config.paths.shards_dir / compacted["added"][0]
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    assert main(["--config", str(config_file), "verify-shards"]) == 1
    out = capsys.readouterr().out
    assert f"{damaged.name}: sha256 differs from the index" in out and not out.strip().endswith(": ok")
