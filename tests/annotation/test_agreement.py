"""Hand-checked tests for annotation.agreement."""

from __future__ import annotations

import math
from itertools import permutations

import numpy as np
import pytest
from agreement_example import (
    ANNOTATORS,
    CLIPS,
    EXPECTED_ALL_TIE,
    EXPECTED_DISAGREED,
    EXPECTED_JUDGE,
    EXPECTED_UNANIMOUS,
    RANKINGS,
    SCORES,
    human_rows,
)

from annotation.agreement import (
    annotator_monitoring,
    classify_pairs,
    evaluate_judge,
    krippendorff_alpha_ordinal,
    latest_rows,
    mean_scores_table,
    pair_outcomes,
    per_aspect_alpha,
    predictor_from_scores,
    rankings_from_rows,
    scores_to_prediction,
    unanimous_pairs,
)
from annotation.report import compute_agreement

NAN = float("nan")

# ----------------------------------------------------------------------------------------
# Krippendorff's alpha
# ----------------------------------------------------------------------------------------

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", example C:
# 4 observers x 12 units, missing values. Published: nominal .743, ordinal .815,
# interval .849, ratio .797.
K2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
    [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
]


def _as_ratings(matrix):
    return {
        f"obs{i}": {f"u{j}": v for j, v in enumerate(row) if not math.isnan(v)}
        for i, row in enumerate(matrix)
    }


def _reference_alpha_ordinal(matrix) -> float:
    """Independent coincidence-matrix implementation (Krippendorff 2011, section C/D)."""
    data = np.asarray(matrix, dtype=float)
    values = sorted(set(data[~np.isnan(data)].tolist()))
    idx = {v: k for k, v in enumerate(values)}
    K = len(values)
    o = np.zeros((K, K))
    for col in data.T:
        vals = col[~np.isnan(col)]
        m = len(vals)
        if m < 2:
            continue
        for i, j in permutations(range(m), 2):
            o[idx[vals[i]], idx[vals[j]]] += 1.0 / (m - 1)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    d = np.zeros((K, K))
    for c in range(K):
        for k in range(K):
            lo, hi = min(c, k), max(c, k)
            d[c, k] = (n_c[lo:hi + 1].sum() - (n_c[c] + n_c[k]) / 2.0) ** 2
    d_o = (o * d).sum()
    d_e = (np.outer(n_c, n_c) * d).sum() / (n - 1)
    return 1.0 - d_o / d_e


def test_alpha_textbook_value():
    alpha = krippendorff_alpha_ordinal(_as_ratings(K2011))
    assert alpha == pytest.approx(0.815, abs=5e-4)  # published value
    assert alpha == pytest.approx(_reference_alpha_ordinal(K2011), abs=1e-12)


def test_alpha_perfect_agreement_is_one():
    r = {"x": {"i1": 1, "i2": 3, "i3": 5}, "y": {"i1": 1, "i2": 3, "i3": 5}, "z": {"i1": 1, "i2": 3}}
    assert krippendorff_alpha_ordinal(r) == pytest.approx(1.0)


def test_alpha_systematic_disagreement_negative():
    r = {"x": {f"i{k}": k for k in range(1, 6)}, "y": {f"i{k}": 6 - k for k in range(1, 6)}}
    alpha = krippendorff_alpha_ordinal(r)
    ref = _reference_alpha_ordinal([[1, 2, 3, 4, 5], [5, 4, 3, 2, 1]])
    assert alpha < 0
    assert alpha == pytest.approx(ref, abs=1e-12)


def test_alpha_invariant_to_annotator_and_item_order():
    r = _as_ratings(K2011)
    base = krippendorff_alpha_ordinal(r)
    rev = {a: dict(reversed(list(r[a].items()))) for a in reversed(list(r))}
    renamed = {f"z{a}": v for a, v in r.items()}
    assert krippendorff_alpha_ordinal(rev) == pytest.approx(base, abs=1e-12)
    assert krippendorff_alpha_ordinal(renamed) == pytest.approx(base, abs=1e-12)


def test_alpha_undefined_cases_are_nan():
    assert math.isnan(krippendorff_alpha_ordinal({}))
    # only one distinct value
    assert math.isnan(krippendorff_alpha_ordinal({"x": {"i": 3, "j": 3}, "y": {"i": 3, "j": 3}}))
    # no item rated twice
    assert math.isnan(krippendorff_alpha_ordinal({"x": {"i": 1}, "y": {"j": 2}}))


def test_per_aspect_alpha_from_rows():
    rows = []
    for i, row in enumerate(K2011):
        for j, v in enumerate(row):
            if not math.isnan(v):
                # textbook data on lip_sync; perfect agreement on expressiveness
                rows.append(dict(annotator=f"a{i}", sample=f"s{j // 4}", version=f"v{j % 4}",
                                 aspect="lip_sync", score=v))
                rows.append(dict(annotator=f"a{i}", sample=f"s{j // 4}", version=f"v{j % 4}",
                                 aspect="expressiveness", score=1 + j % 5))
    out = per_aspect_alpha(rows)
    assert list(out) == ["lip_sync", "expressiveness"]
    assert out["lip_sync"] == pytest.approx(0.815, abs=5e-4)
    assert out["expressiveness"] == pytest.approx(1.0)

    # The same annotator rating a clip twice counts once, with the later rating: giving a0's
    # (s0, v0) lip_sync a 5 instead of 1 equals the textbook data with that cell changed.
    changed = [list(row) for row in K2011]
    changed[0][0] = 5
    again = dict(rows[0], score=5)
    assert per_aspect_alpha(rows + [again])["lip_sync"] == pytest.approx(_reference_alpha_ordinal(changed), abs=1e-12)
    assert per_aspect_alpha(rows + [again])["lip_sync"] != pytest.approx(0.815, abs=5e-4)


# ----------------------------------------------------------------------------------------
# Pairs and judge accuracy: 3 annotators x 2 samples x 4 versions
# ----------------------------------------------------------------------------------------
# The hand example (3 annotators x 2 samples x 4 versions) lives in tests/agreement_example.py.


def test_pair_outcomes_per_annotator():
    out = pair_outcomes(RANKINGS)
    assert len(out) == 12
    assert out[("s1", "g2", "g3")] == {"ann1": "A", "ann2": "B", "ann3": "tie"}
    assert out[("s2", "g1", "orig")] == {"ann1": "A", "ann2": "A", "ann3": "B"}
    assert out[("s2", "g2", "g3")] == {"ann1": "tie", "ann2": "tie", "ann3": "tie"}
    assert all(a < b for (_, a, b) in out)


def test_pairs_sorted_into_unanimous_all_tie_and_disagreed():
    classes = classify_pairs(RANKINGS, min_annotators=3)
    assert [(p["sample"], p["a"], p["b"], p["winner"]) for p in classes["unanimous"]] == EXPECTED_UNANIMOUS
    assert [(p["sample"], p["a"], p["b"]) for p in classes["all_tie"]] == EXPECTED_ALL_TIE
    assert classes["disagreed"] == EXPECTED_DISAGREED and classes["too_few"] == 0
    assert all(p["n_annotators"] == 3 for p in classes["unanimous"])
    assert unanimous_pairs(RANKINGS, min_annotators=3) == classes["unanimous"]
    # four annotators required, three ranked: every pair has too few
    four = classify_pairs(RANKINGS, min_annotators=4)
    assert four["unanimous"] == [] and four["too_few"] == 12
    with pytest.raises(ValueError, match="at least 1"):
        classify_pairs(RANKINGS, min_annotators=0)


def test_evaluate_judge_hand_example():
    pairs = unanimous_pairs(RANKINGS, min_annotators=3)
    res = evaluate_judge(pairs, predictor_from_scores(SCORES))
    for key, value in EXPECTED_JUDGE.items():
        assert res[key] == pytest.approx(value), key


# The oracle: minus the mean rank the three annotators gave (hand-computed from RANKINGS):
# s1 orig -1, g1 -2, g2 -10/3, g3 -10/3; s2 orig -5/3, g1 -4/3, g2 -3, g3 -3. It prefers the
# humans' video on all 9 unanimous pairs; its ties (s1 g2=g3, s2 g2=g3) fall on a disagreed pair
# and on the all-tie pair, which are not scored.
ORACLE = {("s1", "orig"): -1.0, ("s1", "g1"): -2.0, ("s1", "g2"): -10 / 3, ("s1", "g3"): -10 / 3,
          ("s2", "orig"): -5 / 3, ("s2", "g1"): -4 / 3, ("s2", "g2"): -3.0, ("s2", "g3"): -3.0}


def test_oracle_scores_exactly_one_on_a_study_with_all_tie_pairs():
    mean_rank = {(s, v): -sum(RANKINGS[a][s][v] for a in ANNOTATORS) / 3 for s, v in CLIPS}
    assert mean_rank == pytest.approx(ORACLE)
    pairs = unanimous_pairs(RANKINGS, min_annotators=3)
    res = evaluate_judge(pairs, predictor_from_scores(ORACLE))
    assert res["accuracy"] == 1.0 and res["coverage"] == 1.0 and res["accuracy_decided"] == 1.0
    assert res["n_pairs"] == 9 and res["n_ties"] == 0
    # the same oracle as a judge in the report: exactly 1.0 as well
    rows = [{"judge": "oracle", "sample": s, "version": v, "aspect": "overall", "score": x, "error": None}
            for (s, v), x in ORACLE.items()]
    report = compute_agreement(human_rows(), rows, [], min_annotators=3)
    assert report["pairs_all_tie"] == 1 and report["pairs_unanimous"] == 9
    assert report["judges"]["oracle"]["accuracy"] == 1.0 and report["judges"]["oracle"]["coverage"] == 1.0


def test_failed_calls_lower_coverage_and_never_earn_credit():
    """The oracle's calls fail on both originals: the 5 unanimous pairs with an original (s1: g1, g2,
    g3 vs orig; s2: g2, g3 vs orig) are failures, the other 4 are answered and right."""
    rows = [{"judge": "oracle", "sample": s, "version": v, "aspect": "overall",
             "score": None if v == "orig" else x, "error": "BackendError: HTTP 500" if v == "orig" else None}
            for (s, v), x in ORACLE.items()]
    judged = compute_agreement(human_rows(), rows, [], min_annotators=3)["judges"]["oracle"]
    assert judged["failed_calls"] == 2
    assert judged["n_failed"] == 5 and judged["n_answered"] == 4
    assert judged["coverage"] == pytest.approx(4 / 9)
    assert judged["accuracy"] == pytest.approx(4 / 9)  # failures earn nothing (as ties they would add 2.5)
    assert judged["accuracy_answered"] == 1.0
    # a judge that is always wrong stays at 0 however many of its calls fail
    wrong = [dict(r, judge="backwards", score=None if r["score"] is None else -r["score"]) for r in rows]
    backwards = compute_agreement(human_rows(), wrong, [], min_annotators=3)["judges"]["backwards"]
    assert backwards["accuracy"] == 0.0 and backwards["coverage"] == pytest.approx(4 / 9)
    # a pairwise judge whose every call failed: coverage 0, accuracy 0, not one half
    pair_rows = [{"judge": "pairwise_direct", "sample": s, "a": a, "b": b, "prediction": None,
                  "a_shown_first": None, "error": "JudgeParseError: no JSON"}
                 for (s, a, b) in pair_outcomes(RANKINGS)]
    dead = compute_agreement(human_rows(), [], pair_rows, min_annotators=3)["judges"]["pairwise_direct"]
    assert dead["coverage"] == 0.0 and dead["accuracy"] == 0.0 and dead["failed_calls"] == 12
    assert dead["accuracy_answered"] is None  # undefined, reported as null


def test_evaluate_judge_rejects_bad_input():
    pairs = unanimous_pairs(RANKINGS, min_annotators=3)
    with pytest.raises(ValueError, match="prediction"):
        evaluate_judge(pairs, lambda s, a, b: "left")
    with pytest.raises(ValueError, match="preferred video"):
        evaluate_judge([{"sample": "s", "a": "x", "b": "y", "winner": "tie"}], lambda s, a, b: "A")
    empty = evaluate_judge([], lambda s, a, b: "A")
    assert empty["n_pairs"] == 0 and math.isnan(empty["accuracy"]) and math.isnan(empty["coverage"])


def test_sample_ranked_by_some_annotators():
    rankings = {
        "ann1": {"s3": {"orig": 1, "g1": 2, "g2": 2}, "s4": {"orig": 1, "g1": 2}},
        "ann2": {"s3": {"orig": 1, "g1": 3, "g2": 2}},
        "ann3": {},
    }
    # s3 ranked by ann1 + ann2 only:
    #   (g1,g2)   2=2 vs 3>2 -> tie,B      disagreed
    #   (g1,orig) B,B                      unanimous B
    #   (g2,orig) B,B                      unanimous B
    # s4 ranked by ann1 only -> too few for min_annotators=2
    got = [(p["sample"], p["a"], p["b"], p["winner"], p["n_annotators"])
           for p in unanimous_pairs(rankings, min_annotators=2)]
    assert got == [("s3", "g1", "orig", "B", 2), ("s3", "g2", "orig", "B", 2)]
    assert classify_pairs(rankings, min_annotators=2)["too_few"] == 1

    got1 = [(p["sample"], p["a"], p["b"], p["winner"]) for p in unanimous_pairs(rankings, min_annotators=1)]
    assert ("s4", "g1", "orig", "B") in got1 and len(got1) == 3

    # a version missing from one annotator's ranking: only annotators with both versions count
    rankings["ann2"]["s3"].pop("g1")
    out = pair_outcomes(rankings)
    assert out[("s3", "g1", "orig")] == {"ann1": "B"}
    assert out[("s3", "g2", "orig")] == {"ann1": "B", "ann2": "B"}


# ----------------------------------------------------------------------------------------
# Repeated submissions: the latest wins
# ----------------------------------------------------------------------------------------


def _row(annotator, version, aspect, score, annotation_id=None, annotated_at=None, task_id=1):
    return {"annotator": annotator, "task_id": task_id, "sample": "s1", "version": version, "aspect": aspect,
            "score": score, "annotation_id": annotation_id, "annotated_at": annotated_at}


def test_latest_submission_wins_whole():
    rows = [
        _row("x", "g1", "lip_sync", 5, 11, "2025-01-02T10:00:00Z"),
        _row("x", "g1", "rank", 1, 11, "2025-01-02T10:00:00Z"),
        # an older annotation of the same task, exported after the newer one: ignored, all of it
        _row("x", "g1", "lip_sync", 1, 7, "2025-01-01T09:00:00Z"),
        _row("x", "g1", "expressiveness", 1, 7, "2025-01-01T09:00:00Z"),
        _row("x", "g1", "rank", 4, 7, "2025-01-01T09:00:00Z"),
        _row("y", "g1", "lip_sync", 2, 12, "2025-01-01T08:00:00Z"),
    ]
    kept, dropped = latest_rows(rows)
    assert dropped == 3
    assert sorted((r["annotator"], r["aspect"], r["score"]) for r in kept) == [
        ("x", "lip_sync", 5), ("x", "rank", 1), ("y", "lip_sync", 2)]
    assert rankings_from_rows(rows) == {"x": {"s1": {"g1": 1.0}}}
    # same timestamp: the higher annotation id is the later one
    tied = [_row("x", "g1", "lip_sync", 3, 20, "t"), _row("x", "g1", "lip_sync", 4, 21, "t")]
    assert [r["score"] for r in latest_rows(tied)[0]] == [4]
    # the export's save time alone: the later save wins, whole (its missing aspect stays missing)
    saved = [_row("x", "g1", "lip_sync", 3, None, "2025-01-02"), _row("x", "g1", "lip_sync", 1, None, "2025-01-01"),
             _row("x", "g1", "expressiveness", 1, None, "2025-01-01")]
    assert [(r["aspect"], r["score"]) for r in latest_rows(saved)[0]] == [("lip_sync", 3)]
    # rows without ids: the last row given for a (annotator, clip, aspect) wins
    plain = [_row("x", "g1", "lip_sync", 3), _row("x", "g1", "lip_sync", 2)]
    assert [r["score"] for r in latest_rows(plain)[0]] == [2]


def test_duplicate_submissions_reach_the_report_once():
    """A whole second pass by ann3 with other scores and ranks, filed later: the report equals the
    study with ann3's second pass in place of the first, and nothing crashes."""
    def annotation_id(r, base):  # one Label Studio annotation per annotator and clip
        return base + 10 * ANNOTATORS.index(r["annotator"]) + CLIPS.index((r["sample"], r["version"]))

    first = [dict(r, annotation_id=annotation_id(r, 100), annotated_at="2025-01-01") for r in human_rows()]
    second = [dict(r, score=6 - r["score"] if r["aspect"] != "rank" else r["score"],
                   annotation_id=annotation_id(r, 900), annotated_at="2025-02-01")
              for r in human_rows() if r["annotator"] == "ann3"]
    report = compute_agreement(first + second, [], [], min_annotators=3)
    replaced = [r for r in first if r["annotator"] != "ann3"] + second
    assert report["duplicates_dropped"] == len(second)
    assert report["alpha_ordinal"] == compute_agreement(replaced, [], [], min_annotators=3)["alpha_ordinal"]
    assert report["alpha_ordinal"] != compute_agreement(first, [], [], min_annotators=3)["alpha_ordinal"]
    assert report["ratings"] == 3 * 8 * 3


# ----------------------------------------------------------------------------------------
# Per-annotator monitoring, on the hand example (tests/agreement_example.py)
# ----------------------------------------------------------------------------------------

GOLD = [
    {"sample": "s1", "version": "g1", "aspect": "lip_sync", "score": 5, "tolerance": 0},  # all gave 5
    {"sample": "s2", "version": "orig", "aspect": "expressiveness", "score": 3, "tolerance": 0},  # 2, 2, 3
    {"sample": "s1", "version": "orig", "aspect": "motion_quality", "score": 5, "tolerance": 1},  # all gave 4
]


def _timed_rows():
    """The example with Label Studio's lead time: ann1 spends 10, 20, .. 80 s on its 8 clips, ann2
    5 s on each, ann3's export has no lead time."""
    rows = []
    for r in human_rows():
        clip = CLIPS.index((r["sample"], r["version"]))
        seconds = {"ann1": 10.0 * (clip + 1), "ann2": 5.0, "ann3": None}[r["annotator"]]
        rows.append(dict(r, task_id=clip + 1, lead_time_s=seconds))
    return rows


def test_annotator_monitoring_hand_example():
    m = annotator_monitoring(_timed_rows(), GOLD)
    assert list(m) == list(ANNOTATORS)
    # leave-one-out alpha, expressiveness (lip_sync and motion_quality agree everywhere: 1 with or
    # without anyone). Without ann3 the rest agree on every clip: 1. Without ann1 (or ann2) only
    # clip 8 differs, (2, 3): n_2 = 9, n_3 = 7, n = 16, o_23 = o_32 = 1, so
    # alpha = 1 - (2 / 16) / (2 * 9 * 7 / (16 * 15)) = 1 - 5 / 21 = 16 / 21.
    everyone = 117 / 140
    assert m["ann3"]["alpha_without"]["expressiveness"] == pytest.approx(1.0)
    assert m["ann3"]["alpha_change"]["expressiveness"] == pytest.approx(1.0 - everyone)
    for annotator in ("ann1", "ann2"):
        assert m[annotator]["alpha_without"]["expressiveness"] == pytest.approx(16 / 21)
        assert m[annotator]["alpha_change"]["expressiveness"] == pytest.approx(16 / 21 - everyone)
    assert all(m[a]["alpha_change"]["lip_sync"] == pytest.approx(0.0) for a in ANNOTATORS)
    # ratings vs the other two when they agree: only clip 8's expressiveness (2, 2, 3) differs;
    # for ann1 and ann2 the others split there (2 vs 3) so it is not compared: 23 of 23; ann3's 3
    # is compared with the others' 2: 23 of 24.
    assert (m["ann1"]["score_majority"], m["ann1"]["score_majority_n"]) == (1.0, 23)
    assert (m["ann3"]["score_majority"], m["ann3"]["score_majority_n"]) == (pytest.approx(23 / 24), 24)
    # pair outcomes: s1 (g2,g3) is A/B/tie, never a majority of the others; s2 (g1,orig) is A, A, B:
    # compared for ann3 only (the others say A, ann3 B): ann1 10 of 10, ann3 10 of 11.
    assert (m["ann1"]["rank_majority"], m["ann1"]["rank_majority_n"]) == (1.0, 10)
    assert (m["ann2"]["rank_majority"], m["ann2"]["rank_majority_n"]) == (1.0, 10)
    assert (m["ann3"]["rank_majority"], m["ann3"]["rank_majority_n"]) == (pytest.approx(10 / 11), 11)
    # score distributions: expressiveness ann1 2,2,2,2,3,3,3,2 ; ann3 2,2,2,2,3,3,3,3
    assert m["ann1"]["score_distribution"]["expressiveness"] == {"1": 0, "2": 5, "3": 3, "4": 0, "5": 0}
    assert m["ann1"]["mean_score"]["expressiveness"] == pytest.approx(19 / 8)
    assert m["ann3"]["score_distribution"]["expressiveness"] == {"1": 0, "2": 4, "3": 4, "4": 0, "5": 0}
    assert m["ann2"]["score_distribution"]["lip_sync"] == {"1": 1, "2": 2, "3": 1, "4": 2, "5": 2}
    assert m["ann2"]["mean_score"]["lip_sync"] == pytest.approx(26 / 8)
    # time per task: one lead time per task (not per row)
    assert m["ann1"]["lead_time_median_s"] == pytest.approx(45.0) and m["ann1"]["lead_time_tasks"] == 8
    assert m["ann1"]["lead_time_mean_s"] == pytest.approx(45.0)
    assert m["ann2"]["lead_time_median_s"] == pytest.approx(5.0)
    assert math.isnan(m["ann3"]["lead_time_median_s"]) and m["ann3"]["lead_time_tasks"] == 0
    # gold: ann1 and ann2 miss the expressiveness 3 (they gave 2, tolerance 0); the motion 4 is
    # within 1 of the known 5
    assert (m["ann1"]["gold_accuracy"], m["ann1"]["gold_rated"]) == (pytest.approx(2 / 3), 3)
    assert m["ann2"]["gold_accuracy"] == pytest.approx(2 / 3)
    assert m["ann3"]["gold_accuracy"] == 1.0
    assert all(m[a]["tasks"] == 8 for a in ANNOTATORS)


def test_monitoring_in_the_report():
    report = compute_agreement(_timed_rows(), [], [], min_annotators=3, gold=GOLD)
    ann3 = report["annotator_monitoring"]["ann3"]
    assert ann3["rank_majority"] == pytest.approx(10 / 11) and ann3["lead_time_median_s"] is None
    with pytest.raises(ValueError, match="gold clip .*aspect 'lipsync'"):
        compute_agreement(_timed_rows(), [], [], min_annotators=3, gold=[dict(GOLD[0], aspect="lipsync")])


def test_scores_to_prediction():
    assert scores_to_prediction(0.7, 0.3) == "A"
    assert scores_to_prediction(0.3, 0.7) == "B"
    assert scores_to_prediction(0.5, 0.5) == "tie"
    assert scores_to_prediction(0.50, 0.52, tol=0.05) == "tie"
    assert scores_to_prediction(NAN, 0.5) is None  # a missing score is no answer, not a tie
    assert scores_to_prediction(None, 0.5) is None


# ----------------------------------------------------------------------------------------
# Mean-score table
# ----------------------------------------------------------------------------------------


def test_mean_scores_table():
    rows = [
        dict(annotator="x", sample="s1", version="orig", aspect="lip_sync", score=5),
        dict(annotator="y", sample="s1", version="orig", aspect="lip_sync", score=4),
        dict(annotator="x", sample="s2", version="orig", aspect="lip_sync", score=3),
        dict(annotator="x", sample="s1", version="g1", aspect="lip_sync", score=2),
    ]
    judges = [
        dict(judge="gpt", sample="s1", version="orig", aspect="lip_sync", score=4),
        dict(judge="gpt", sample="s2", version="orig", aspect="lip_sync", score=5),
        dict(judge="gemini", sample="s1", version="orig", aspect="lip_sync", score=3),
        dict(sample="s1", version="g1", aspect="lip_sync", score=1),
    ]
    t = mean_scores_table(rows, judges)
    assert list(t) == [("g1", "lip_sync"), ("orig", "lip_sync")]
    # human orig: (5 + 4 + 3) / 3 = 4; gpt: (4 + 5) / 2 = 4.5; gemini: 3
    assert t[("orig", "lip_sync")] == {"human": 4.0, "gemini": 3.0, "gpt": 4.5}
    assert list(t[("orig", "lip_sync")])[0] == "human"
    assert t[("g1", "lip_sync")] == {"human": 2.0, "judge": 1.0}
    assert mean_scores_table(rows) == {("g1", "lip_sync"): {"human": 2.0}, ("orig", "lip_sync"): {"human": 4.0}}
