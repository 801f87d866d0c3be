"""One real Label Studio server for every annotation test of the session (a first start takes 40-60 s
and about 500 MB): started by the CLI on a versions folder cut from GRID clips, stopped at the end."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from agreement_example import CLIPS
from labelstudio_server import LOOP_PROJECT, cli, media_versions_folder, write_config

SOURCES = {"s1": "bbaf2n", "s2": "brbk7n"}
OFFSETS = {"g1": 0.0, "g2": 0.4, "g3": 0.8, "orig": 1.2}


@pytest.fixture(scope="session")
def ls(tmp_path_factory, grid_dir: Path):
    """The running server: ``root``, ``data`` (its data_dir), ``port``, ``versions`` (4 versions of 2
    samples, 1.5 s each, offset so every version shows a different first frame) and ``config``
    (project ``loop-test`` rating those versions)."""
    pytest.importorskip("label_studio", reason="label-studio not installed (extra: annotation)")
    pytest.importorskip("label_studio_sdk", reason="label-studio-sdk not installed (extra: annotation)")
    from annotation.labelstudio_server import free_port, read_pidfile

    if shutil.which("ffmpeg") is None:
        pytest.skip("needs ffmpeg")
    root = tmp_path_factory.mktemp("labelstudio")
    data = root / "data"
    versions = media_versions_folder(data)
    for sample, version in CLIPS:
        out = versions / sample / f"{version}.mp4"
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-ss", str(OFFSETS[version]),
                        "-i", str(grid_dir / f"{SOURCES[sample]}.mpg"), "-t", "1.5", "-vf", "scale=192:-2",
                        "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-b:a", "32k", str(out)],
                       check=True)
    port = free_port()
    config = write_config(root / "config.yaml", data, port, versions, LOOP_PROJECT)
    started = cli(config, "start")
    assert started.returncode == 0, started.stdout + started.stderr
    yield {"root": root, "data": data, "port": port, "config": config, "versions": versions}
    stopped = cli(config, "stop")
    assert stopped.returncode == 0 and read_pidfile(data / "labelstudio") is None, stopped.stdout + stopped.stderr
