"""`dagster dev` starts on the workspace and its GraphQL API lists every asset."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_dagster_dev_serves_every_asset(tmp_path):
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "TALKINGHEAD_DATA_DIR": str(tmp_path / "data")}
    (tmp_path / "home").mkdir()
    dagster = Path(sys.executable).parent / "dagster"
    log = open(tmp_path / "dagster-dev.log", "w")
    proc = subprocess.Popen([str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    query = "{ assetNodes { assetKey { path } groupName isPartitioned } }"
    try:
        deadline, nodes = time.monotonic() + 120, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                reply = requests.post(f"http://127.0.0.1:{port}/graphql", json={"query": query}, timeout=5)
                if reply.ok and reply.json().get("data", {}).get("assetNodes"):
                    nodes = reply.json()["data"]["assetNodes"]
                    break
            except requests.ConnectionError:
                pass
            time.sleep(1)
        assert nodes, f"dagster dev did not answer: {(tmp_path / 'dagster-dev.log').read_text()[-3000:]}"
        by_key = {"/".join(n["assetKey"]["path"]): n for n in nodes}
        assert set(by_key) == {"source_probe", "face_clips", "face_quality", "active_speakers", "speech_analysis", "flame_parameters",
                               "expression_captions", "conversations", "dataset_shards", "annotation_tasks", "human_scores",
                               "judge_scores", "agreement_report"}
        assert by_key["agreement_report"]["groupName"] == "annotation"
        assert by_key["speech_analysis"]["isPartitioned"] and by_key["speech_analysis"]["groupName"] == "speech"
        assert by_key["face_clips"]["isPartitioned"] and not by_key["dataset_shards"]["isPartitioned"]
        assert by_key["face_clips"]["groupName"] == "faces"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
