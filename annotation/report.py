"""The agreement report: Krippendorff's alpha, unanimous pairs, each judge's accuracy and coverage
on them, mean scores per version and aspect, and per-annotator monitoring; written as JSON,
markdown and one PNG.

The statistics themselves are :mod:`annotation.agreement`; this module turns the loop's tables
into them and presents the result.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipelines.atomic import atomic_path, atomic_write_text

from . import agreement as A
from .aspects import ASPECTS
from .judging import not_configured

REPORT_JSON = "agreement.json"
REPORT_MARKDOWN = "agreement.md"
REPORT_PLOT = "agreement.png"


def _json_ready(value):
    """``value`` with every NaN replaced by None, tuples as lists (undefined ratios read as null)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def _judge_metrics(pairs: Sequence[dict], score_rows: Sequence[dict], pair_rows: Sequence[dict]) -> dict[str, dict]:
    """Every judge's numbers on the unanimous pairs: a failed call (a row with ``error``) or a pair
    never judged is a failure, never a tie."""
    scores: dict[str, dict] = {}
    predictions: dict[str, dict] = {}
    failed: dict[str, int] = defaultdict(int)
    inputs: dict[str, Counter] = defaultdict(Counter)
    for r in score_rows:
        table = scores.setdefault(r["judge"], {})  # a judge whose every call failed is still evaluated
        if r.get("error"):
            failed[r["judge"]] += 1
        elif r["aspect"] == "overall":
            table[(r["sample"], r["version"])] = float(r["score"])
            inputs[r["judge"]][r.get("input") or "unrecorded"] += 1
    for r in pair_rows:
        table = predictions.setdefault(r["judge"], {})
        if r.get("error"):
            failed[r["judge"]] += 1
        else:
            table[(r["sample"], r["a"], r["b"])] = r["prediction"]
            inputs[r["judge"]][r.get("input") or "unrecorded"] += 1
    judges = {name: A.evaluate_judge(pairs, A.predictor_from_scores(table)) for name, table in scores.items()}
    for name, table in predictions.items():
        judges[name] = A.evaluate_judge(pairs, lambda s, a, b, t=table: t.get((s, a, b)))
    for name in judges:
        judges[name]["failed_calls"] = failed[name]
        judges[name]["inputs"] = dict(sorted(inputs[name].items()))
    return {name: judges[name] for name in sorted(judges)}


def compute_agreement(human_rows: Sequence[dict], score_rows: Sequence[dict], pair_rows: Sequence[dict],
                      min_annotators: int, gold: Sequence[dict] = ()) -> dict:
    """Every number of the report (JSON-ready; undefined ratios are ``None``).

    An annotator's repeated submission of a clip counts once, the latest (see
    :func:`annotation.agreement.latest_rows`). Rows saying that no judge backend was configured
    are left out: no judge ran, so there is nothing to evaluate. ``gold`` lists clips with known
    answers (``annotation.gold`` in the config)."""
    score_rows = [r for r in score_rows if not not_configured(r)]
    pair_rows = [r for r in pair_rows if not not_configured(r)]
    humans, dropped = A.latest_rows(human_rows)
    ratings = [r for r in humans if r["aspect"] in ASPECTS and r["score"] is not None]
    alpha = A.per_aspect_alpha(ratings) if ratings else {}
    rankings = A.rankings_from_rows(humans)
    pairs = A.classify_pairs(rankings, min_annotators)
    judge_rating_rows = [dict(r) for r in score_rows if not r.get("error") and r["aspect"] in ASPECTS + ("overall",)]
    table = A.mean_scores_table(ratings, judge_rating_rows)
    return _json_ready({
        "annotators": sorted({r["annotator"] for r in humans}, key=str),
        "rated_clips": len({(r["sample"], r["version"]) for r in ratings}),
        "ratings": len(ratings),
        "duplicates_dropped": dropped,
        "min_annotators": min_annotators,
        "alpha_ordinal": alpha,
        "pairs_total": len(A.pair_outcomes(rankings)),
        "pairs_unanimous": len(pairs["unanimous"]),
        "pairs_all_tie": len(pairs["all_tie"]),
        "pairs_disagreed": pairs["disagreed"],
        "pairs_too_few_annotators": pairs["too_few"],
        "unanimous_pairs": pairs["unanimous"],
        "all_tie_pairs": pairs["all_tie"],
        "judges": _judge_metrics(pairs["unanimous"], score_rows, pair_rows),
        "mean_scores": [{"version": v, "aspect": a, **cols} for (v, a), cols in table.items()],
        "annotator_monitoring": A.annotator_monitoring(humans, gold),
    })


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def monitoring_markdown(report: dict) -> str:
    """The per-annotator tables: agreement, time per task, gold clips, score distributions."""
    monitoring = report["annotator_monitoring"]
    aspects = list(report["alpha_ordinal"])
    lines = ["## Per annotator", "",
             "`alpha change` is alpha without the annotator minus alpha with everyone (positive: "
             "agreement rises without them); `majority` is the share of their ratings / pair "
             "outcomes equal to the strict majority of at least two other annotators.", "",
             "| annotator | clips | " + " | ".join(f"alpha change {a}" for a in aspects)
             + " | score majority | rank majority | median s / task | tasks timed | gold accuracy | gold rated |",
             "|---" * (len(aspects) + 8) + "|"]
    for name, m in monitoring.items():
        lines.append(f"| {name} | {m['tasks']} | "
                     + " | ".join(_fmt(m["alpha_change"].get(a)) for a in aspects)
                     + f" | {_fmt(m['score_majority'])} ({m['score_majority_n']}) | {_fmt(m['rank_majority'])} "
                     f"({m['rank_majority_n']}) | {_fmt(m['lead_time_median_s'], 1)} | {m['lead_time_tasks']} "
                     f"| {_fmt(m['gold_accuracy'])} | {m['gold_rated']} |")
    if not monitoring:
        lines.append("| (no annotations yet) |" + " |" * (len(aspects) + 7))
    lines += ["", "### Score distributions (count of 1 / 2 / 3 / 4 / 5; mean)", "",
              "| annotator | " + " | ".join(aspects) + " |", "|---" * (len(aspects) + 1) + "|"]
    for name, m in monitoring.items():
        cells = [" / ".join(str(n) for n in m["score_distribution"][a].values()) + f"; {_fmt(m['mean_score'][a], 2)}"
                 for a in aspects]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report_markdown(report: dict) -> str:
    lines = ["# Agreement report", "",
             f"{len(report['annotators'])} annotators, {report['rated_clips']} rated clips, "
             f"{report['ratings']} ratings ({report['duplicates_dropped']} repeated submissions replaced by the "
             f"latest). Of {report['pairs_total']} version pairs, {report['pairs_unanimous']} are unanimous (every "
             f"one of at least {report['min_annotators']} annotators prefers the same video), "
             f"{report['pairs_all_tie']} all-tie (excluded), {report['pairs_disagreed']} disagreed and "
             f"{report['pairs_too_few_annotators']} ranked by too few annotators.", "",
             "## Krippendorff's alpha (ordinal) per aspect", "", "| aspect | alpha |", "|---|---|"]
    lines += [f"| {a} | {_fmt(v)} |" for a, v in report["alpha_ordinal"].items()]
    lines += ["", "## Judges on the unanimous pairs", "",
              "Credit: 1 for the humans' video, 0.5 for a tie, 0 for the other video and 0 for a failed "
              "call. `accuracy` is credit over all unanimous pairs, `coverage` the share answered, "
              "`answered` and `decided` the accuracy over answered pairs and over answers that pick a video.", "",
              "| judge | accuracy | coverage | accuracy (answered) | accuracy (decided) | pairs | failed calls "
              "| input |", "|---|---|---|---|---|---|---|---|"]
    for name, m in report["judges"].items():
        inputs = ", ".join(f"{k} {v}" for k, v in m["inputs"].items()) or "none"
        lines.append(f"| {name} | {_fmt(m['accuracy'])} | {_fmt(m['coverage'])} | {_fmt(m['accuracy_answered'])} "
                     f"| {_fmt(m['accuracy_decided'])} | {m['n_pairs']} | {m['failed_calls']} | {inputs} |")
    if not report["judges"]:
        lines.append("| (no judge ran) | | | | | | | |")
    columns = ["human"] + sorted({k for row in report["mean_scores"] for k in row} - {"version", "aspect", "human"})
    lines += ["", "## Mean score per version and aspect", "",
              "| version | aspect | " + " | ".join(columns) + " |", "|---" * (len(columns) + 2) + "|"]
    for row in report["mean_scores"]:
        lines.append(f"| {row['version']} | {row['aspect']} | "
                     + " | ".join(_fmt(row.get(c), 2) for c in columns) + " |")
    return "\n".join(lines) + "\n\n" + monitoring_markdown(report)


def plot_report(report: dict, path: Path) -> Path:
    """Alpha per aspect, judge accuracy and coverage, and mean scores (human beside judges)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    ax = axes[0]
    names = list(report["alpha_ordinal"])
    values = [v if v is not None else 0.0 for v in report["alpha_ordinal"].values()]
    ax.bar(names, values, color="#4c72b0")
    ax.axhline(0.667, ls="--", c="grey", lw=1, label="0.667 (tentative)")
    ax.axhline(0.8, ls=":", c="grey", lw=1, label="0.8 (reliable)")
    ax.set_ylim(min(0.0, *values) - 0.05, 1.05)
    ax.set_title("Krippendorff's alpha (ordinal)")
    ax.legend(fontsize=8)
    ax = axes[1]
    judges = list(report["judges"])
    x = np.arange(len(judges))
    for k, (metric, colour) in enumerate((("accuracy", "#55a868"), ("accuracy_decided", "#c44e52"),
                                          ("coverage", "#8172b2"))):
        vals = [report["judges"][j][metric] or 0.0 for j in judges]
        ax.bar(x + (k - 1) * 0.27, vals, 0.27, label=metric, color=colour)
    ax.set_xticks(x, judges, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.axhline(0.5, ls="--", c="grey", lw=1)
    ax.set_title(f"Judges on {report['pairs_unanimous']} unanimous pairs")
    ax.legend(fontsize=8)
    ax = axes[2]
    rows = [r for r in report["mean_scores"] if r["aspect"] in ASPECTS]
    labels = [f"{r['version']}\n{r['aspect']}" for r in rows]
    columns = ["human"] + sorted({k for r in rows for k in r} - {"version", "aspect", "human"})
    width = 0.8 / max(1, len(columns))
    for k, col in enumerate(columns):
        ax.bar(np.arange(len(rows)) + k * width, [r.get(col) or 0.0 for r in rows], width, label=col)
    ax.set_xticks(np.arange(len(rows)) + 0.4 - width / 2, labels, fontsize=6, rotation=90)
    ax.set_ylim(0, 5.2)
    ax.set_title("Mean score per version and aspect")
    ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    return path


def agreement_report(human_rows: Sequence[dict], score_rows: Sequence[dict], pair_rows: Sequence[dict],
                     out_dir: Path, min_annotators: int, gold: Sequence[dict] = ()) -> dict:
    """Compute, then write ``agreement.json``, ``agreement.md`` and ``agreement.png``."""
    report = compute_agreement(human_rows, score_rows, pair_rows, min_annotators, gold)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / REPORT_JSON, json.dumps(report, indent=2, sort_keys=True))
    atomic_write_text(out_dir / REPORT_MARKDOWN, report_markdown(report))
    plot_report(report, out_dir / REPORT_PLOT)
    return report
