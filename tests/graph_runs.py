"""Helpers for tests that run the whole graph in other processes: environments, the demo as a
subprocess, shard fingerprints, a loopback Redis and Celery workers that are always torn down.

Every run gets its own DAGSTER_HOME (SQLite instance), data folder and copy of the input
clips under pytest's tmp folder; the real media is read from ../shared and never copied
into the repository.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipelines.atomic import is_temporary
from pipelines.schema.index import INDEX_FILE, ShardIndex

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# The default demo config, with the sample clips of these tests.
CLIPS = ("bbaf2n.mpg", "brbk7n.mpg")


def make_input(grid_dir: Path, folder: Path, names: tuple[str, ...] = CLIPS) -> Path:
    """Copies (not links: symlinks out of the input folder are refused) of ``names``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy2(grid_dir / name, folder / name)
    return folder


def private_models(folder: Path, model_dir: Path, relpaths) -> Path:
    """A model folder holding links to just ``relpaths`` of ``model_dir``; skips the test when one
    is missing."""
    import pytest

    for relpath in relpaths:
        if not (model_dir / relpath).is_file():
            pytest.skip(f"{model_dir / relpath} not found")
        (folder / relpath).parent.mkdir(parents=True, exist_ok=True)
        (folder / relpath).symlink_to(model_dir / relpath)
    return folder


def run_env(root: Path, input_dir: Path, model_dir: Path, **extra: str) -> dict[str, str]:
    """Environment of one isolated deployment under ``root``: instance, data, inputs, weights."""
    home = root / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TALKINGHEAD_", "DAGSTER_"))}
    env.update(DAGSTER_HOME=str(home), TALKINGHEAD_INPUT_DIR=str(input_dir), TALKINGHEAD_DATA_DIR=str(root / "data"),
               TALKINGHEAD_MODEL_DIR=str(model_dir), PYTHONPATH=str(REPO),
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra)  # dagster-celery runs `celery`
    # Create the SQLite storages once, before any worker or run process opens them at the
    # same moment (concurrent first-time migrations clash).
    subprocess.run([sys.executable, "-c", "import dagster; dagster.DagsterInstance.get().get_runs(limit=1)"],
                   env=env, cwd=REPO, check=True, capture_output=True)
    return env


def shards_dir(env: dict[str, str]) -> Path:
    return Path(env["TALKINGHEAD_DATA_DIR"]) / "shards"


def demo(env: dict[str, str], *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    """``python -m assets.demo`` in a subprocess; raises with its output when it fails."""
    proc = subprocess.run([sys.executable, "-m", "assets.demo", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"demo {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def fingerprint(folder: Path) -> dict:
    """What must match between two runs: sample keys, their shard, and every shard's and the index's sha256."""
    index = ShardIndex.load(folder)
    files = {p.name: sha256(p) for p in sorted(folder.glob("*.tar"))}
    files[INDEX_FILE] = sha256(folder / INDEX_FILE)
    members = {}
    for tar in index.paths():
        with tarfile.open(tar) as archive:
            for member in archive.getmembers():
                members[member.name] = hashlib.sha256(archive.extractfile(member).read()).hexdigest()
    return {"keys": sorted(index.samples), "samples": dict(index.samples), "files": files, "members": members}


_REFERENCES: dict[tuple, Path] = {}


def reference_run(tmp_path_factory, grid_dir: Path, model_dir: Path, names: tuple[str, ...] = CLIPS) -> Path:
    """Shard folder of one uninterrupted in-process demo run with the default config (annotation
    included: ``annotation.versions_dir`` unset), made once per test session and shared."""
    key = (str(grid_dir), str(model_dir), names)
    if key not in _REFERENCES:
        root = tmp_path_factory.mktemp("reference_run")
        env = run_env(root, make_input(grid_dir, root / "input", names), model_dir)
        demo(env)
        _REFERENCES[key] = shards_dir(env)
    return _REFERENCES[key]


def reference_fingerprint(tmp_path_factory, grid_dir: Path, model_dir: Path, names: tuple[str, ...] = CLIPS) -> dict:
    """The :func:`fingerprint` of the shared reference run."""
    return fingerprint(reference_run(tmp_path_factory, grid_dir, model_dir, names))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")


def stop_group(proc: subprocess.Popen, grace_s: float = 10) -> None:
    """SIGTERM the process group started with ``start_new_session``, then SIGKILL what is left."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # children (prefork pool) may outlive their parent
    except ProcessLookupError:
        pass
    proc.wait(timeout=grace_s)


def group_alive(pgid: int) -> bool:
    """Any live (non-zombie) process left in group ``pgid``."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited while we looked
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


@contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    """A private redis-server on a free loopback port, no persistence; yields its URL prefix."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server")
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "redis.log", "w") as log:
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                                 "no", "--dir", str(folder)], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
        wait_for(lambda: _pings(client), 30, "redis-server to answer PING")
        yield f"redis://127.0.0.1:{port}"
    finally:
        stop_group(proc)


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:  # not listening yet
        return False


@contextmanager
def celery_workers(env: dict[str, str], config_yaml: Path, count: int, log_dir: Path) -> Iterator[list[int]]:
    """``count`` Dagster Celery workers (one process each), ready when they answer a ping.

    Yields their process-group ids; on exit every group is stopped and checked gone.
    """
    procs = []
    try:
        for n in range(count):
            cmd = [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app", "-y", str(config_yaml),
                   "-n", f"w{n}", "--loglevel", "WARNING", "--", "--concurrency=1", "--pool=prefork"]
            with open(log_dir / f"worker{n}.log", "w") as log:  # the child keeps its own copy of the fd
                procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True))
        app = _control_app(config_yaml)

        def ready() -> bool:
            dead = [p.args for p in procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"a celery worker exited at start: see {log_dir}/worker*.log")
            return len(app.control.ping(timeout=1.0) or []) >= count

        wait_for(ready, 180, f"{count} celery workers")
        yield [p.pid for p in procs]
    finally:
        for proc in procs:
            stop_group(proc)
        try:  # a SIGKILLed child needs a moment to be gone
            wait_for(lambda: not any(group_alive(p.pid) for p in procs), 20, "worker processes to exit")
        except TimeoutError:
            leaked = [p.pid for p in procs if group_alive(p.pid)]
            raise AssertionError(f"worker process groups still alive after teardown: {leaked}") from None


def _control_app(config_yaml: Path):
    import yaml
    from celery import Celery

    conf = yaml.safe_load(config_yaml.read_text())["execution"]["config"]
    return Celery("probe", broker=conf["broker"], backend=conf["backend"])


def celery_config(folder: Path, redis_url: str) -> Path:
    """deploy/celery/celery.yaml pointed at ``redis_url``."""
    conf = {"execution": {"config": {"broker": f"{redis_url}/0", "backend": f"{redis_url}/1"}}}
    path = folder / "celery.yaml"
    path.write_text(json.dumps(conf))  # JSON is YAML
    return path


def visible_files(root: Path) -> list[Path]:
    """Every file a reader would consider: not hidden, not inside a hidden (half-built) folder."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not is_temporary(Path(d))]
        found += [Path(dirpath) / f for f in filenames if not is_temporary(Path(f))]
    return found
