"""The annotation loop without a server: versions, tables, judges with failures, the report."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from agreement_example import CLIPS, EXPECTED_ALPHA, EXPECTED_JUDGE, JUDGE_SCORES, human_rows
from judge_server import ScriptedServer
from training_fixtures import flame_shards_fixture  # noqa: F401

from annotation.judging import NOT_CONFIGURED_ERROR, run_judges
from annotation.report import agreement_report, compute_agreement
from annotation.tables import HUMAN_COLUMNS, read_table, write_table
from annotation.versions import AnnotationInputError, VersionClip, versions_from_folder, versions_from_shards
from pipelines.config import JudgeConfig
from pipelines.schema.index import INDEX_FILE, ShardIndex


@pytest.fixture(scope="module")
def clip(tmp_path_factory, grid_dir) -> Path:
    if shutil.which("ffmpeg") is None:
        pytest.skip("needs ffmpeg")
    out = tmp_path_factory.mktemp("clip") / "clip.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(grid_dir / "bbaf2n.mpg"), "-t", "1",
                    "-vf", "scale=96:-2", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(out)],
                   check=True)
    return out


@pytest.fixture(scope="module")
def other_clip(tmp_path_factory, grid_dir) -> Path:
    """Another second of another recording: a clip with other bytes than ``clip``."""
    out = tmp_path_factory.mktemp("clip") / "other.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(grid_dir / "brbk7n.mpg"), "-t", "1",
                    "-vf", "scale=96:-2", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(out)],
                   check=True)
    return out


def test_versions_from_folder_validates(tmp_path, clip):
    with pytest.raises(AnnotationInputError, match="does not exist"):
        versions_from_folder(tmp_path / "nope")
    with pytest.raises(AnnotationInputError, match="no videos"):
        versions_from_folder(tmp_path)
    (tmp_path / "s1").mkdir()
    shutil.copy(clip, tmp_path / "s1" / "orig.mp4")
    shutil.copy(clip, tmp_path / "s1" / "g1.mp4")
    (tmp_path / "s1" / "notes.txt").write_text("ignored")
    got = versions_from_folder(tmp_path)
    assert [(c.sample, c.version) for c in got] == [("s1", "g1"), ("s1", "orig")]
    shutil.copy(clip, tmp_path / "s1" / "bad name;rm.mp4")
    with pytest.raises(AnnotationInputError, match="letters, digits"):
        versions_from_folder(tmp_path)
    (tmp_path / "s1" / "bad name;rm.mp4").unlink()
    (tmp_path / "s1" / "empty.mp4").write_bytes(b"")
    with pytest.raises(AnnotationInputError, match="empty"):
        versions_from_folder(tmp_path)


def _shard_mp4s(shards: Path) -> dict[str, bytes]:
    index = ShardIndex.load(shards)
    out = {}
    for name, path in zip(index.names, index.paths()):
        with tarfile.open(path) as tar:
            out.update({key: tar.extractfile(f"{key}.mp4").read() for key in index.keys_in(name)})
    return out


def test_versions_from_shards_reads_what_the_packer_wrote(tmp_path, flame_shards):
    """Shards of three GRID clips written by pipelines/shards.py: one version per indexed sample."""
    shards = tmp_path / "shards"
    shutil.copytree(flame_shards, shards, ignore=shutil.ignore_patterns(".*"))
    expected = _shard_mp4s(shards)
    assert len(expected) == 3
    got = versions_from_shards(shards, tmp_path / "media" / "clips")
    assert [(c.sample, c.version) for c in got] == [(key, "original") for key in sorted(expected)]
    for clip in got:
        assert clip.path == tmp_path / "media" / "clips" / clip.sample / "original.mp4"
        assert clip.path.read_bytes() == expected[clip.sample]
        assert clip.transcript is None  # the speech stage was off for these shards
    mtimes = [c.path.stat().st_mtime_ns for c in got]
    versions_from_shards(shards, tmp_path / "media" / "clips")
    assert [c.path.stat().st_mtime_ns for c in got] == mtimes  # unchanged clips are not rewritten


def test_versions_from_shards_explains_an_unusable_shard_folder(tmp_path, flame_shards):
    shards = tmp_path / "shards"
    with pytest.raises(AnnotationInputError, match="no shards yet"):
        versions_from_shards(shards, tmp_path / "media")
    shutil.copytree(flame_shards, shards, ignore=shutil.ignore_patterns(".*"))
    index_text = (shards / INDEX_FILE).read_text()
    # The layout this test once wrote by hand: shard name -> sha256 at the top level.
    (shards / INDEX_FILE).write_text(json.dumps({"shard-000000.tar": "sha"}))
    with pytest.raises(AnnotationInputError, match="not a shard index as pipelines/shards.py writes it"):
        versions_from_shards(shards, tmp_path / "media")
    (shards / INDEX_FILE).write_text(index_text)
    (name,) = ShardIndex.load(shards).names
    (shards / name).unlink()
    with pytest.raises(AnnotationInputError, match=f"lists shards that are not in .*{name}"):
        versions_from_shards(shards, tmp_path / "media")


def test_tables_round_trip(tmp_path):
    rows = human_rows()
    path = write_table(tmp_path / "h.csv", rows, HUMAN_COLUMNS)
    back = read_table(path)
    assert len(back) == len(rows) and back[0]["score"] == float(rows[0]["score"])
    assert read_table(tmp_path / "missing.csv") == []


def test_judge_failures_are_rows_not_exceptions(tmp_path, clip, other_clip):
    srv = ScriptedServer("openai")
    try:
        srv.default = 500  # every call fails after its retries
        srv.script.extend(['<think>ok</think>{"score": 4}'])
        clips = [VersionClip("s1", "g1", clip), VersionClip("s1", "orig", other_clip)]
        cfg = JudgeConfig(backend="openai_chat", base_url=srv.base_url, model="m", api_key_env="",
                          kinds=("holistic", "pairwise_direct", "pairwise_in_context"), frames_per_video=2,
                          timeout_s=5, max_retries=1, backoff_s=0.01)
        scores, pairs = run_judges(clips, cfg)
    finally:
        srv.close()
    assert [(r["version"], r["score"], bool(r["error"])) for r in scores] == [("g1", 4.0, False), ("orig", None, True)]
    assert scores[0]["input"] == "video+audio" and scores[1]["input"] is None
    assert pairs[0]["judge"] == "pairwise_direct" and pairs[0]["prediction"] is None and "500" in pairs[0]["error"]
    # no other sample to borrow solved pairs from: recorded, not called
    assert pairs[1]["error"] == "no solved pairs from other samples"
    report = compute_agreement(human_rows(), scores, pairs, min_annotators=3)
    assert report["judges"]["holistic"]["failed_calls"] == 1
    # a failure is a failure: no coverage, no credit (as a tie it would have earned 0.5)
    direct = report["judges"]["pairwise_direct"]
    assert direct["coverage"] == 0.0 and direct["accuracy"] == 0.0 and direct["n_failed"] == 9


def test_backend_none_makes_no_calls(clip):
    """Backend none with a server configured and real clips: not one request; every row says why."""
    clips = [VersionClip("s1", "g1", clip), VersionClip("s1", "orig", clip),
             VersionClip("s2", "g1", clip)]
    srv = ScriptedServer("openai")
    try:
        cfg = JudgeConfig(backend="none", base_url=srv.base_url, api_key_env="")
        scores, pairs = run_judges(clips, cfg)
    finally:
        srv.close()
    assert srv.requests == []
    score_kinds = [k for k in cfg.kinds if not k.startswith("pairwise_")]
    pair_kinds = [k for k in cfg.kinds if k.startswith("pairwise_")]
    assert sorted((r["judge"], r["sample"], r["version"]) for r in scores) == sorted(
        (k, c.sample, c.version) for k in score_kinds for c in clips)
    assert sorted((r["judge"], r["sample"], r["a"], r["b"]) for r in pairs) == sorted(
        (k, "s1", "g1", "orig") for k in pair_kinds)  # s2 has one version: no pair
    for row in scores + pairs:
        assert row["error"] == NOT_CONFIGURED_ERROR and "backend is 'none'" in row["error"]
        assert row.get("score") is None and row.get("prediction") is None
    # Rows that only say no judge ran are not judge failures: the report evaluates no judge.
    assert compute_agreement(human_rows(), scores, pairs, min_annotators=3)["judges"] == {}


def test_report_files_from_the_hand_example(tmp_path):
    scores = [{"judge": "holistic", "sample": s, "version": v, "aspect": "overall", "score": float(x),
               "input": "video+audio", "error": None} for (s, v), x in JUDGE_SCORES.items()]
    report = agreement_report(human_rows(), scores, [], tmp_path / "report", min_annotators=3)
    assert report["alpha_ordinal"] == pytest.approx(EXPECTED_ALPHA)
    for key, value in EXPECTED_JUDGE.items():
        assert report["judges"]["holistic"][key] == pytest.approx(value)
    assert report["judges"]["holistic"]["inputs"] == {"video+audio": 8}
    assert report["rated_clips"] == len(CLIPS) and report["pairs_total"] == 12
    assert (report["pairs_unanimous"], report["pairs_all_tie"], report["pairs_disagreed"]) == (9, 1, 2)
    md = (tmp_path / "report" / "agreement.md").read_text()
    # accuracy 7.5/9, coverage 1, answered 7.5/9, decided 7/8
    assert "| holistic | 0.833 | 1.000 | 0.833 | 0.875 | 9 | 0 | video+audio 8 |" in md
    assert "9 are unanimous" in md and "1 all-tie (excluded)" in md
    # per annotator: ann3 agrees with the others' majority on 10 of 11 pair outcomes
    assert "| ann3 | 8 |" in md and "| 0.909 (11) |" in md
    written = json.loads((tmp_path / "report" / "agreement.json").read_text())
    assert written["pairs_unanimous"] == 9 and written["annotator_monitoring"]["ann3"]["rank_majority_n"] == 11
    assert (tmp_path / "report" / "agreement.png").read_bytes()[:4] == b"\x89PNG"
