"""Two workers materialising different source partitions at the same time, then the shards:
the same shards as one worker doing everything."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg
import pytest
from graph_runs import (
    BIN,
    REPO,
    fingerprint,
    make_input,
    reference_fingerprint,
    run_env,
    shards_dir,
)

pytestmark = pytest.mark.slow

PER_SOURCE_ASSETS = "source_probe,face_clips,face_quality,active_speakers,speech_analysis,flame_parameters,expression_captions"

REGISTER = """
import dagster as dg
from assets.partitions import SOURCE_PARTITIONS_NAME
from assets.sources import register_sources
from pipelines.config import load_config
with dg.DagsterInstance.get() as instance:
    ids, new = register_sources(load_config(), instance)
    instance.add_dynamic_partitions(SOURCE_PARTITIONS_NAME, new)
    print(" ".join(ids))
"""


def materialize(env: dict[str, str], select: str, partition: str | None = None) -> subprocess.Popen:
    cmd = [str(BIN / "dagster"), "asset", "materialize", "-m", "assets.definitions", "--select", select]
    return subprocess.Popen(cmd + (["--partition", partition] if partition else []), cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(procs: list[subprocess.Popen]) -> None:
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), [o[-3000:] for o in outputs]


def test_two_workers_on_different_partitions_give_the_one_worker_shards(tmp_path, tmp_path_factory, grid_dir,
                                                                        model_dir):
    expected = reference_fingerprint(tmp_path_factory, grid_dir, model_dir)
    # Each worker runs its partition's steps in its own process, side by side.
    env = run_env(tmp_path, make_input(grid_dir, tmp_path / "input"), model_dir, TALKINGHEAD_EXECUTOR="in_process")
    ids = subprocess.run([sys.executable, "-c", REGISTER], cwd=REPO, env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert len(ids) == 2
    finish([materialize(env, PER_SOURCE_ASSETS, sid) for sid in ids])
    finish([materialize(env, "dataset_shards")])
    assert fingerprint(shards_dir(env)) == expected
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        records = [r for r in instance.get_run_records() if r.dagster_run.tags.get("dagster/partition")]
    assert sorted(r.dagster_run.tags["dagster/partition"] for r in records) == sorted(ids)
    # The two partition runs really were in flight at the same time.
    assert max(r.start_time for r in records) < min(r.end_time for r in records)
