"""The whole Dagster graph on the bad-input corpus (pipelines/fixtures/bad_inputs.py), with the real SCRFD weights.

Every file of the input folder must end in the manifest exactly once, with the outcome
the corpus table declares; the run must not fail; accepted clips must be intact.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import webdataset as wds

from assets.demo import run_demo
from assets.partitions import SOURCE_PARTITIONS_NAME
from pipelines.config import load_config
from pipelines.fixtures.bad_inputs import ACCEPTED, CORPUS, SHELL_NAME, SKIPPED, build_corpus, expected_counts
from pipelines.fixtures.media import ffprobe
from pipelines.ingest import SourceRegistry
from pipelines.media import decode as media
from pipelines.media.wav import read_wav
from pipelines.shards import verify_shards

pytestmark = pytest.mark.slow
NO_SEGMENT = "no_accepted_segment"


@dataclass
class CorpusRun:
    root: Path
    inputs: Path
    config_path: Path
    summary: dict
    rows: list[dict]
    partitions: list[str]
    decodes: dict[str, int]  # source decodes by file name


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory, grid_clips, model_dir, composed) -> CorpusRun:
    root = tmp_path_factory.mktemp("bad-inputs")
    inputs = build_corpus(grid_clips, root, composed)
    config_path = root / "config.yaml"
    # Speech backend pinned to pocketsphinx: the corpus table's speech outcomes (German without
    # text kept, flagged language_unknown) are the English-only recogniser's; Whisper's are
    # tested in tests/assets/test_whisper_languages.py.
    config_path.write_text(json.dumps({"paths": {"input_dir": str(inputs), "data_dir": str(root / "data"),
                                                 "model_dir": str(model_dir)},
                                       "speech": {"transcription_backend": "pocketsphinx"}}))
    before = dict(media.DECODE_COUNTS)
    cwd = os.getcwd()
    os.chdir(root)  # a name run through a shell would create `pwned` here
    try:
        with dg.instance_for_test() as instance:
            summary = run_demo(str(config_path), instance, log=lambda *_: None)
            partitions = sorted(instance.get_dynamic_partitions(SOURCE_PARTITIONS_NAME))
    finally:
        os.chdir(cwd)
    manifest = Path(summary["manifest"])
    rows = [json.loads(line) for line in manifest.read_text().splitlines()] if manifest.exists() else []
    decodes = {Path(p).name: n - before.get(p, 0) for p, n in media.DECODE_COUNTS.items()
               if Path(p).parent == inputs}
    return CorpusRun(root, inputs, config_path, summary, rows, partitions, decodes)


def _outcome(run: CorpusRun, relpath: str) -> tuple[str, str | None]:
    """(status, reason) of one input file: for a source whose every segment was rejected, the segments' reason."""
    (row,) = [r for r in run.rows if r["kind"] in ("source", "file") and r["relpath"] == relpath]
    if row["kind"] == "file" or row["reason"] != NO_SEGMENT:
        return row["status"], row["reason"]
    reasons = {r["reason"] for r in run.rows if r["kind"] == "segment" and r["source_id"] == row["source_id"]
               and r["status"] == "rejected"}
    assert len(reasons) == 1, f"{relpath}: segments rejected for several reasons {reasons}"
    return row["status"], reasons.pop()


def test_the_corpus_has_every_required_kind():
    kinds = " ".join(e.kind for e in CORPUS)
    for word in ("truncated", "zero bytes", "audio only", "video only", "variable frame rate", "very large",
                 "rotated", "1-frame", "silence", "music", "non-English", "overlapping", "no face",
                 "many small faces", "corrupt container", "wrong extension", "shell metacharacters", "symlink",
                 "2-hour", "tiny face", "blurred face"):
        assert word in kinds, word
    assert len({e.name for e in CORPUS}) == len(CORPUS) >= 20


def test_the_run_completes_and_its_checks_pass(corpus_run: CorpusRun):
    summary = corpus_run.summary
    assert summary["dataset_run_ok"] and summary["failed_runs"] == []
    assert summary["checks"] == {"every_source_accounted_for": True, "shards_open": True}


def test_every_input_file_is_in_the_manifest_once_with_its_declared_outcome(corpus_run: CorpusRun):
    on_disk = sorted(os.listdir(corpus_run.inputs))
    assert on_disk == sorted(e.name for e in CORPUS)
    listed = Counter(r["relpath"] for r in corpus_run.rows if r["kind"] in ("source", "file"))
    assert listed == Counter(on_disk), "every file exactly once"
    outcomes = {e.name: _outcome(corpus_run, e.name) for e in CORPUS}
    expected = {e.name: (e.status, e.reason) for e in CORPUS}
    assert outcomes == expected
    for row in corpus_run.rows:
        if row["status"] not in (ACCEPTED, "split"):  # a split parent carries on as its children
            assert row["reason"] and (row["kind"] == "segment" or row["detail"]), row


def test_counts_per_reason_equal_the_table(corpus_run: CorpusRun):
    counts = Counter(_outcome(corpus_run, e.name) for e in CORPUS)
    assert counts == Counter(expected_counts())
    stats = corpus_run.summary["stats"]
    assert stats["skipped_files"] == {reason: n for (status, reason), n in expected_counts().items()
                                      if status == SKIPPED}
    assert stats["sources"]["accepted"] == sum(e.status == ACCEPTED for e in CORPUS)


def test_rejected_at_probe_means_never_decoded(corpus_run: CorpusRun):
    """The 2-hour file and the 8K file are turned away from their headers: no frame is decoded."""
    for name in ("two_hours_sparse.mp4", "very_large_8k.mp4", "one_frame.mp4", "zero_bytes.mp4", "text_named.mp4"):
        assert corpus_run.decodes.get(name, 0) == 0, name
    for entry in CORPUS:
        if entry.status == ACCEPTED:
            assert corpus_run.decodes[entry.name] == 1, entry.name
    long_row = next(r for r in corpus_run.rows if r.get("relpath") == "two_hours_sparse.mp4")
    assert long_row["numbers"]["duration_s"] > 7000 and long_row["numbers"]["max_duration_s"] == 3600


def test_accepted_clips_are_intact(corpus_run: CorpusRun):
    shards_dir = Path(corpus_run.summary["manifest"]).parent
    assert verify_shards(shards_dir) == []
    samples = list(wds.WebDataset(corpus_run.summary["shards"], shardshuffle=False))
    accepted_rows = [r for r in corpus_run.rows if r["kind"] == "segment" and r["status"] == ACCEPTED]
    assert sorted(s["__key__"] for s in samples) == sorted(r["key"] for r in accepted_rows)
    by_relpath = {}
    for sample in samples:
        record = json.loads(sample["json"])
        by_relpath.setdefault(record["source"]["relpath"], []).append(record)
        mp4 = corpus_run.root / f"{sample['__key__']}.mp4"
        mp4.write_bytes(sample["mp4"])
        info = ffprobe(mp4)
        video = next(s for s in info["streams"] if s["codec_type"] == "video")
        audio = next(s for s in info["streams"] if s["codec_type"] == "audio")
        assert (video["width"], video["height"], video["r_frame_rate"]) == (384, 384, "24/1")
        assert (int(audio["sample_rate"]), audio["channels"]) == (16000, 1)
        assert abs(float(video["duration"]) - record["time_range_s"]["duration"]) <= 1 / 24 + 1e-6
        assert read_wav(sample["wav"], name=record["key"])[1] == 16000
    assert sorted(by_relpath) == sorted(e.name for e in CORPUS if e.status == ACCEPTED)
    # Stored sideways (288x360), shown upright: faces are found in the upright 360x288 picture.
    (rotated,) = by_relpath["rotated_90.mp4"]
    assert rotated["source_probe"]["rotation_deg"] in (90, 270) and rotated["faces"]["frame_size"] == [360, 288]
    # Variable frame rate: 50 frames over 3 s with 40 and 80 ms steps, still 24 fps out.
    vfr = by_relpath["variable_frame_rate.mp4"][0]
    assert vfr["fps_conversion"]["output_fps"] == 24 and vfr["source_probe"]["frame_rate"] < 20


def test_non_english_speech_outcomes_name_their_evidence(corpus_run: CorpusRun):
    """German with subtitles is rejected from them (lingua); German without text stays, flagged unknown."""
    subtitled = next(r for r in corpus_run.rows if r["kind"] == "segment" and r["reason"] == "non_english_speech")
    assert subtitled["source_id"].startswith("german-subtitled-")
    assert subtitled["numbers"]["speech.language"] == "de"
    assert subtitled["numbers"]["speech.language_source"] == "text:lingua"
    samples = {json.loads(s["json"])["source"]["relpath"]: json.loads(s["json"])
               for s in wds.WebDataset(corpus_run.summary["shards"], shardshuffle=False)}
    assert "language_unknown" in samples["german_speech.mp4"]["speech"]["flags"]


def test_odd_names_run_no_shell_and_give_stable_partition_keys(corpus_run: CorpusRun):
    for folder in (corpus_run.root, corpus_run.inputs, Path.cwd()):
        assert not (folder / "pwned").exists() and not (folder / "pwned2").exists()
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9-]*-[0-9a-f]{10}", key) for key in corpus_run.partitions)
    config = load_config(corpus_run.config_path)
    again = SourceRegistry(config.paths.registry_path).scan(config.paths.input_dir, config.ingest.extensions)
    assert sorted(ref.source_id for ref in again) == corpus_run.partitions
    shell = next(r for r in corpus_run.rows if r.get("relpath") == SHELL_NAME)
    assert shell["status"] == ACCEPTED and shell["source_id"].startswith("a-b-u-touch-pwned")


def test_the_outside_symlink_is_never_read(corpus_run: CorpusRun):
    assert (corpus_run.inputs / "link to outside.mp4").is_symlink()
    assert corpus_run.decodes.get("link to outside.mp4", 0) == 0
    registry = json.loads(load_config(corpus_run.config_path).paths.registry_path.read_text())
    assert all(entry["relpath"] != "link to outside.mp4" for entry in registry["sources"].values())
