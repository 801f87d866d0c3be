"""Inter-annotator agreement and automatic-evaluator accuracy (FlowPortrait appendix A).

Protocol
--------
Annotators score every clip 1 (worst) .. 5 (best) on three aspects
(``lip_sync``, ``expressiveness``, ``motion_quality``) and rank the versions of
one sample (e.g. the original and three generators), rank 1 = best, equal ranks
= tie.

* **Score agreement**: Krippendorff's alpha, ordinal level, per aspect; an
  item is one ``(sample, version)`` clip; missing ratings are allowed.
* **Pairwise agreement**: per sample, every unordered pair of versions
  ``(a, b)`` with ``a < b`` (names sorted).  Each annotator's outcome is
  ``"A"`` (a ranked better, i.e. smaller rank), ``"B"`` (b better) or
  ``"tie"`` (equal ranks).  A pair is kept (*unanimous*) when every annotator
  who ranked both versions gives the same outcome -- including the case where
  all of them call it a tie -- and at least ``min_annotators`` (default 2)
  annotators ranked both versions.
* **Evaluator accuracy** on the unanimous pairs, credit per pair:

  - predicted ``"tie"``: 0.5, whatever the human outcome;
  - predicted ``"A"``/``"B"``: 1 if it equals the unanimous human outcome,
    else 0 (so a non-tied prediction on a human tie earns 0).

  ``accuracy`` = total credit / number of pairs;
  ``accuracy_non_tied`` = correct non-tied predictions / non-tied predictions;
  ``coverage`` = non-tied predictions / number of pairs.

Plain lists/dicts and numpy only; ``krippendorff`` computes alpha.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from itertools import combinations

import numpy as np

from .aspects import ASPECTS

OUTCOMES = ("A", "B", "tie")

__all__ = [
    "OUTCOMES",
    "evaluate_scorer",
    "krippendorff_alpha_ordinal",
    "mean_scores_table",
    "pair_outcomes",
    "per_aspect_alpha",
    "predictor_from_scores",
    "scores_to_prediction",
    "unanimous_pairs",
]


# --------------------------------------------------------------------------- alpha


def krippendorff_alpha_ordinal(
    ratings: Mapping[Hashable, Mapping[Hashable, float]],
    value_domain: Sequence[float] | None = None,
) -> float:
    """Krippendorff's alpha (ordinal) for ``{annotator: {item: score}}``.

    Items missing for an annotator (or given as ``None``/NaN) are missing
    values.  Returns NaN when alpha is undefined: fewer than two distinct
    values in the data, or no item rated by two or more annotators.
    """
    import krippendorff

    annotators = list(ratings)
    items: list = []
    seen: set = set()
    for a in annotators:
        for item in ratings[a]:
            if item not in seen:
                seen.add(item)
                items.append(item)
    if not annotators or not items:
        return float("nan")
    data = np.full((len(annotators), len(items)), np.nan, dtype=float)
    col = {item: j for j, item in enumerate(items)}
    for i, a in enumerate(annotators):
        for item, score in ratings[a].items():
            if score is not None:
                data[i, col[item]] = float(score)

    # pairable values: items with >= 2 ratings
    pairable = np.sum(~np.isnan(data), axis=0) >= 2
    if not pairable.any():
        return float("nan")
    observed = np.unique(data[:, pairable][~np.isnan(data[:, pairable])])
    if len(observed) < 2:
        return float("nan")  # no variation: expected disagreement is 0
    kwargs = {}
    if value_domain is not None:
        kwargs["value_domain"] = list(value_domain)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(
            krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal", **kwargs)
        )


def _by_aspect(rows: Iterable[Mapping]) -> dict:
    """{aspect: {annotator: {(sample, version): score}}}, rejecting duplicates."""
    out: dict = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        item = (r["sample"], r["version"])
        cell = out[r["aspect"]][r["annotator"]]
        if item in cell:
            raise ValueError(
                f"duplicate rating: annotator={r['annotator']!r} item={item!r} aspect={r['aspect']!r}"
            )
        cell[item] = r["score"]
    return out


def per_aspect_alpha(rows: Iterable[Mapping]) -> dict[str, float]:
    """Ordinal alpha per aspect from tidy rows ``{annotator, sample, version, aspect, score}``.

    Items are ``(sample, version)`` clips.  Aspects are returned in
    :data:`ASPECTS` order first, then any others in order of appearance.
    """
    grouped = _by_aspect(rows)
    order = [a for a in ASPECTS if a in grouped] + [a for a in grouped if a not in ASPECTS]
    return {aspect: krippendorff_alpha_ordinal(grouped[aspect]) for aspect in order}


# --------------------------------------------------------------------------- pairs


def _outcome(rank_a: float, rank_b: float) -> str:
    if rank_a < rank_b:
        return "A"
    if rank_b < rank_a:
        return "B"
    return "tie"


def pair_outcomes(
    rankings: Mapping[Hashable, Mapping[Hashable, Mapping[Hashable, float]]],
) -> dict[tuple, dict[Hashable, str]]:
    """Each annotator's outcome for every version pair of every sample.

    ``rankings`` is ``{annotator: {sample: {version: rank}}}`` (rank 1 = best).
    Returns ``{(sample, a, b): {annotator: "A" | "B" | "tie"}}`` with ``a < b``
    (sorted version names); only annotators who ranked both ``a`` and ``b`` in
    that sample appear.  Keys are ordered by sample (first appearance), then
    pair.
    """
    samples: list = []
    versions: dict = defaultdict(set)
    for ann_ranks in rankings.values():
        for sample, ranks in ann_ranks.items():
            if sample not in versions:
                samples.append(sample)
            versions[sample].update(ranks)

    out: dict[tuple, dict[Hashable, str]] = {}
    for sample in samples:
        for a, b in combinations(sorted(versions[sample]), 2):
            per_ann = {}
            for ann, ann_ranks in rankings.items():
                ranks = ann_ranks.get(sample)
                if ranks is None or a not in ranks or b not in ranks:
                    continue
                per_ann[ann] = _outcome(ranks[a], ranks[b])
            if per_ann:
                out[(sample, a, b)] = per_ann
    return out


def unanimous_pairs(
    rankings: Mapping[Hashable, Mapping[Hashable, Mapping[Hashable, float]]],
    min_annotators: int = 2,
) -> list[dict]:
    """Pairs on which every annotator who ranked both versions agrees.

    Returns ``[{"sample", "a", "b", "winner", "n_annotators"}]`` where
    ``winner`` is ``"A"``, ``"B"`` or ``"tie"`` (all annotators called it a
    tie).  Pairs ranked by fewer than ``min_annotators`` annotators are
    dropped (one annotator is trivially "unanimous"; pass 1 to keep them).
    """
    out = []
    for (sample, a, b), per_ann in pair_outcomes(rankings).items():
        if len(per_ann) < min_annotators:
            continue
        outcomes = set(per_ann.values())
        if len(outcomes) == 1:
            out.append(
                {"sample": sample, "a": a, "b": b, "winner": outcomes.pop(), "n_annotators": len(per_ann)}
            )
    return out


# --------------------------------------------------------------------------- evaluator


def scores_to_prediction(score_a: float, score_b: float, tol: float = 0.0) -> str:
    """Higher score wins; ``|score_a - score_b| <= tol`` (or a NaN score) is a tie."""
    if score_a is None or score_b is None:
        return "tie"
    diff = float(score_a) - float(score_b)
    if math.isnan(diff) or abs(diff) <= tol:
        return "tie"
    return "A" if diff > 0 else "B"


def predictor_from_scores(
    scores: Mapping[tuple, float], tol: float = 0.0
) -> Callable[[Hashable, Hashable, Hashable], str]:
    """``predict(sample, a, b)`` from ``{(sample, version): score}`` (higher = better).

    A missing score predicts a tie.
    """

    def predict(sample, a, b):
        return scores_to_prediction(scores.get((sample, a)), scores.get((sample, b)), tol)

    return predict


def evaluate_scorer(
    pairs: Sequence[Mapping], predict: Callable[[Hashable, Hashable, Hashable], str]
) -> dict:
    """Accuracy of ``predict(sample, a, b) -> "A"|"B"|"tie"`` on unanimous pairs.

    Credit rule (per pair): predicted tie -> 0.5 regardless of the human
    outcome; non-tied prediction -> 1 if equal to the human ``winner`` else 0
    (a non-tied prediction on a human tie earns 0).

    Returns ``accuracy`` (mean credit over all pairs), ``accuracy_non_tied``
    (correct / non-tied predictions), ``coverage`` (non-tied predictions / all
    pairs), ``n_pairs``, ``n_non_tied``.  Ratios with a zero denominator are NaN.
    """
    n = 0
    credit = 0.0
    n_non_tied = 0
    n_correct = 0
    for p in pairs:
        pred = predict(p["sample"], p["a"], p["b"])
        if pred not in OUTCOMES:
            raise ValueError(f"prediction must be one of {OUTCOMES}, got {pred!r}")
        n += 1
        if pred == "tie":
            credit += 0.5
        else:
            n_non_tied += 1
            if pred == p["winner"]:
                n_correct += 1
                credit += 1.0
    nan = float("nan")
    return {
        "accuracy": credit / n if n else nan,
        "accuracy_non_tied": n_correct / n_non_tied if n_non_tied else nan,
        "coverage": n_non_tied / n if n else nan,
        "n_pairs": n,
        "n_non_tied": n_non_tied,
    }


# --------------------------------------------------------------------------- table


def mean_scores_table(
    rows: Iterable[Mapping], judge_rows: Iterable[Mapping] | None = None
) -> dict[tuple, dict[str, float]]:
    """Mean score per ``(version, aspect)``: human next to each judge.

    ``rows`` are human rows ``{annotator, sample, version, aspect, score}``;
    the human mean is over all annotators and samples.  ``judge_rows`` are
    ``{judge, sample, version, aspect, score}`` (``judge`` defaults to
    ``"judge"``); each judge's mean is over its samples.  Returns
    ``{(version, aspect): {"human": mean, "<judge>": mean, ...}}``; a column
    with no rows for that cell is absent.  Keys are sorted.
    """
    sums: dict = defaultdict(lambda: defaultdict(lambda: [0.0, 0]))

    def add(key, col, score):
        if score is None or (isinstance(score, float) and math.isnan(score)):
            return
        acc = sums[key][col]
        acc[0] += float(score)
        acc[1] += 1

    for r in rows:
        add((r["version"], r["aspect"]), "human", r["score"])
    for r in judge_rows or ():
        add((r["version"], r["aspect"]), str(r.get("judge", "judge")), r["score"])

    table = {}
    for key in sorted(sums, key=lambda k: (str(k[0]), str(k[1]))):
        cols = sums[key]
        ordered = (["human"] if "human" in cols else []) + sorted(c for c in cols if c != "human")
        table[key] = {c: cols[c][0] / cols[c][1] for c in ordered}
    return table
