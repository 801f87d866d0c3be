"""The agreement report: Krippendorff's alpha, unanimous pairs, each judge's accuracy on them,
mean scores per version and aspect; written as JSON, markdown and one PNG.

The statistics themselves are :mod:`annotation.agreement`; this module turns the loop's tables
into them and presents the result.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from pipelines.atomic import atomic_path, atomic_write_text

from . import agreement as A
from .aspects import ASPECTS
from .judging import not_configured
from .rubric import RANK_NAME

REPORT_JSON = "agreement.json"
REPORT_MARKDOWN = "agreement.md"
REPORT_PLOT = "agreement.png"


def rankings_from_rows(rows: Iterable[dict]) -> dict:
    """``{annotator: {sample: {version: rank}}}`` from the tidy rows' ``rank`` entries."""
    out: dict = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        if r["aspect"] == RANK_NAME and r["score"] is not None:
            out[r["annotator"]][r["sample"]][r["version"]] = float(r["score"])
    return {a: dict(s) for a, s in out.items()}


def _nan_to_none(value):
    return None if isinstance(value, float) and math.isnan(value) else value


def compute_agreement(human_rows: Sequence[dict], score_rows: Sequence[dict], pair_rows: Sequence[dict],
                      min_annotators: int = 2) -> dict:
    """Every number of the report (JSON-ready; undefined ratios are ``None``). Rows saying that no
    judge backend was configured are left out: no judge ran, so there is nothing to evaluate."""
    score_rows = [r for r in score_rows if not not_configured(r)]
    pair_rows = [r for r in pair_rows if not not_configured(r)]
    ratings = [r for r in human_rows if r["aspect"] in ASPECTS and r["score"] is not None]
    alpha = A.per_aspect_alpha(ratings) if ratings else {}
    rankings = rankings_from_rows(human_rows)
    all_pairs = A.pair_outcomes(rankings)
    pairs = A.unanimous_pairs(rankings, min_annotators=min_annotators)
    judges: dict[str, dict] = {}
    overall = defaultdict(dict)
    errors: dict[str, int] = defaultdict(int)
    for r in score_rows:
        if r.get("error"):
            errors[r["judge"]] += 1
        elif r["aspect"] == "overall":
            overall[r["judge"]][(r["sample"], r["version"])] = float(r["score"])
    for name, scores in overall.items():
        judges[name] = A.evaluate_scorer(pairs, A.predictor_from_scores(scores))
    predictions = defaultdict(dict)
    for r in pair_rows:
        if r.get("error"):
            errors[r["judge"]] += 1
        else:
            predictions[r["judge"]][(r["sample"], r["a"], r["b"])] = r["prediction"]
    for name, table in predictions.items():
        judges[name] = A.evaluate_scorer(pairs, lambda s, a, b, t=table: t.get((s, a, b), "tie"))
    for name in errors:
        judges.setdefault(name, A.evaluate_scorer(pairs, lambda s, a, b: "tie"))
        judges[name]["failed_calls"] = errors[name]
    for name in judges:
        judges[name].setdefault("failed_calls", 0)
    judge_rating_rows = [dict(r) for r in score_rows if not r.get("error") and r["aspect"] in ASPECTS + ("overall",)]
    table = A.mean_scores_table(ratings, judge_rating_rows)
    return {
        "annotators": sorted({r["annotator"] for r in human_rows}),
        "rated_clips": len({(r["sample"], r["version"]) for r in ratings}),
        "ratings": len(ratings),
        "alpha_ordinal": {k: _nan_to_none(v) for k, v in alpha.items()},
        "pairs_total": len(all_pairs),
        "pairs_unanimous": len(pairs),
        "unanimous_pairs": pairs,
        "judges": {k: {m: _nan_to_none(v) for m, v in judges[k].items()} for k in sorted(judges)},
        "mean_scores": [{"version": v, "aspect": a, **cols} for (v, a), cols in table.items()],
    }


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def report_markdown(report: dict) -> str:
    lines = ["# Agreement report", "",
             f"{len(report['annotators'])} annotators, {report['rated_clips']} rated clips, "
             f"{report['ratings']} ratings; {report['pairs_unanimous']} of {report['pairs_total']} version "
             "pairs unanimous.", "", "## Krippendorff's alpha (ordinal) per aspect", "",
             "| aspect | alpha |", "|---|---|"]
    lines += [f"| {a} | {_fmt(v)} |" for a, v in report["alpha_ordinal"].items()]
    lines += ["", "## Automatic evaluators on the unanimous pairs", "",
              "Ties earn half credit; `accuracy (non-tied)` counts only the decided predictions, "
              "`coverage` is their share.", "",
              "| judge | accuracy | accuracy (non-tied) | coverage | pairs | failed calls |", "|---|---|---|---|---|---|"]
    for name, m in report["judges"].items():
        lines.append(f"| {name} | {_fmt(m['accuracy'])} | {_fmt(m['accuracy_non_tied'])} | {_fmt(m['coverage'])} "
                     f"| {m['n_pairs']} | {m['failed_calls']} |")
    if not report["judges"]:
        lines.append("| (no judge ran) | | | | | |")
    columns = ["human"] + sorted({k for row in report["mean_scores"] for k in row} - {"version", "aspect", "human"})
    lines += ["", "## Mean score per version and aspect", "",
              "| version | aspect | " + " | ".join(columns) + " |", "|---" * (len(columns) + 2) + "|"]
    for row in report["mean_scores"]:
        lines.append(f"| {row['version']} | {row['aspect']} | "
                     + " | ".join(_fmt(row.get(c), 2) for c in columns) + " |")
    return "\n".join(lines) + "\n"


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
    for k, (metric, colour) in enumerate((("accuracy", "#55a868"), ("accuracy_non_tied", "#c44e52"),
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
                     out_dir: Path, min_annotators: int = 2) -> dict:
    """Compute, then write ``agreement.json``, ``agreement.md`` and ``agreement.png``."""
    report = compute_agreement(human_rows, score_rows, pair_rows, min_annotators)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / REPORT_JSON, json.dumps(report, indent=2, sort_keys=True))
    atomic_write_text(out_dir / REPORT_MARKDOWN, report_markdown(report))
    plot_report(report, out_dir / REPORT_PLOT)
    return report
