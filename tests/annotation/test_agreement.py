"""Hand-checked tests for annotation.agreement."""

from __future__ import annotations

import math
from itertools import permutations

import numpy as np
import pytest
from agreement_example import EXPECTED_UNANIMOUS, RANKINGS, SCORES

from annotation.agreement import (
    evaluate_scorer,
    krippendorff_alpha_ordinal,
    mean_scores_table,
    pair_outcomes,
    per_aspect_alpha,
    predictor_from_scores,
    scores_to_prediction,
    unanimous_pairs,
)

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

    with pytest.raises(ValueError, match="duplicate"):
        per_aspect_alpha(rows + [rows[0]])


# ----------------------------------------------------------------------------------------
# Pairwise agreement + evaluator accuracy: 3 annotators x 2 samples x 4 versions
# ----------------------------------------------------------------------------------------
# The hand example (3 annotators x 2 samples x 4 versions) lives in tests/agreement_example.py.


def test_pair_outcomes_per_annotator():
    out = pair_outcomes(RANKINGS)
    assert len(out) == 12
    assert out[("s1", "g2", "g3")] == {"ann1": "A", "ann2": "B", "ann3": "tie"}
    assert out[("s2", "g1", "orig")] == {"ann1": "A", "ann2": "A", "ann3": "B"}
    assert out[("s2", "g2", "g3")] == {"ann1": "tie", "ann2": "tie", "ann3": "tie"}
    assert all(a < b for (_, a, b) in out)


def test_unanimous_pairs_hand_example():
    got = [(p["sample"], p["a"], p["b"], p["winner"]) for p in unanimous_pairs(RANKINGS)]
    assert got == EXPECTED_UNANIMOUS
    assert all(p["n_annotators"] == 3 for p in unanimous_pairs(RANKINGS))


def test_evaluate_scorer_hand_example():
    pairs = unanimous_pairs(RANKINGS)
    res = evaluate_scorer(pairs, predictor_from_scores(SCORES))
    assert res["n_pairs"] == 10
    assert res["n_non_tied"] == 9
    assert res["accuracy"] == pytest.approx(0.75)
    assert res["accuracy_non_tied"] == pytest.approx(7 / 9)
    assert res["coverage"] == pytest.approx(0.9)


def test_all_tie_predictions():
    pairs = unanimous_pairs(RANKINGS)
    res = evaluate_scorer(pairs, lambda s, a, b: "tie")
    # every pair earns 0.5 (including the human-tie pair) -> 5 / 10
    assert res["accuracy"] == pytest.approx(0.5)
    assert res["coverage"] == 0.0
    assert res["n_non_tied"] == 0
    assert math.isnan(res["accuracy_non_tied"])


def test_oracle_and_empty():
    pairs = unanimous_pairs(RANKINGS)
    oracle = {(p["sample"], p["a"], p["b"]): p["winner"] for p in pairs}
    res = evaluate_scorer(pairs, lambda s, a, b: oracle[(s, a, b)])
    # 9 correct non-tied (1 each) + 1 predicted tie (0.5) = 9.5 / 10
    assert res["accuracy"] == pytest.approx(0.95)
    assert res["accuracy_non_tied"] == pytest.approx(1.0)
    assert res["coverage"] == pytest.approx(0.9)

    empty = evaluate_scorer([], lambda s, a, b: "A")
    assert empty["n_pairs"] == 0 and math.isnan(empty["accuracy"]) and math.isnan(empty["coverage"])

    with pytest.raises(ValueError):
        evaluate_scorer(pairs, lambda s, a, b: "left")


def test_sample_ranked_by_some_annotators():
    rankings = {
        "ann1": {"s3": {"orig": 1, "g1": 2, "g2": 2}, "s4": {"orig": 1, "g1": 2}},
        "ann2": {"s3": {"orig": 1, "g1": 3, "g2": 2}},
        "ann3": {},
    }
    # s3 ranked by ann1 + ann2 only:
    #   (g1,g2)   2=2 vs 3>2 -> tie,B      dropped
    #   (g1,orig) B,B                      unanimous B
    #   (g2,orig) B,B                      unanimous B
    # s4 ranked by ann1 only -> dropped with the default min_annotators=2
    got = [(p["sample"], p["a"], p["b"], p["winner"], p["n_annotators"]) for p in unanimous_pairs(rankings)]
    assert got == [("s3", "g1", "orig", "B", 2), ("s3", "g2", "orig", "B", 2)]

    got1 = [(p["sample"], p["a"], p["b"], p["winner"]) for p in unanimous_pairs(rankings, min_annotators=1)]
    assert ("s4", "g1", "orig", "B") in got1 and len(got1) == 3

    # a version missing from one annotator's ranking: only annotators with both versions count
    rankings["ann2"]["s3"].pop("g1")
    out = pair_outcomes(rankings)
    assert out[("s3", "g1", "orig")] == {"ann1": "B"}
    assert out[("s3", "g2", "orig")] == {"ann1": "B", "ann2": "B"}


def test_scores_to_prediction():
    assert scores_to_prediction(0.7, 0.3) == "A"
    assert scores_to_prediction(0.3, 0.7) == "B"
    assert scores_to_prediction(0.5, 0.5) == "tie"
    assert scores_to_prediction(0.50, 0.52, tol=0.05) == "tie"
    assert scores_to_prediction(NAN, 0.5) == "tie"
    assert scores_to_prediction(None, 0.5) == "tie"


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
