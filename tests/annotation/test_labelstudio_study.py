"""A study on the real Label Studio server (tests/annotation/conftest.py), as annotators meet it.

Three annotators sign up and work through each project's queue with their own tokens (the
labelling stream's ``next`` call, never the admin API); the queue offers every task to each of
them exactly once and a fourth annotator gets nothing. Nothing an annotator can read names a
sample or a version. The export maps the opaque ids back, keeps each person's latest
annotation, rejects an inconsistent ranking with its reason, keeps emails out of the tables and
stores Label Studio's raw JSON next to them.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import dagster as dg
import pytest

pytest.importorskip("label_studio", reason="label-studio not installed (extra: annotation)")
pytest.importorskip("label_studio_sdk", reason="label-studio-sdk not installed (extra: annotation)")

from agreement_example import ANNOTATORS, CLIPS, RANKINGS, SAMPLES, VERSIONS, ratings
from labelstudio_annotator import Annotator, hand_example_answers, names_pattern
from labelstudio_server import write_config

from annotation.blinding import load_blinding
from annotation.labelstudio_client import RANKING, RATING, AnnotationClient, project_titles
from annotation.locations import annotation_dir, blinding_file, export_folder, media_root, server_token, server_url
from annotation.rubric import ranking_config, ranking_result, rating_config, rating_result, rubric_version
from annotation.tables import read_table
from annotation.versions import AnnotationInputError
from assets.annotation import annotation_tasks, human_scores
from assets.resources import PipelineSettings

pytestmark = pytest.mark.slow

NAMES = names_pattern(VERSIONS + SAMPLES)


def metadata(result: dg.MaterializeResult, key: str):
    value = result.metadata[key]
    return getattr(value, "value", value)


def email(annotator: str) -> str:
    return f"{annotator}-study@example.com"


def test_queue_blinding_and_export(ls, tmp_path):
    config_path = write_config(tmp_path / "config.yaml", ls["data"], ls["port"], ls["versions"], "study-test")
    settings = PipelineSettings(config_path=str(config_path))
    config = settings.load()
    url = server_url(config.annotation)

    # two projects: a rating task per clip, a ranking task per sample; a second push adds nothing
    first = annotation_tasks(dg.build_asset_context(), settings)
    assert (metadata(first, "rating_added"), metadata(first, "ranking_added")) == (8, 2)
    again = annotation_tasks(dg.build_asset_context(), settings)
    assert (metadata(again, "rating_added"), metadata(again, "ranking_added")) == (0, 0)
    admin = AnnotationClient(url, server_token(config))
    projects = {kind: admin.find_project(title) for kind, title in project_titles(config).items()}
    pid = {kind: p.id for kind, p in projects.items()}
    for project in projects.values():
        assert (project.maximum_annotations, project.overlap_cohort_percentage, project.sampling) == (
            3, 100, "Uniform sampling")
    tasks = {kind: sorted(admin.tasks(p), key=lambda t: t.id) for kind, p in projects.items()}
    assert all(t.overlap == 3 for kind in tasks for t in tasks[kind])

    # the private mapping: outside the served root, its folder closed to others; import order seeded
    path = blinding_file(config)
    assert media_root(config) not in path.parents
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    blinding = load_blinding(path, config.annotation.seed)
    imported = [blinding.clips[t.data["clip"]] for t in tasks[RATING]]
    assert imported == blinding.shuffled(CLIPS, RATING) and imported != sorted(CLIPS)
    for task in tasks[RANKING]:
        item = blinding.items[task.data["item"]]
        assert sorted(blinding.clips[c] for c in item.clips) == [(item.sample, v) for v in VERSIONS]
    slot_orders = {tuple(blinding.clips[c][1] for c in item.clips) for item in blinding.items.values()}
    assert len(slot_orders) == 2  # the two samples show their versions in different places

    # three annotators work through both queues with their own tokens
    annotators = [Annotator(url, email(a)) for a in ANNOTATORS]
    for a, annotator in enumerate(annotators):
        rate, rank = hand_example_answers(blinding, a)
        got = {RATING: annotator.label_all(pid[RATING], rate), RANKING: annotator.label_all(pid[RANKING], rank)}
        for kind in (RATING, RANKING):
            assert sorted(t["id"] for t in got[kind]) == [t.id for t in tasks[kind]], (annotator.email, kind)
        if a == 0:  # nobody else has started: every task came from the uniform random draw
            assert {t["queue"] for t in got[RATING]} == {"Uniform random queue"}
    fourth = Annotator(url, "ann4-study@example.com")
    assert fourth.next_task(pid[RATING]) is None and fourth.next_task(pid[RANKING]) is None

    # nothing an annotator can read names a sample or a version
    for annotator in annotators + [fourth]:
        for kind in (RATING, RANKING):
            annotator.read(f"/api/tasks?project={pid[kind]}&fields=all&page_size=100")
            annotator.read(f"/api/projects/{pid[kind]}")
            annotator.read(f"/api/storages/localfiles?project={pid[kind]}")
            annotator.read(f"/api/projects/{pid[kind]}/export?exportType=JSON&download_all_tasks=true")
        leaks = [m.group(0) for text in annotator.received for m in NAMES.finditer(text)]
        assert leaks == [], (annotator.email, leaks[:5])
    reader = annotators[0]
    for task in tasks[RATING]:
        video = task.data["video"]
        assert NAMES.search(video) is None and video.startswith("/data/local-files/?d=blind/")
        status, body, headers = reader.request("GET", video)
        assert status == 200 and headers["Content-Type"] == "video/mp4"
        assert NAMES.search(headers.get("Content-Disposition", "")) is None
        sample, version = blinding.clips[task.data["clip"]]
        assert body == (ls["versions"] / sample / f"{version}.mp4").read_bytes()
    status, _, _ = reader.request("GET", "/data/local-files/?d=versions/s1/g1.mp4")
    assert status == 404  # only the blinded links are served

    # a second annotation by the same person: the latest wins; an inconsistent ranking is rejected
    redo = tasks[RATING][0]
    redo_clip = blinding.clips[redo.data["clip"]]
    first_scores = ratings(0, CLIPS.index(redo_clip))
    redone = {**first_scores, "lip_sync": first_scores["lip_sync"] % 5 + 1}
    annotators[0].submit(pid[RATING], redo.id, rating_result(redone))
    bad_item = blinding.items[tasks[RANKING][0].data["item"]]
    fourth.submit(pid[RANKING], tasks[RANKING][0].id, ranking_result({1: 1, 2: 3, 3: 3, 4: 4}))
    with pytest.raises(AnnotationInputError, match="holds annotations made with rubric version"):
        admin.ensure_project(project_titles(config)[RATING], rating_config().replace("Clip $clip", "Clip: $clip"),
                             3, "uniform")

    result = human_scores(dg.build_asset_context(), settings)
    blinding = load_blinding(path, config.annotation.seed)
    rater = {a: blinding.annotator_id(email(a)) for a in ANNOTATORS}
    expected = []
    for a, annotator in enumerate(ANNOTATORS):
        for c, (sample, version) in enumerate(CLIPS):
            scores = redone if (a == 0 and (sample, version) == redo_clip) else ratings(a, c)
            expected += [(rater[annotator], sample, version, k, float(v)) for k, v in scores.items()]
            expected.append((rater[annotator], sample, version, "rank", float(RANKINGS[annotator][sample][version])))
    rows = read_table(annotation_dir(config) / "human_scores.csv")
    assert sorted((r["annotator"], r["sample"], r["version"], r["aspect"], r["score"]) for r in rows) == sorted(expected)
    versions = {RATING: rubric_version(rating_config()), RANKING: rubric_version(ranking_config(4))}
    assert all(r["rubric_version"] == versions[RANKING if r["aspect"] == "rank" else RATING] for r in rows)
    assert all(r["lead_time_s"] >= 5.0 and r["annotated_at"] for r in rows)
    assert metadata(result, "superseded") == 1 and metadata(result, "rejected") == 1
    (rejection,) = read_table(annotation_dir(config) / "human_rejections.csv")
    assert (rejection["annotator"], rejection["form"], rejection["sample"]) == (
        blinding.annotator_id("ann4-study@example.com"), RANKING, bad_item.sample)
    assert "rank 3 follows 1 better video" in rejection["reason"]

    # Label Studio's own export beside the tables; no email in any of them
    folder = export_folder(config)
    raw = json.loads((folder / "rating.json").read_text())
    assert sum(len(t["annotations"]) for t in raw) == 8 * 3 + 1
    manifest = json.loads((folder / "snapshot.json").read_text())
    assert {k: p["rubric_version"] for k, p in manifest["projects"].items()} == versions
    assert manifest["seed"] == config.annotation.seed
    shared = [annotation_dir(config) / "human_scores.csv", annotation_dir(config) / "human_rejections.csv",
              *sorted(folder.iterdir())]
    for file in shared:
        assert "@" not in Path(file).read_text(), file
    assert set(rater.values()) <= set(blinding.annotators) and blinding.annotators[rater["ann1"]] == email("ann1")

    # a project holding tasks from before blinding (no clip id) is refused, not mixed in
    legacy = admin.ensure_project("legacy-study-test", rating_config(), 3, "uniform")
    admin.ls.projects.import_tasks(id=legacy.id, request=[{"data": {"sample": "s1", "version": "g1", "video": "x"}}])
    with pytest.raises(AnnotationInputError, match="holds tasks without 'clip' in their data"):
        admin.import_tasks(legacy, [{"clip": "0123456789", "video": "y"}], "clip")
