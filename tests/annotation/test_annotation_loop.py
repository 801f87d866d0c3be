"""The whole annotation loop against a real Label Studio server started by the CLI.

One server for the session (tests/annotation/conftest.py: ``python -m annotation server start``),
then the Dagster assets called directly: tasks pushed twice, three annotator accounts working
through both queues with their own tokens (tests/labelstudio_annotator.py), the sensor, a
restart through the CLI, human scores, judge scores from a local chat-completions server, the
agreement report; and screenshots of both forms in headless Chromium.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import stat
import time
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
    SAMPLES,
    VERSIONS,
    ratings,
)
from judge_server import ScriptedServer
from labelstudio_annotator import Annotator, hand_example_answers, names_pattern
from labelstudio_server import LOOP_PROJECT, cli, write_config

from annotation.aspects import ASPECT_TITLES
from annotation.blinding import load_blinding
from annotation.labelstudio_client import RANKING, RATING
from annotation.labelstudio_server import create_annotator_account, pid_alive, read_pidfile
from annotation.locations import annotation_dir, blinding_file, server_token, server_url
from annotation.tables import read_table
from assets.annotation import (
    agreement_report,
    annotation_tasks,
    human_scores,
    judge_scores,
    new_annotations,
)
from assets.resources import PipelineSettings

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "data" / "artifacts"
NAMES = names_pattern(VERSIONS + SAMPLES)


def email(annotator: str) -> str:
    return f"{annotator}@example.com"


def settings_for(config: Path) -> PipelineSettings:
    return PipelineSettings(config_path=str(config))


def metadata(result: dg.MaterializeResult, key: str):
    value = result.metadata[key]
    return getattr(value, "value", value)


def sent_videos(body: dict) -> list[bytes]:
    """The clips a chat request carries as ``video_url`` data URLs, in order."""
    out = []
    for message in body.get("messages", []):
        content = message.get("content")
        for part in content if isinstance(content, list) else []:
            if part.get("type") == "video_url":
                out.append(base64.b64decode(part["video_url"]["url"].split(",", 1)[1]))
    return out


def judge_answer(srv: ScriptedServer, score_of_video: dict[str, int]):
    """A deterministic "judge": looks each judged clip up by its bytes and answers with the hand
    example's score; pairwise verdicts compare those scores (the last two clips of a request are
    the judged pair, solved examples come first); the aggregator takes the panel's majority."""

    def score(video: bytes) -> int:
        return score_of_video[hashlib.sha1(video).hexdigest()]

    def answer(body):
        text = srv.texts(body)
        videos = sent_videos(body)
        if "lead a panel" in text:
            verdicts = re.findall(r"verdict: (first|second|tie)", text)
            best = max(("first", "second", "tie"), key=verdicts.count)
            return '<think>majority of the panel</think>{"winner": "%s"}' % best
        if "SECOND video:" in text:
            a, b = score(videos[-2]), score(videos[-1])
            winner = "first" if a > b else "second" if b > a else "tie"
            return '<think>compared the two</think>{"winner": "%s"}' % winner
        s = score(videos[-1])
        return ('<think>watched the clip</think>'
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

    # tasks: 8 rating tasks (2 samples x 4 versions) and 2 ranking tasks (a second push: after the restart)
    first = annotation_tasks(dg.build_asset_context(), settings)
    assert (metadata(first, "rating_tasks"), metadata(first, "ranking_tasks")) == (8, 2)
    pid = {kind: metadata(first, f"{kind}_project_id") for kind in (RATING, RANKING)}
    blinding = load_blinding(blinding_file(config), config.annotation.seed)
    assert sorted(blinding.clips.values()) == sorted(CLIPS)

    # the sensor: a first tick requests a run, an unchanged project is skipped
    with dg.build_sensor_context(resources={"settings": settings}) as ctx:
        tick = new_annotations(ctx)
        assert isinstance(tick, dg.RunRequest)
        cursor = ctx.cursor
    with dg.build_sensor_context(cursor=cursor, resources={"settings": settings}) as ctx:
        assert isinstance(new_annotations(ctx), dg.SkipReason)

    # three annotators work through both queues, each answering as the hand example says
    for a, annotator in enumerate(ANNOTATORS):
        person = Annotator(url, email(annotator))
        assert person.token != server_token(config)
        rate, rank = hand_example_answers(blinding, a)
        rated, ranked = person.label_all(pid[RATING], rate), person.label_all(pid[RANKING], rank)
        assert (len(rated), len(ranked)) == (8, 2)
        assert NAMES.search("".join(person.received)) is None

    with dg.build_sensor_context(cursor=cursor, resources={"settings": settings}) as ctx:
        assert isinstance(new_annotations(ctx), dg.RunRequest)  # new annotations -> a run

    # restart through the CLI: everything is still there
    old_pid = read_pidfile(ls["data"] / "labelstudio")["pid"]
    assert cli(config_path, "stop").returncode == 0
    assert not pid_alive(old_pid)
    assert cli(config_path, "status").returncode == 3
    restarted = cli(config_path, "start")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    again = annotation_tasks(dg.build_asset_context(), settings)
    assert (metadata(again, "rating_added"), metadata(again, "ranking_added")) == (0, 0)

    # human scores: one row per rater x clip x aspect, the rank from the side-by-side task; rater ids, no emails
    result = human_scores(dg.build_asset_context(), settings)
    assert metadata(result, "rows") == 3 * 8 * 4 and metadata(result, "annotators") == 3
    assert metadata(result, "rejected") == 0
    rows = read_table(annotation_dir(config) / "human_scores.csv")
    rater = {a: load_blinding(blinding_file(config), config.annotation.seed).annotator_id(email(a))
             for a in ANNOTATORS}
    got = sorted((r["annotator"], r["sample"], r["version"], r["aspect"], r["score"]) for r in rows)
    expected = []
    for a, annotator in enumerate(ANNOTATORS):
        for c, (sample, version) in enumerate(CLIPS):
            expected += [(rater[annotator], sample, version, k, float(v)) for k, v in ratings(a, c).items()]
            expected.append((rater[annotator], sample, version, "rank", float(RANKINGS[annotator][sample][version])))
    assert got == sorted(expected)

    # judges: every kind against a local chat-completions server, given each clip itself
    score_of_video = {hashlib.sha1((ls["versions"] / s / f"{v}.mp4").read_bytes()).hexdigest(): JUDGE_SCORES[(s, v)]
                      for s, v in CLIPS}
    assert len(score_of_video) == 8
    srv = ScriptedServer("openai")
    try:
        srv.default = judge_answer(srv, score_of_video)
        write_config(config_path, ls["data"], config.annotation.port, ls["versions"], LOOP_PROJECT, judges={
            "backend": "openai_chat", "base_url": srv.base_url, "model": "judge", "api_key_env": "",
            "pairwise_ties": True, "timeout_s": 20, "backoff_s": 0.01, "max_concurrency": 2})
        judged = judge_scores(dg.build_asset_context(), settings)
    finally:
        srv.close()
    assert metadata(judged, "failed_calls") == 0

    # the report's numbers equal the hand-computed example; it names raters, never emails
    report_result = agreement_report(dg.build_asset_context(), settings)
    report_dir = annotation_dir(config) / "report"
    report = json.loads((report_dir / "agreement.json").read_text())
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
    assert metadata(report_result, "pairs_unanimous") == len(EXPECTED_UNANIMOUS)
    png = report_dir / "agreement.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    assert "| expressiveness | 0.836 |" in (report_dir / "agreement.md").read_text()
    for file in sorted(report_dir.iterdir()) + [annotation_dir(config) / "human_scores.csv"]:
        assert b"@example.com" not in file.read_bytes(), file


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def test_labeling_interface_screenshots(ls, tmp_path):
    """What an annotator sees in the labelling stream: the rating form (one blinded clip, the three
    rubrics with every level, 1-5 stars) and the ranking form (all four versions side by side, a
    rank under each); both saved as PNGs (the README shows the copies in docs/)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (extra: dev)")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    tools = _chromium()
    if tools is None:
        pytest.skip("needs Debian's chromium and chromium-driver (scripts/setup.sh installs them)")
    settings = settings_for(write_config(tmp_path / "config.yaml", ls["data"], ls["port"], ls["versions"],
                                         "screenshots"))
    config = settings.load()
    url = server_url(config.annotation)
    pushed = annotation_tasks(dg.build_asset_context(), settings)
    viewer, password = "viewer@example.com", "pw-viewer-0123456789"
    create_annotator_account(url, viewer, password)

    options = webdriver.ChromeOptions()
    options.binary_location = tools[0]
    # Offline: no background traffic, no first-run or sync pages that try to reach the network.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-default-apps", "--disable-extensions", "--no-first-run", "--mute-audio"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(tools[1]), options=options)
    seen = {}
    try:
        driver.get(url + "/user/login/")
        driver.find_element(By.NAME, "email").send_keys(viewer)
        driver.find_element(By.NAME, "password").send_keys(password)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit], input[type=submit]").click()
        WebDriverWait(driver, 60).until(lambda d: "/user/login" not in d.current_url)
        for kind, videos, height in ((RATING, 1, 1800), (RANKING, 4, 1450)):
            driver.set_window_size(1400, height)
            driver.get(f"{url}/projects/{metadata(pushed, f'{kind}_project_id')}/data?labeling=1")
            # the browser itself fetched every clip: metadata (duration) loaded from local-file serving
            WebDriverWait(driver, 120).until(lambda d, n=videos: d.execute_script(
                "const v = [...document.querySelectorAll('video')];"
                "return v.length === arguments[0] && v.every(e => e.readyState >= 1)", n))
            durations = driver.execute_script("return [...document.querySelectorAll('video')].map(v => v.duration)")
            time.sleep(2)  # let the rating widgets finish rendering
            shot = ARTIFACTS / ("labeling_interface.png" if kind == RATING else "ranking_interface.png")
            shot.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(shot))
            seen[kind] = (driver.execute_script("return document.body.innerText"), durations, shot)
    finally:
        driver.quit()
    text, durations, shot = seen[RATING]
    assert len(durations) == 1 and 1.0 < durations[0] < 2.0
    assert re.search(r"Clip [0-9a-f]{10}", text)
    assert all(title in text for title in ASPECT_TITLES.values())
    assert "4 = a good match with a few small slips in shape or timing" in text  # every level has its words
    text_ranking, durations_ranking, shot_ranking = seen[RANKING]
    assert len(durations_ranking) == 4 and all(1.0 < d < 2.0 for d in durations_ranking)
    assert re.search(r"Item [0-9a-f]{10}: rank the 4 versions", text_ranking)
    assert all(f"Video {letter}" in text_ranking for letter in "ABCD")
    for words in (text, text_ranking):
        assert NAMES.search(words) is None
    for png in (shot, shot_ranking):
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 50_000
