"""Helpers for tests that talk to a real Label Studio started through ``python -m annotation server``.

One server serves every annotation test of a session (tests/annotation/conftest.py): its state,
its media root and its port are fixed at start, so every config a test writes keeps the
server's ``data_dir`` (media served from ``<data_dir>/annotation/media``) and port, and picks
its own project title.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
LOOP_PROJECT = "loop-test"  # the project of tests/annotation/test_annotation_loop.py


def cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m annotation --config CONFIG server ARGS`` without the developer's TALKINGHEAD_* paths."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALKINGHEAD_")}
    return subprocess.run([sys.executable, "-m", "annotation", "--config", str(config), "server", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=400)


def write_config(path: Path, data_dir: Path, port: int, versions: Path | None, title: str,
                 judges: dict | None = None) -> Path:
    """A pipeline config for the shared server; ``versions`` None rates the clips in ``<data_dir>/shards``."""
    annotation = {"port": port, "project_title": title}
    if versions is not None:
        annotation["versions_dir"] = str(versions)
    if judges:
        annotation["judges"] = judges
    path.write_text(yaml.safe_dump({"paths": {"data_dir": str(data_dir)}, "annotation": annotation}))
    return path


def media_versions_folder(data_dir: Path) -> Path:
    """A versions folder inside the server's document root (``<data_dir>/annotation/media``) yet
    under no storage: Label Studio must not serve it (tests/annotation/test_labelstudio_study.py
    checks), annotators reach the clips only through their blinded links."""
    return data_dir / "annotation" / "media" / "versions"
