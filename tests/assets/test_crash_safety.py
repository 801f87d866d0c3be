"""kill -9 in the middle of a graph run: nothing half-written is ever visible, and a re-run
gives the same shards as a run that was never interrupted. Plus two processes racing on
the same source: one consistent result."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import graph_runs
import numpy as np
import pytest
from graph_runs import (
    REPO,
    demo,
    fingerprint,
    make_input,
    reference_fingerprint,
    run_env,
    shards_dir,
    visible_files,
)

from pipelines.media.wav import read_wav
from pipelines.schema.index import INDEX_FILE, ShardIndex, ShardIndexError, shards_lock

pytestmark = pytest.mark.slow


def incomplete(path: Path) -> str | None:
    """Why ``path`` is not a complete file of its kind, or None when it reads fully."""
    try:
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            for line in path.read_text().splitlines():
                json.loads(line)
        elif path.suffix == ".wav":
            read_wav(path)
            data = path.read_bytes()
            # The RIFF header states the file's length; libsndfile reads a cut-off file without complaint.
            if int.from_bytes(data[4:8], "little") + 8 != len(data):
                return "wav shorter than its header"
        elif path.suffix == ".npy":
            np.load(path)
        elif path.suffix == ".npz":
            with zipfile.ZipFile(path) as archive:
                if archive.testzip() is not None:
                    return "npz member corrupt"
        elif path.suffix == ".tar":
            with tarfile.open(path) as archive:
                for member in archive.getmembers():
                    archive.extractfile(member).read()
        elif path.suffix == ".mp4":
            proc = subprocess.run(["ffmpeg", "-v", "error", "-xerror", "-i", str(path), "-f", "null", "-"],
                                  capture_output=True, text=True)
            if proc.returncode != 0 or proc.stderr.strip():
                return f"ffmpeg: {proc.stderr.strip()[-300:]}"
    except Exception as error:  # any failure to read is the finding
        return f"{type(error).__name__}: {error}"
    return None


def check_visible(data_dir: Path) -> list[str]:
    return [f"{p}: {why}" for p in visible_files(data_dir) if (why := incomplete(p))]


def check_index(folder: Path) -> list[str]:
    """Under the readers' lock, every shard named by index.json opens fully and matches its sha256."""
    if not (folder / INDEX_FILE).exists():
        return []
    with shards_lock(folder, shared=True):
        try:
            index = ShardIndex.load(folder)
        except ShardIndexError as error:
            return [str(error)]
        problems = []
        for entry, path in zip(index.shards, index.paths()):
            if graph_runs.sha256(path) != entry.sha256:
                problems.append(f"{entry.name}: sha256 differs from index.json")
            elif why := incomplete(path):
                problems.append(f"{entry.name}: {why}")
        return problems


class ShardReader(threading.Thread):
    """Polls the shard folder during a run, as a trainer would, and records what it saw."""

    def __init__(self, folder: Path):
        super().__init__(daemon=True)
        self.folder, self.stop, self.problems, self.looks = folder, threading.Event(), [], 0

    def run(self) -> None:
        while not self.stop.is_set():
            if self.folder.is_dir():
                self.problems += check_index(self.folder)
                self.problems += [f"{p}: {why}" for p in visible_files(self.folder) if (why := incomplete(p))]
                self.looks += 1
            time.sleep(0.2)


def test_kill_9_mid_run_then_rerun_gives_the_uninterrupted_shards(tmp_path, tmp_path_factory, grid_dir, model_dir):
    expected = reference_fingerprint(tmp_path_factory, grid_dir, model_dir)
    env = run_env(tmp_path, make_input(grid_dir, tmp_path / "input"), model_dir)
    work = Path(env["TALKINGHEAD_DATA_DIR"]) / "work" / "sources"
    reader = ShardReader(shards_dir(env))
    reader.start()
    proc = subprocess.Popen([sys.executable, "-m", "assets.demo"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        # Kill as soon as the first source's folder is published: the second is mid-flight.
        graph_runs.wait_for(lambda: work.is_dir() and any(not p.name.startswith(".") for p in work.iterdir()),
                            300, "the first source to finish")
        time.sleep(1.0)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -9
    assert check_visible(Path(env["TALKINGHEAD_DATA_DIR"])) == []

    demo(env)
    reader.stop.set()
    reader.join()
    assert reader.problems == []
    assert check_visible(Path(env["TALKINGHEAD_DATA_DIR"])) == []
    # Leftovers of the killed run are cleaned up by the next holder of the lock.
    assert not [p for p in work.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    assert fingerprint(shards_dir(env)) == expected


RACE_SCRIPT = """
import sys
from pipelines.cli import main
sys.exit(main(["--input", sys.argv[1], "run"]))
"""


def test_two_processes_racing_on_the_same_sources_leave_one_consistent_result(tmp_path, tmp_path_factory, grid_dir,
                                                                               model_dir):
    """Two full runs of the same sources at once (the CLI: every stage, then the shards)."""
    expected = reference_fingerprint(tmp_path_factory, grid_dir, model_dir)
    env = run_env(tmp_path, make_input(grid_dir, tmp_path / "input"), model_dir)
    racers = [subprocess.Popen([sys.executable, "-c", RACE_SCRIPT, env["TALKINGHEAD_INPUT_DIR"]], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in racers]
    assert [p.returncode for p in racers] == [0, 0], outputs
    assert check_visible(Path(env["TALKINGHEAD_DATA_DIR"])) == []
    got = fingerprint(shards_dir(env))
    assert got["keys"] == expected["keys"]
    assert got["members"] == expected["members"]
