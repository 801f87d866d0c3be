"""The annotation loop's CSV tables: human scores, rejected annotations, judge scores and judge verdicts on pairs.

Human rows: ``annotator`` is an opaque rater id (:mod:`annotation.blinding`), never an email;
``task_id`` the Label Studio task (a clip's rating task, or the sample's ranking task for
``aspect == "rank"``); ``lead_time_s`` Label Studio's time on the task for the whole annotation
(repeated on each of its rows); ``annotated_at`` when it was last saved and ``annotation_id`` its
Label Studio id (together they order one person's annotations); ``rubric_version`` the
hash of the form the annotator saw (:func:`annotation.rubric.rubric_version`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

from pipelines.atomic import atomic_write_text

HUMAN_COLUMNS = ("annotator", "task_id", "sample", "version", "aspect", "score", "lead_time_s", "annotated_at",
                 "annotation_id", "rubric_version")
REJECTION_COLUMNS = ("annotator", "task_id", "annotation_id", "form", "sample", "reason")
SCORE_COLUMNS = ("judge", "sample", "version", "aspect", "score", "input", "error")
PAIR_COLUMNS = ("judge", "sample", "a", "b", "prediction", "a_shown_first", "input", "error")

HUMAN_SCORES_FILE = "human_scores.csv"
HUMAN_REJECTIONS_FILE = "human_rejections.csv"
JUDGE_SCORES_FILE = "judge_scores.csv"
JUDGE_PAIRS_FILE = "judge_pairs.csv"
JUDGE_CACHE_FILE = "judge_cache.jsonl"


def write_table(path: Path, rows: Iterable[dict], columns: Sequence[str]) -> Path:
    """``rows`` as CSV with ``columns`` (None as an empty cell), written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, buf.getvalue())
    return path


def read_table(path: Path) -> list[dict]:
    """The rows of a table written by :func:`write_table` with numbers and flags typed back;
    ``[]`` when the file does not exist yet."""
    if not Path(path).exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in ("score", "task_id", "lead_time_s", "annotation_id"):
            if key in row:
                row[key] = float(row[key]) if row[key] not in ("", None) else None
        if "a_shown_first" in row:
            row["a_shown_first"] = row["a_shown_first"] == "True"
    return rows
