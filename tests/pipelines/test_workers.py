"""`talkinghead run --workers 2` gives the same records and shards as one worker, records a bad
input, and a source that fails in a worker process stops that source only (real GRID clips,
real SCRFD and Light-ASD weights; speech, FLAME and captions off to keep it short)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.compare_shards import members
from pipelines.cli import main as talkinghead
from pipelines.config import load_config
from pipelines.devices import threads_per_worker
from pipelines.fixtures.media import text_as_mp4
from pipelines.runner import run_sources
from pipelines.schema.index import ShardIndex
from pipelines.schema.records import REJECTED
from pipelines.workdir import SOURCE_AUDIO_FILE, load_record, source_dir
from stage_fixtures import scan

pytestmark = pytest.mark.real_weights

CONFIG_YAML = "speech: {enabled: false}\nflame: {enabled: false}\ncaptions: {enabled: false}\n"


def _cli_run(tmp_path: Path, name: str, inputs: Path, model_dir: Path, workers: int, monkeypatch) -> Path:
    data = tmp_path / name
    monkeypatch.setenv("TALKINGHEAD_INPUT_DIR", str(inputs))
    monkeypatch.setenv("TALKINGHEAD_DATA_DIR", str(data))
    monkeypatch.setenv("TALKINGHEAD_MODEL_DIR", str(model_dir))
    assert talkinghead(["--config", str(tmp_path / "config.yaml"), "run", "--quiet", "--workers", str(workers)]) == 0
    return data


@pytest.fixture(scope="module")
def asd_weights(model_dir: Path) -> Path:
    path = model_dir / "light-asd" / "pretrain_AVA_CVPR.model"
    if not path.is_file():
        pytest.skip("Light-ASD weights not in the model dir")
    return path


def test_two_workers_give_the_records_and_shards_of_one(tmp_path, grid_clips, model_dir, asd_weights, monkeypatch,
                                                         capsys):
    inputs = tmp_path / "input"
    inputs.mkdir()
    for clip in grid_clips[:3]:
        shutil.copyfile(clip, inputs / clip.name)
    text_as_mp4(inputs / "text_named.mp4")
    (tmp_path / "config.yaml").write_text(CONFIG_YAML)

    one = _cli_run(tmp_path, "one", inputs, model_dir, 1, monkeypatch)
    two = _cli_run(tmp_path, "two", inputs, model_dir, 2, monkeypatch)
    printed = capsys.readouterr().out
    monkeypatch.delenv("TALKINGHEAD_DATA_DIR")  # the environment would override the data folders below

    config_one = load_config(tmp_path / "config.yaml", paths={"data_dir": one, "input_dir": inputs})
    config_two = load_config(tmp_path / "config.yaml", paths={"data_dir": two, "input_dir": inputs})
    refs = sorted(scan(config_two).values(), key=lambda r: r.source_id)
    assert len(refs) == 4
    for ref in refs:
        first, second = load_record(config_one, ref.source_id), load_record(config_two, ref.source_id)
        assert second is not None and first.model_dump() == second.model_dump()
    bad = next(ref for ref in refs if ref.relpath == "text_named.mp4")
    assert load_record(config_two, bad.source_id).status == REJECTED
    assert f"{bad.source_id}: rejected (not_a_media_file)" in printed

    index_one, index_two = ShardIndex.load(config_one.paths.shards_dir), ShardIndex.load(config_two.paths.shards_dir)
    assert index_two.samples and sorted(index_one.samples) == sorted(index_two.samples)
    members_one, members_two = members(config_one.paths.shards_dir), members(config_two.paths.shards_dir)
    assert members_one.keys() == members_two.keys()
    differing = [name for name in members_one if members_one[name] != members_two[name]]
    assert differing == []

    # A stage that raises in a worker stops its source only; the report keeps the sources' order.
    broken = next(ref for ref in refs if ref.relpath != "text_named.mp4")
    (source_dir(config_two, broken.source_id) / SOURCE_AUDIO_FILE).unlink()  # the ASD stage reads it
    changed = load_config(tmp_path / "config.yaml", paths={"data_dir": two, "input_dir": inputs},
                          asd={"threshold": 0.45})
    report = run_sources(refs, changed, progress=False, workers=2)
    assert set(report.failures) == {broken.source_id}
    assert "FileNotFoundError" in report.failures[broken.source_id]
    assert [r.source_id for r in report.records] == [r.source_id for r in refs]
    ran = {(o.source_id, o.stage): o.status for o in report.outcomes}
    healthy = [ref for ref in refs if ref.source_id != broken.source_id and ref.relpath != "text_named.mp4"]
    assert all(ran[(ref.source_id, "asd")] == "ran" for ref in healthy)
    assert (broken.source_id, "asd") not in ran


def test_threads_per_worker_split_the_cores():
    assert threads_per_worker(2, cores=2) == 1
    assert threads_per_worker(3, cores=16) == 5
    assert threads_per_worker(4, cores=2) == 1  # never below one
    assert threads_per_worker(2, configured=3, cores=2) == 3
    with pytest.raises(ValueError, match="workers must be >= 1"):
        threads_per_worker(0)


def test_a_worker_count_below_one_is_refused(tmp_path, model_dir):
    config = load_config(paths={"data_dir": tmp_path / "data", "input_dir": tmp_path, "model_dir": model_dir})
    with pytest.raises(ValueError, match="workers must be >= 1"):
        run_sources([], config, progress=False, workers=-1)
    with pytest.raises(SystemExit):
        talkinghead(["run", "--workers", "0"])


def test_the_forkserver_preload_loads_no_model():
    """The Dagster multiprocess executor's forkserver imports PRELOAD_MODULES before forking step
    processes: importing them must build no backend, so each step loads its own models."""
    script = """
import importlib, sys
from assets.executors import PRELOAD_MODULES
for name in PRELOAD_MODULES:
    importlib.import_module(name)
import pipelines.runner, pipelines.asd.syncnet
print(len(pipelines.runner._BUILT), len(pipelines.asd.syncnet._LOADED))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["0", "0"]
