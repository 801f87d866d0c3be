"""Label Studio pieces that need no server: the token file, the two forms and their answers, the
weak-order check, blinding, the export rules and the server's command line. The real-server tests
are tests/annotation/test_labelstudio_study.py and test_annotation_loop.py."""

from __future__ import annotations

import stat
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from annotation.aspects import ASPECTS, rubric_text
from annotation.blinding import BlindingError, load_blinding, open_blinding
from annotation.labelstudio_client import (
    RANKING,
    RATING,
    StudyExport,
    export_rows,
    latest_annotations,
    link_blind_media,
    local_file_url,
    ranking_size,
)
from annotation.labelstudio_server import LabelStudioServer, load_or_create_token
from annotation.rubric import (
    ranking_config,
    ranking_problem,
    ranking_result,
    ranks_from_result,
    rating_config,
    rating_problem,
    rating_result,
    ratings_from_result,
    rubric_version,
)
from annotation.versions import AnnotationInputError, VersionClip


def test_token_file_is_private(tmp_path):
    token = load_or_create_token(tmp_path)
    assert len(token) == 40 and int(token, 16) >= 0
    assert stat.S_IMODE((tmp_path / "api_token").stat().st_mode) == 0o600
    assert load_or_create_token(tmp_path) == token


def test_rating_form_shows_one_clip_and_every_level_of_every_rubric():
    view = ET.fromstring(rating_config())
    assert [v.get("value") for v in view.iter("Video")] == ["$video"]
    assert [h.get("value") for h in view.iter("Header")][0] == "Clip $clip"
    for aspect in ASPECTS:
        (rating,) = [r for r in view.iter("Rating") if r.get("name") == aspect]
        assert rating.get("maxRating") == "5" and rating.get("required") == "true"
        (text,) = [t for t in view.iter("Text") if t.get("name") == f"{aspect}_rubric"]
        assert [line.split(" = ")[0] for line in text.get("value").splitlines()[1:]] == ["5", "4", "3", "2", "1"]
        assert text.get("value") == rubric_text(aspect)


def test_ranking_form_shows_every_version_side_by_side():
    view = ET.fromstring(ranking_config(4))
    videos = [v.get("name") for v in view.iter("Video")]
    assert videos == ["video_1", "video_2", "video_3", "video_4"]
    choices = {c.get("name"): (c.get("toName"), [x.get("value") for x in c.iter("Choice")]) for c in view.iter("Choices")}
    assert choices == {f"rank_{k}": (f"video_{k}", ["1", "2", "3", "4"]) for k in range(1, 5)}
    assert all(c.get("required") is None for c in view.iter("Choices"))  # a video may stay unranked
    headers = [h.get("value") for h in view.iter("Header")]
    assert headers[1:] == ["Video A", "Video B", "Video C", "Video D"]
    with pytest.raises(ValueError, match="2..20 versions"):
        ranking_config(1)
    assert rubric_version(ranking_config(4)) != rubric_version(ranking_config(3)) != rubric_version(rating_config())


def test_answers_round_trip_through_result_lists():
    scores = {"lip_sync": 4, "expressiveness": 2, "motion_quality": 5}
    result = rating_result(scores) + [{"from_name": "comment", "value": {"text": ["nice"]}}]
    assert ratings_from_result(result) == scores
    assert ranks_from_result(ranking_result({1: 2, 3: 1})) == {1: 2, 3: 1}
    assert rating_problem(scores) is None
    assert rating_problem({"lip_sync": 4}) == "aspects not rated: expressiveness, motion_quality"
    assert "outside 1..5" in rating_problem({**scores, "lip_sync": 7})


@pytest.mark.parametrize("ranks", [
    {1: 1, 2: 2, 3: 3, 4: 4},
    {1: 2, 2: 1, 3: 2, 4: 3},  # dense ties
    {1: 2, 2: 1, 3: 2, 4: 4},  # competition ties
    {1: 1, 2: 1, 3: 1, 4: 1},  # all tied
    {2: 1, 4: 2},  # partial: A and C unranked
    {1: 1, 2: 1, 3: 3},  # partial, competition
])
def test_weak_orders_are_accepted(ranks):
    assert ranking_problem(ranks, 4) is None


@pytest.mark.parametrize("ranks, reason", [
    ({1: 1, 2: 3, 3: 3, 4: 4}, "rank 3 follows 1 better video(s), so it should be 2"),
    ({1: 2, 2: 2, 3: 3}, "rank 2 follows 0 better video(s), so it should be 1"),
    ({1: 1, 2: 2, 3: 4}, "rank 4 follows 2 better video(s), so it should be 3"),
    ({1: 1, 2: 1, 3: 2, 4: 4}, "mix dense and competition style"),
    ({1: 1}, "1 video(s) ranked: at least two are needed"),
    ({}, "0 video(s) ranked"),
    ({1: 1, 5: 2}, "slots [5]"),
    ({1: 1, 2: 5}, "ranks [5] outside 1..4"),
])
def test_inconsistent_rankings_are_refused_with_the_reason(ranks, reason):
    assert reason in ranking_problem(ranks, 4)


def test_blinding_ids_are_opaque_stable_and_private(tmp_path):
    path = tmp_path / "private" / "blinding.json"
    with open_blinding(path, seed=7) as blinding:
        clip = blinding.clip_id("s1", "g1")
        item = blinding.ranking_item("s1", ["g1", "g2", "g3", "orig"])
        rater = blinding.annotator_id("Ann@Example.com")
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(clip) == 10 and int(clip, 16) >= 0 and clip not in ("s1", "g1")
    again = load_blinding(path, seed=7)
    assert again.clip_id("s1", "g1") == clip and again.clips[clip] == ("s1", "g1")
    assert again.ranking_item("s1", ["orig", "g3", "g2", "g1"]) == item
    assert again.annotator_id("ann@example.com") == rater and again.annotators[rater] == "ann@example.com"
    assert sorted(again.clips[c] for c in item.clips) == [("s1", v) for v in ("g1", "g2", "g3", "orig")]
    other = load_blinding(tmp_path / "other.json", seed=7)  # another study: its own salt, other ids
    assert other.clip_id("s1", "g1") != clip
    with pytest.raises(BlindingError, match="made with seed 7 but annotation.seed is 8"):
        load_blinding(path, seed=8)
    with pytest.raises(BlindingError, match="had versions .* and now has"):
        again.ranking_item("s1", ["g1", "g2"])


def test_version_places_in_the_ranking_view_are_seeded_per_sample(tmp_path):
    versions = ["g1", "g2", "g3", "orig"]
    with open_blinding(tmp_path / "a.json", seed=0) as a:
        first = [tuple(a.clips[c][1] for c in a.ranking_item(f"s{i}", versions).clips) for i in range(24)]
    with open_blinding(tmp_path / "b.json", seed=0) as b:
        same_seed = [tuple(b.clips[c][1] for c in b.ranking_item(f"s{i}", versions).clips) for i in range(24)]
    with open_blinding(tmp_path / "c.json", seed=1) as c:
        other_seed = [tuple(c.clips[x][1] for x in c.ranking_item(f"s{i}", versions).clips) for i in range(24)]
    assert first == same_seed and first != other_seed
    assert {order[0] for order in first} == set(versions)  # every version is sometimes video A
    assert a.shuffled(["x", "y", "z", "w"], "rating") == b.shuffled(["w", "z", "y", "x"], "rating")


def test_blind_links_carry_the_clip_id_only(tmp_path):
    clip = tmp_path / "versions" / "s1" / "g1.mp4"
    clip.parent.mkdir(parents=True)
    clip.write_bytes(b"not really a video")
    root = tmp_path / "media"
    with open_blinding(tmp_path / "private" / "blinding.json", seed=0) as blinding:
        links = link_blind_media(blinding, [VersionClip("s1", "g1", clip)], root / "blind")
        cid = blinding.clip_id("s1", "g1")
    assert list(links) == [cid] and links[cid].read_bytes() == clip.read_bytes()
    assert local_file_url(links[cid], root) == f"/data/local-files/?d=blind/{cid}.mp4"


def test_ranking_size_needs_one_size_for_every_sample(tmp_path):
    def clips(counts):
        return [VersionClip(f"s{i}", f"v{k}", Path("x.mp4")) for i, n in enumerate(counts) for k in range(n)]

    assert ranking_size(clips([4, 4, 1]), 4) == 4  # a single-version sample gets no ranking task
    assert ranking_size(clips([1, 1]), 4) is None
    with pytest.raises(AnnotationInputError, match=r"3 \(e.g. 's1': 1 samples\), 4 \(e.g. 's0': 1 samples\)"):
        ranking_size(clips([4, 3]), 4)
    with pytest.raises(AnnotationInputError, match="5 versions but annotation.max_versions is 4"):
        ranking_size(clips([5]), 4)


def _annotation(id_, who, updated, result, cancelled=False):
    return {"id": id_, "completed_by": who, "updated_at": updated, "result": result, "was_cancelled": cancelled,
            "lead_time": 3.5}


def test_the_latest_annotation_of_a_person_wins():
    task = {"annotations": [
        _annotation(1, 10, "2026-01-01T10:00:00Z", "first"),
        _annotation(2, 11, "2026-01-01T10:01:00Z", "other person"),
        _annotation(3, 10, "2026-01-01T10:05:00Z", "second"),
        _annotation(4, 10, "2026-01-01T10:09:00Z", "skipped", cancelled=True),
    ]}
    kept, dropped = latest_annotations(task)
    assert [a["result"] for a in kept] == ["other person", "second"] and dropped == 1


def test_export_maps_ids_back_and_rejects_with_reasons(tmp_path):
    with open_blinding(tmp_path / "blinding.json", seed=0) as blinding:
        clips = {v: blinding.clip_id("s1", v) for v in ("g1", "orig")}
        item = blinding.ranking_item("s1", ["g1", "orig"])
        scores = {"lip_sync": 5, "expressiveness": 3, "motion_quality": 4}
        rating_raw = [
            {"id": 1, "data": {"clip": clips["g1"]}, "annotations": [_annotation(7, 1, "t1", rating_result(scores))]},
            {"id": 2, "data": {"clip": clips["orig"]},
             "annotations": [_annotation(8, 1, "t1", rating_result({"lip_sync": 2}))]},
            {"id": 3, "data": {"clip": "0000000000"}, "annotations": [_annotation(9, 1, "t1", rating_result(scores))]},
        ]
        slot_of = {blinding.clips[c][1]: k for k, c in enumerate(item.clips, start=1)}
        ranking_raw = [{"id": 4, "data": {"item": item.item}, "annotations": [
            _annotation(10, 1, "t1", ranking_result({slot_of["orig"]: 1, slot_of["g1"]: 2})),
            _annotation(11, 2, "t1", ranking_result({slot_of["orig"]: 2})),
        ]}]
        out = StudyExport()
        users = {1: "one@example.com"}
        export_rows(rating_raw, RATING, blinding, users, "r1", out)
        export_rows(ranking_raw, RANKING, blinding, users, "r2", out)
        one, two = blinding.annotator_id("one@example.com"), blinding.annotator_id("labelstudio-user-2")
    assert sorted((r["annotator"], r["sample"], r["version"], r["aspect"], r["score"], r["rubric_version"])
                  for r in out.rows) == sorted([
        (one, "s1", "g1", "lip_sync", 5, "r1"), (one, "s1", "g1", "expressiveness", 3, "r1"),
        (one, "s1", "g1", "motion_quality", 4, "r1"),
        (one, "s1", "orig", "rank", 1, "r2"), (one, "s1", "g1", "rank", 2, "r2")])
    assert all(r["lead_time_s"] == 3.5 for r in out.rows)
    assert sorted({(r["task_id"], r["annotation_id"]) for r in out.rows}) == [(1, 7), (4, 10)]
    assert [(r["annotator"], r["task_id"], r["sample"], r["reason"]) for r in out.rejections] == [
        (one, 2, "s1", "aspects not rated: expressiveness, motion_quality"),
        (one, 3, None, "clip id '0000000000' is not in the blinding file"),
        (two, 4, "s1", "1 video(s) ranked: at least two are needed for any comparison"),
    ]


def test_server_command_for_remote_annotators(tmp_path):
    local = LabelStudioServer(tmp_path / "a", port=8123)
    assert local._command()[local._command().index("--internal-host") + 1] == "127.0.0.1"
    assert "LABEL_STUDIO_HOST" not in local._env() and local.url == "http://127.0.0.1:8123"
    remote = LabelStudioServer(tmp_path / "b", port=8123, host="0.0.0.0",
                               public_url="https://ratings.example.org/")
    assert remote._command()[remote._command().index("--internal-host") + 1] == "0.0.0.0"
    env = remote._env()
    assert env["LABEL_STUDIO_HOST"] == "https://ratings.example.org"
    assert env["CSRF_TRUSTED_ORIGINS"] == "https://ratings.example.org" and env["SESSION_COOKIE_SECURE"] == "1"
    assert remote.url == "http://127.0.0.1:8123"  # this machine still reaches it on loopback
    with pytest.raises(ValueError, match="http"):
        LabelStudioServer(tmp_path / "c", public_url="ratings.example.org")._env()
