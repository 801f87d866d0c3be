"""Inter-annotator agreement, judge accuracy and per-annotator monitoring (FlowPortrait appendix A).

Protocol
--------
Annotators score every clip 1 (worst) .. 5 (best) on three aspects
(``lip_sync``, ``expressiveness``, ``motion_quality``) and rank the versions of
one sample (e.g. the original and three generators), rank 1 = best, equal ranks
= tie.

* **Duplicates**: an annotator who submits a task twice is counted once, with the
  latest submission (:func:`latest_rows`), in every statistic below.
* **Score agreement**: Krippendorff's alpha, ordinal level, per aspect; an
  item is one ``(sample, version)`` clip; missing ratings are allowed.
* **Pairs**: per sample, every unordered pair of versions ``(a, b)`` with
  ``a < b`` (names sorted).  Each annotator's outcome is ``"A"`` (a ranked
  better, i.e. smaller rank), ``"B"`` or ``"tie"``.  A pair ranked by at least
  ``min_annotators`` annotators is

  - *unanimous* when every one of them prefers the same video (all ``"A"`` or
    all ``"B"``): these are the pairs judges are scored on;
  - *all-tie* when every one of them calls it a tie: no video is preferred, so
    the pair is excluded and only counted;
  - *disagreed* otherwise.
* **Judge accuracy** on the unanimous pairs.  A judge's answer for a pair is
  ``"A"``, ``"B"``, ``"tie"`` (equal scores from a score-based judge) or
  ``None``: the call failed or the pair was never judged.  Credit per pair:
  1 for the human winner, 0.5 for a tie, 0 for the other video and 0 for a
  failure.

  ``accuracy`` = credit / unanimous pairs (a failure counts against it, so
  failing never raises accuracy); ``coverage`` = answered pairs / unanimous
  pairs; ``accuracy_answered`` = credit / answered pairs; ``accuracy_decided``
  = correct / pairs answered ``"A"`` or ``"B"``.
* **Per annotator** (:func:`annotator_monitoring`): alpha with that annotator
  left out, agreement with the majority of the *other* annotators, score
  distributions, Label Studio's lead time per task, accuracy on gold clips.

Plain lists/dicts and numpy only; ``krippendorff`` computes alpha.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from itertools import combinations

import numpy as np

from .aspects import ASPECTS, SCALE
from .rubric import RANK_NAME

OUTCOMES = ("A", "B", "tie")

__all__ = [
    "OUTCOMES",
    "annotator_monitoring",
    "classify_pairs",
    "evaluate_judge",
    "krippendorff_alpha_ordinal",
    "latest_rows",
    "mean_scores_table",
    "pair_outcomes",
    "per_aspect_alpha",
    "predictor_from_scores",
    "rankings_from_rows",
    "scores_to_prediction",
    "unanimous_pairs",
]


# --------------------------------------------------------------------------- duplicates


def _number(value) -> float | None:
    """A table cell as a float; empty cells and None are None."""
    if value is None or value == "":
        return None
    return float(value)


def _submission(r: Mapping) -> tuple[str, float] | None:
    """When a row's annotation was saved, ``(annotated_at, annotation_id)``; None if unknown."""
    if r.get("annotation_id") in (None, "") and r.get("annotated_at") in (None, ""):
        return None
    annotation_id = _number(r.get("annotation_id"))
    return str(r.get("annotated_at") or ""), -1.0 if annotation_id is None else annotation_id


def latest_rows(rows: Iterable[Mapping]) -> tuple[list[dict], int]:
    """The rows with every annotator's repeated submissions resolved: the latest one wins.

    Rows that say when their annotation was saved (``annotated_at``, and ``annotation_id`` for
    equal times) group by it: of an annotator's annotations of one clip (``sample``,
    ``version``, and ``task_id`` when present) only the latest is kept, whole. Then, and for
    rows that do not say, one row per ``(annotator, sample, version, aspect)`` is kept: the last
    one given. Returns ``(rows, how many rows were dropped)``.
    """
    rows = [dict(r) for r in rows]
    newest: dict[tuple, tuple] = {}
    for r in rows:
        stamp = _submission(r)
        clip = (r["annotator"], r.get("task_id"), r["sample"], r["version"])
        if stamp is not None and (clip not in newest or stamp > newest[clip]):
            newest[clip] = stamp
    kept = [r for r in rows if _submission(r) is None
            or _submission(r) == newest[(r["annotator"], r.get("task_id"), r["sample"], r["version"])]]
    last: dict[tuple, dict] = {}
    for r in kept:
        last[(r["annotator"], r["sample"], r["version"], r["aspect"])] = r
    out = list(last.values())
    return out, len(rows) - len(out)


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


def _ratings(rows: Iterable[Mapping]) -> list[dict]:
    """The 1..5 aspect ratings among ``rows`` (no rank rows, no empty scores), duplicates resolved."""
    resolved, _ = latest_rows(r for r in rows if r["aspect"] != RANK_NAME and r["score"] is not None)
    return resolved


def _by_aspect(rows: Iterable[Mapping]) -> dict:
    """{aspect: {annotator: {(sample, version): score}}}."""
    out: dict = defaultdict(lambda: defaultdict(dict))
    for r in _ratings(rows):
        out[r["aspect"]][r["annotator"]][(r["sample"], r["version"])] = float(r["score"])
    return out


def _aspect_order(names: Iterable[str]) -> list[str]:
    names = list(names)
    return [a for a in ASPECTS if a in names] + [a for a in names if a not in ASPECTS]


def per_aspect_alpha(rows: Iterable[Mapping]) -> dict[str, float]:
    """Ordinal alpha per aspect from tidy rows ``{annotator, sample, version, aspect, score}``.

    Items are ``(sample, version)`` clips; an annotator's repeated rating of a clip counts
    once (the latest).  Aspects are returned in :data:`ASPECTS` order first, then any others
    in order of appearance.
    """
    grouped = _by_aspect(rows)
    return {aspect: krippendorff_alpha_ordinal(grouped[aspect]) for aspect in _aspect_order(grouped)}


# --------------------------------------------------------------------------- pairs


def rankings_from_rows(rows: Iterable[Mapping]) -> dict:
    """``{annotator: {sample: {version: rank}}}`` from the tidy rows' ``rank`` entries (latest wins)."""
    resolved, _ = latest_rows(r for r in rows if r["aspect"] == RANK_NAME and r["score"] is not None)
    out: dict = defaultdict(lambda: defaultdict(dict))
    for r in resolved:
        out[r["annotator"]][r["sample"]][r["version"]] = float(r["score"])
    return {a: dict(s) for a, s in out.items()}


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


def classify_pairs(
    rankings: Mapping[Hashable, Mapping[Hashable, Mapping[Hashable, float]]], min_annotators: int
) -> dict:
    """Every ranked pair sorted into ``unanimous`` (all prefer one video), ``all_tie`` (all call
    it a tie), ``disagreed`` and ``too_few`` (ranked by fewer than ``min_annotators``).

    ``unanimous`` and ``all_tie`` are lists of ``{"sample", "a", "b", "winner", "n_annotators"}``
    (winner ``"A"``/``"B"``, or ``"tie"`` for the all-tie pairs); ``disagreed`` and ``too_few``
    are counts.
    """
    if min_annotators < 1:
        raise ValueError(f"min_annotators must be at least 1, not {min_annotators}")
    out: dict = {"unanimous": [], "all_tie": [], "disagreed": 0, "too_few": 0}
    for (sample, a, b), per_ann in pair_outcomes(rankings).items():
        if len(per_ann) < min_annotators:
            out["too_few"] += 1
            continue
        outcomes = set(per_ann.values())
        if len(outcomes) != 1:
            out["disagreed"] += 1
            continue
        winner = outcomes.pop()
        entry = {"sample": sample, "a": a, "b": b, "winner": winner, "n_annotators": len(per_ann)}
        out["all_tie" if winner == "tie" else "unanimous"].append(entry)
    return out


def unanimous_pairs(
    rankings: Mapping[Hashable, Mapping[Hashable, Mapping[Hashable, float]]], min_annotators: int
) -> list[dict]:
    """Pairs where every one of at least ``min_annotators`` annotators prefers the same video.

    Returns ``[{"sample", "a", "b", "winner", "n_annotators"}]`` with ``winner`` ``"A"`` or
    ``"B"``; pairs everyone called a tie are not among them (see :func:`classify_pairs`).
    """
    return classify_pairs(rankings, min_annotators)["unanimous"]


# --------------------------------------------------------------------------- judges


def scores_to_prediction(score_a: float | None, score_b: float | None, tol: float = 0.0) -> str | None:
    """Higher score wins; ``|score_a - score_b| <= tol`` is a tie; a missing score (None or NaN)
    is no prediction (None)."""
    if score_a is None or score_b is None:
        return None
    diff = float(score_a) - float(score_b)
    if math.isnan(diff):
        return None
    if abs(diff) <= tol:
        return "tie"
    return "A" if diff > 0 else "B"


def predictor_from_scores(
    scores: Mapping[tuple, float], tol: float = 0.0
) -> Callable[[Hashable, Hashable, Hashable], str | None]:
    """``predict(sample, a, b)`` from ``{(sample, version): score}`` (higher = better).

    A clip without a score (its call failed) makes every pair it is in unanswered (None).
    """

    def predict(sample, a, b):
        return scores_to_prediction(scores.get((sample, a)), scores.get((sample, b)), tol)

    return predict


def evaluate_judge(
    pairs: Sequence[Mapping], predict: Callable[[Hashable, Hashable, Hashable], str | None]
) -> dict:
    """How well ``predict(sample, a, b) -> "A" | "B" | "tie" | None`` matches the unanimous pairs.

    ``None`` is a failure (no answer). Credit per pair: 1 for the human winner, 0.5 for a tie,
    0 otherwise and 0 for a failure. Returns ``accuracy`` (credit / pairs), ``coverage``
    (answered / pairs), ``accuracy_answered`` (credit / answered), ``accuracy_decided``
    (correct / answers that pick a video), and the counts ``n_pairs``, ``n_answered``,
    ``n_failed``, ``n_ties``, ``n_decided``, ``n_correct``. Ratios with a zero denominator
    are NaN.
    """
    n = n_failed = n_ties = n_decided = n_correct = 0
    for p in pairs:
        if p["winner"] not in ("A", "B"):
            raise ValueError(f"judges are scored on pairs with a preferred video, not winner {p['winner']!r}")
        pred = predict(p["sample"], p["a"], p["b"])
        if pred is not None and pred not in OUTCOMES:
            raise ValueError(f"prediction must be one of {OUTCOMES} or None, got {pred!r}")
        n += 1
        if pred is None:
            n_failed += 1
        elif pred == "tie":
            n_ties += 1
        else:
            n_decided += 1
            n_correct += pred == p["winner"]
    answered = n - n_failed
    credit = n_correct + 0.5 * n_ties

    def ratio(num: float, den: int) -> float:
        return num / den if den else float("nan")

    return {
        "accuracy": ratio(credit, n),
        "coverage": ratio(answered, n),
        "accuracy_answered": ratio(credit, answered),
        "accuracy_decided": ratio(n_correct, n_decided),
        "n_pairs": n,
        "n_answered": answered,
        "n_failed": n_failed,
        "n_ties": n_ties,
        "n_decided": n_decided,
        "n_correct": n_correct,
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


# --------------------------------------------------------------------------- per annotator


def _strict_majority(values: Sequence) -> object | None:
    """The value more than half of ``values`` share, else None."""
    if not values:
        return None
    value, count = Counter(values).most_common(1)[0]
    return value if count * 2 > len(values) else None


def _majority_agreement(own: Mapping, others: Mapping[Hashable, Mapping]) -> tuple[int, int]:
    """(agreeing, compared): items of ``own`` where at least two other annotators answered and
    a strict majority of them gave one answer, and how many of those ``own`` matches."""
    agree = compared = 0
    for item, value in own.items():
        theirs = [o[item] for o in others.values() if item in o]
        if len(theirs) < 2:
            continue
        majority = _strict_majority(theirs)
        if majority is None:
            continue
        compared += 1
        agree += value == majority
    return agree, compared


def _lead_times(rows: Sequence[Mapping]) -> dict[Hashable, list[float]]:
    """Seconds each annotator spent per annotation (Label Studio's ``lead_time_s``), one value per
    annotated task."""
    per_task: dict[tuple, float] = {}
    for r in rows:
        seconds = _number(r.get("lead_time_s"))
        if seconds is None:
            continue
        task = r.get("task_id")
        key = (r["annotator"], task if task not in (None, "") else (r["sample"], r["version"]))
        per_task[key] = seconds
    out: dict[Hashable, list[float]] = defaultdict(list)
    for (annotator, _), seconds in per_task.items():
        out[annotator].append(seconds)
    return out


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


def annotator_monitoring(rows: Sequence[Mapping], gold: Sequence[Mapping] = ()) -> dict[Hashable, dict]:
    """Per annotator, for watching a study while it runs.

    ``rows`` are the tidy human rows (ratings and ranks; ``lead_time_s`` and ``task_id`` when the
    export has them). ``gold`` lists clips with a known answer: ``{"sample", "version",
    "aspect", "score", "tolerance"}``; a rating within ``tolerance`` of ``score`` is correct.

    Returns ``{annotator: {...}}`` with

    - ``tasks``: clips the annotator rated or ranked;
    - ``alpha_without``: ordinal alpha per aspect with this annotator left out, and
      ``alpha_change``: that minus alpha with everyone (positive: agreement rises without them);
    - ``score_majority`` / ``rank_majority``: share of the annotator's ratings (every aspect) and
      pair outcomes that equal the strict majority of at least two *other* annotators, with the
      number compared (``score_majority_n``, ``rank_majority_n``);
    - ``score_distribution``: per aspect, how often each score 1..5 was given, and
      ``mean_score`` per aspect;
    - ``lead_time_median_s``, ``lead_time_mean_s``, ``lead_time_tasks``: time per task;
    - ``gold_accuracy`` and ``gold_rated``: share of gold clips rated correctly.

    Undefined values are NaN.
    """
    ratings = _ratings(rows)
    by_aspect = _by_aspect(ratings)
    rankings = rankings_from_rows(rows)
    outcomes = pair_outcomes(rankings)
    annotators = sorted({r["annotator"] for r in rows}, key=str)
    alpha_all = {aspect: krippendorff_alpha_ordinal(by_aspect[aspect]) for aspect in _aspect_order(by_aspect)}

    item_scores: dict[Hashable, dict] = defaultdict(dict)
    for r in ratings:
        item_scores[r["annotator"]][(r["sample"], r["version"], r["aspect"])] = float(r["score"])
    pair_choices: dict[Hashable, dict] = defaultdict(dict)
    for pair, per_ann in outcomes.items():
        for annotator, outcome in per_ann.items():
            pair_choices[annotator][pair] = outcome
    times = _lead_times(rows)
    for g in gold:
        if g["aspect"] not in ASPECTS:
            raise ValueError(f"gold clip {g['sample']}/{g['version']}: aspect {g['aspect']!r} is not one of {ASPECTS}")
    gold_answers = {(g["sample"], g["version"], g["aspect"]): g for g in gold}

    out: dict[Hashable, dict] = {}
    for annotator in annotators:
        alpha_without = {
            aspect: krippendorff_alpha_ordinal({a: r for a, r in by_aspect[aspect].items() if a != annotator})
            for aspect in alpha_all
        }
        scores_agree, scores_n = _majority_agreement(
            item_scores[annotator], {a: s for a, s in item_scores.items() if a != annotator})
        ranks_agree, ranks_n = _majority_agreement(
            pair_choices[annotator], {a: c for a, c in pair_choices.items() if a != annotator})
        distribution = {}
        means = {}
        for aspect in alpha_all:
            given = list(by_aspect[aspect].get(annotator, {}).values())
            counts = Counter(int(s) for s in given)
            distribution[aspect] = {str(s): counts.get(s, 0) for s in SCALE}
            means[aspect] = float(np.mean(given)) if given else float("nan")
        gold_hits = gold_n = 0
        for key, answer in gold_answers.items():
            if key in item_scores[annotator]:
                gold_n += 1
                gold_hits += abs(item_scores[annotator][key] - float(answer["score"])) <= float(answer["tolerance"])
        seconds = times.get(annotator, [])
        clips = {(r["sample"], r["version"]) for r in rows if r["annotator"] == annotator}
        out[annotator] = {
            "tasks": len(clips),
            "alpha_without": alpha_without,
            "alpha_change": {a: alpha_without[a] - alpha_all[a] for a in alpha_all},
            "score_majority": _ratio(scores_agree, scores_n),
            "score_majority_n": scores_n,
            "rank_majority": _ratio(ranks_agree, ranks_n),
            "rank_majority_n": ranks_n,
            "score_distribution": distribution,
            "mean_score": means,
            "lead_time_median_s": statistics.median(seconds) if seconds else float("nan"),
            "lead_time_mean_s": statistics.fmean(seconds) if seconds else float("nan"),
            "lead_time_tasks": len(seconds),
            "gold_accuracy": _ratio(gold_hits, gold_n),
            "gold_rated": gold_n,
        }
    return out
