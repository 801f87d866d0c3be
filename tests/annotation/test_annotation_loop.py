"""The whole annotation loop against a real Label Studio server started by the CLI.

One server for the session (tests/annotation/conftest.py: ``python -m annotation server start``),
then the Dagster assets called directly (tasks pushed twice, human scores, judge scores from a
local chat-completions server, agreement report), three annotator accounts submitting through
the API with their own tokens, the sensor, a restart through the CLI, and a screenshot of the
labeling interface in headless Chromium.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import stat
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

pytest.importorskip("label_studio", reason="label-studio not installed (extra: annotation)")
pytest.importorskip("label_studio_sdk", reason="label-studio-sdk not installed (extra: annotation)")

from agreement_example import (
    ANNOTATORS,
    CLIPS,
    EXPECTED_ALPHA,
    EXPECTED_JUDGE,
    EXPECTED_UNANIMOUS,
    JUDGE_SCORES,
    RANKINGS,
    ratings,
)
from judge_server import ScriptedServer
from labelstudio_server import LOOP_PROJECT, cli, write_config

from annotation.aspects import ASPECT_TITLES
from annotation.judging import sample_frames
from annotation.labelstudio_client import AnnotationClient
from annotation.labelstudio_server import create_annotator_account, pid_alive, read_pidfile
from annotation.locations import annotation_dir, server_token, server_url
from annotation.tables import read_table
from assets.annotation import (
    agreement_report,
    annotation_tasks,
    human_scores,
    judge_scores,
    new_annotations,
)
from assets.resources import PipelineSettings
from pipelines.chat_http import encode_jpeg

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "data" / "artifacts" / "labeling_interface.png"


def email(annotator: str) -> str:
    return f"{annotator}@example.com"


def settings_for(config: Path) -> PipelineSettings:
    return PipelineSettings(config_path=str(config))


def metadata(result: dg.MaterializeResult, key: str):
    value = result.metadata[key]
    return getattr(value, "value", value)


def judge_answer(srv: ScriptedServer, score_of_frame: dict[str, int]):
    """A deterministic "judge": looks each shown video up by its first frame, answers with the
    hand example's score; pairwise verdicts compare those scores; the aggregator takes the
    majority of the panel's verdicts."""

    def score(jpeg: bytes) -> int:
        return score_of_frame[hashlib.sha1(jpeg).hexdigest()]

    def answer(body):
        text = srv.texts(body)
        images = srv.images(body)
        if "lead a panel" in text:
            verdicts = re.findall(r"verdict: (first|second|tie)", text)
            best = max(("first", "second", "tie"), key=verdicts.count)
            return '<think>majority of the panel</think>{"winner": "%s"}' % best
        if "SECOND video:" in text:
            half = len(images) // 2
            a, b = score(images[0]), score(images[half])
            winner = "first" if a > b else "second" if b > a else "tie"
            return '<think>compared the two</think>{"winner": "%s"}' % winner
        s = score(images[0])
        return ('<think>looked at the frames</think>'
                + json.dumps({"score": s, "lip_sync": s, "expressiveness": s, "motion_quality": s}))

    return answer


def test_server_cli_state_is_private_and_recorded(ls):
    folder = ls["data"] / "labelstudio"
    for name in ("api_token", "admin_password"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
    info = read_pidfile(folder)
    assert info and pid_alive(info["pid"]) and info["url"].startswith("http://127.0.0.1:")
    status = cli(ls["config"], "status")
    assert status.returncode == 0 and "running" in status.stdout
    again = cli(ls["config"], "start")  # a second start finds the running server
    assert again.returncode == 0 and "already running" in again.stdout


def test_annotation_loop_against_a_real_server(ls):
    config_path = ls["config"]
    settings = settings_for(config_path)
    config = settings.load()
    url = server_url(config.annotation)

    # tasks: 2 samples x 4 versions, pushed twice -> no duplicates
    first = annotation_tasks(dg.build_asset_context(), settings)
    assert metadata(first, "added") == 8 and metadata(first, "tasks") == 8
    again = annotation_tasks(dg.build_asset_context(), settings)
    assert metadata(again, "added") == 0 and metadata(again, "tasks") == 8
    admin = AnnotationClient(url, server_token(config))
    project_id = metadata(first, "project_id")
    keys = admin.task_keys(project_id)
    assert sorted(keys) == sorted(CLIPS)

    # the sensor: a first tick requests a run, an unchanged project is skipped
    with dg.build_sensor_context(resources={"settings": settings}) as ctx:
        tick = new_annotations(ctx)
        assert isinstance(tick, dg.RunRequest)
        cursor = ctx.cursor
    with dg.build_sensor_context(cursor=cursor, resources={"settings": settings}) as ctx:
        assert isinstance(new_annotations(ctx), dg.SkipReason)

    # three annotator accounts, each submitting with its own token
    for a, annotator in enumerate(ANNOTATORS):
        token = create_annotator_account(url, email(annotator), f"pw-{annotator}-0123456789")
        assert token != server_token(config)
        client = AnnotationClient(url, token)
        if a == 0:  # media reach an annotator through local-file serving
            video = admin.tasks(project_id)[0].data["video"]
            req = urllib.request.Request(url + video, headers={"Authorization": f"Token {token}"})
            with urllib.request.urlopen(req, timeout=30) as r:
                assert r.status == 200 and r.headers["Content-Type"] == "video/mp4"
        for c, (sample, version) in enumerate(CLIPS):
            client.annotate(keys[(sample, version)], ratings(a, c), rank=RANKINGS[annotator][sample][version])

    with dg.build_sensor_context(cursor=cursor, resources={"settings": settings}) as ctx:
        assert isinstance(new_annotations(ctx), dg.RunRequest)  # new annotations -> a run

    # restart through the CLI: everything is still there
    old_pid = read_pidfile(ls["data"] / "labelstudio")["pid"]
    assert cli(config_path, "stop").returncode == 0
    assert not pid_alive(old_pid)
    assert cli(config_path, "status").returncode == 3
    restarted = cli(config_path, "start")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert metadata(annotation_tasks(dg.build_asset_context(), settings), "added") == 0

    # human scores: every annotation exported, one row per annotator x task x aspect (+ rank)
    result = human_scores(dg.build_asset_context(), settings)
    assert metadata(result, "rows") == 3 * 8 * 4 and metadata(result, "annotators") == 3
    rows = read_table(annotation_dir(config) / "human_scores.csv")
    got = sorted((r["annotator"], r["sample"], r["version"], r["aspect"], r["score"]) for r in rows)
    expected = []
    for a, annotator in enumerate(ANNOTATORS):
        for c, (sample, version) in enumerate(CLIPS):
            expected += [(email(annotator), sample, version, k, float(v)) for k, v in ratings(a, c).items()]
            expected.append((email(annotator), sample, version, "rank", float(RANKINGS[annotator][sample][version])))
    assert got == sorted(expected)

    # judges: every kind against a local chat-completions server
    score_of_frame = {}
    for sample, version in CLIPS:
        frame = sample_frames(ls["versions"] / sample / f"{version}.mp4", 4)[0]
        score_of_frame[hashlib.sha1(encode_jpeg(frame, 90)).hexdigest()] = JUDGE_SCORES[(sample, version)]
    assert len(score_of_frame) == 8  # every version shows a different first frame
    srv = ScriptedServer("openai")
    try:
        srv.default = judge_answer(srv, score_of_frame)
        write_config(config_path, ls["data"], config.annotation.port, ls["versions"], LOOP_PROJECT, judges={
            "backend": "openai_chat", "base_url": srv.base_url, "model": "judge", "api_key_env": "",
            "frames_per_video": 4, "timeout_s": 20, "backoff_s": 0.01, "max_concurrency": 2})
        judged = judge_scores(dg.build_asset_context(), settings)
    finally:
        srv.close()
    assert metadata(judged, "failed_calls") == 0
    assert metadata(judged, "score_rows") == 8 + 8 * 4 + 8 * 4  # holistic, aspects, specialist
    assert metadata(judged, "pair_rows") == 3 * 12  # direct, in-context, multi-agent
    in_context = [r for r in srv.requests if "solved comparisons" in srv.texts(r[1])]
    assert len(in_context) == 12

    # the report's numbers equal the hand-computed example
    report_result = agreement_report(dg.build_asset_context(), settings)
    report = json.loads((annotation_dir(config) / "report" / "agreement.json").read_text())
    assert report["alpha_ordinal"] == pytest.approx(EXPECTED_ALPHA, abs=1e-9)
    assert [(p["sample"], p["a"], p["b"], p["winner"]) for p in report["unanimous_pairs"]] == EXPECTED_UNANIMOUS
    assert set(report["judges"]) == {"holistic", "aspects", "specialist", "pairwise_direct",
                                     "pairwise_in_context", "pairwise_multi_agent"}
    for name, numbers in report["judges"].items():
        assert numbers["failed_calls"] == 0
        for key, value in EXPECTED_JUDGE.items():
            assert numbers[key] == pytest.approx(value), (name, key)
    cell = next(r for r in report["mean_scores"] if r["version"] == "g1" and r["aspect"] == "lip_sync")
    assert cell["human"] == pytest.approx((5 + 3) / 2) and cell["aspects"] == pytest.approx((3 + 4) / 2)
    assert metadata(report_result, "pairs_unanimous") == 10
    png = annotation_dir(config) / "report" / "agreement.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    assert "| expressiveness | 0.836 |" in (png.parent / "agreement.md").read_text()


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def test_labeling_interface_screenshot(ls):
    """What an annotator sees: the video, the three rubrics with 1-5 stars, and the rank."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (extra: dev)")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    tools = _chromium()
    if tools is None:
        pytest.skip("needs Debian's chromium and chromium-driver (scripts/setup.sh installs them)")
    settings = settings_for(ls["config"])
    config = settings.load()
    url = server_url(config.annotation)
    pushed = annotation_tasks(dg.build_asset_context(), settings)
    admin = AnnotationClient(url, server_token(config))
    task_id = admin.task_keys(metadata(pushed, "project_id"))[("s1", "orig")]
    viewer, password = "viewer@example.com", "pw-viewer-0123456789"
    create_annotator_account(url, viewer, password)

    options = webdriver.ChromeOptions()
    options.binary_location = tools[0]
    # Offline: no background traffic, no first-run or sync pages that try to reach the network.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-default-apps", "--disable-extensions", "--no-first-run", "--mute-audio",
                 "--window-size=1400,2300"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(tools[1]), options=options)
    try:
        driver.get(url + "/user/login/")
        driver.find_element(By.NAME, "email").send_keys(viewer)
        driver.find_element(By.NAME, "password").send_keys(password)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit], input[type=submit]").click()
        WebDriverWait(driver, 60).until(lambda d: "/user/login" not in d.current_url)
        driver.get(f"{url}/projects/{metadata(pushed, 'project_id')}/data?task={task_id}")
        WebDriverWait(driver, 120).until(EC.presence_of_element_located((By.TAG_NAME, "video")))
        # the browser itself fetched the clip: metadata (duration) loaded from local-file serving
        WebDriverWait(driver, 60).until(
            lambda d: d.execute_script("const v = document.querySelector('video'); return v && v.readyState >= 1"))
        duration = driver.execute_script("return document.querySelector('video').duration")
        time.sleep(2)  # let the rating widgets finish rendering
        text = driver.execute_script("return document.body.innerText")
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SCREENSHOT))
    finally:
        driver.quit()
    assert 1.0 < duration < 2.0
    assert "Sample s1, version orig" in text
    for title in ASPECT_TITLES.values():
        assert title in text
    assert "Rank" in text
    assert SCREENSHOT.read_bytes()[:4] == b"\x89PNG" and SCREENSHOT.stat().st_size > 50_000
