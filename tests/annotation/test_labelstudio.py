"""End to end against a real Label Studio server (the ``annotation`` extra): project,
idempotent import of 2 samples x 4 versions served as local files, annotations from three
annotators, a server restart, and the tidy export."""

from __future__ import annotations

import shutil
import stat
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("label_studio", reason="label-studio not installed (extra: annotation)")
pytest.importorskip("label_studio_sdk", reason="label-studio-sdk not installed (extra: annotation)")

from annotation.labelstudio import (  # noqa: E402
    AnnotationClient,
    LabelStudioServer,
    load_or_create_token,
    local_file_url,
)
from annotation.rubric import ASPECTS, labeling_config  # noqa: E402

pytestmark = pytest.mark.slow

GRID = Path(__file__).resolve().parents[3] / "shared" / "media" / "grid"
SAMPLES = ("bbaf2n", "brbk7n")
VERSIONS = ("gt", "model_a", "model_b", "model_c")
ANNOTATORS = ("ann1@example.com", "ann2@example.com", "ann3@example.com")


def _score(a: int, s: int, v: int, k: int) -> int:
    return 1 + (a * 7 + s * 3 + v * 2 + k) % 5


def _rank(a: int, s: int, v: int) -> int:
    # ties on purpose: versions 1 and 2 share a rank for every annotator
    return [1, 2, 2, 4][(v + a) % 4] if v else 1


def test_token_file_is_private(tmp_path):
    token = load_or_create_token(tmp_path)
    assert len(token) == 40 and int(token, 16) >= 0
    assert stat.S_IMODE((tmp_path / "api_token").stat().st_mode) == 0o600
    assert load_or_create_token(tmp_path) == token


def test_labeling_config_has_controls():
    xml = labeling_config(4)
    for aspect in ASPECTS:
        assert f'<Rating name="{aspect}" toName="video" maxRating="5"' in xml
    assert '<Choices name="rank"' in xml and '<Choice value="4"/>' in xml
    assert '<Video name="video" value="$video"' in xml


def test_labelstudio_roundtrip(tmp_path):
    if shutil.which("ffmpeg") is None or not GRID.is_dir():
        pytest.skip("needs ffmpeg and ../shared/media/grid")
    media_root = tmp_path / "media"
    clips = media_root / "clips"
    tasks = []
    for s, sample in enumerate(SAMPLES):
        src = GRID / f"{sample}.mpg"
        for v, version in enumerate(VERSIONS):
            out = clips / sample / f"{version}.mp4"
            out.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                ["ffmpeg", "-loglevel", "error", "-y", "-i", str(src), "-ss", str(0.2 * v),
                 "-t", "1", "-vf", "scale=96:-2", "-c:v", "libx264", "-preset", "ultrafast",
                 "-c:a", "aac", "-b:a", "32k", str(out)],
                check=True,
            )
            tasks.append({"sample": sample, "version": version,
                          "video": local_file_url(out, media_root)})

    server = LabelStudioServer(tmp_path / "ls", media_root=media_root, start_timeout=150)
    t0 = time.monotonic()
    server.start()
    try:
        print(f"first start {time.monotonic() - t0:.1f} s")
        client = AnnotationClient(server.url, server.token)
        project = client.ensure_project("talkinghead-ratings")
        assert client.ensure_project("talkinghead-ratings").id == project.id
        client.ensure_local_storage(project, clips)

        assert client.import_tasks(project, tasks) == 8
        assert client.import_tasks(project, tasks) == 0  # re-import: nothing new
        keys = client.task_keys(project)
        assert len(client.tasks(project)) == 8 and len(keys) == 8

        # media are served through local-file serving (token auth)
        first = client.tasks(project)[0]
        req = urllib.request.Request(server.url + first.data["video"],
                                     headers={"Authorization": f"Token {server.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "video/mp4"
            assert r.read(4)

        # three annotators: created by the admin, annotations filed with completed_by
        users = [client.ensure_user(email) for email in ANNOTATORS]
        assert len({u.id for u in users}) == 3
        expected = []
        for a, user in enumerate(users):
            for s, sample in enumerate(SAMPLES):
                for v, version in enumerate(VERSIONS):
                    scores = {asp: _score(a, s, v, k) for k, asp in enumerate(ASPECTS)}
                    rank = _rank(a, s, v)
                    tid = keys[(sample, version)]
                    client.annotate(tid, scores, rank=rank, completed_by=user.id)
                    for asp, sc in scores.items():
                        expected.append((user.email, tid, sample, version, asp, sc))
                    expected.append((user.email, tid, sample, version, "rank", rank))

        t1 = time.monotonic()
        server.restart()
        print(f"restart {time.monotonic() - t1:.1f} s")
        client = AnnotationClient(server.url, server.token)
        project = client.ensure_project("talkinghead-ratings")
        assert client.import_tasks(project, tasks) == 0  # still idempotent after restart

        rows = client.export_rows(project)
        got = sorted((r["annotator"], r["task_id"], r["sample"], r["version"], r["aspect"],
                      r["score"]) for r in rows)
        assert got == sorted(expected)
        assert len(rows) == 3 * 8 * 4
        # ties survive: for each annotator and sample two versions share a rank
        for email in ANNOTATORS:
            for sample in SAMPLES:
                ranks = [r["score"] for r in rows if r["annotator"] == email
                         and r["sample"] == sample and r["aspect"] == "rank"]
                assert len(ranks) == 4 and len(set(ranks)) < 4
    finally:
        server.stop()
    assert not server.is_running()
    assert (tmp_path / "ls" / "server.log").stat().st_size > 0
