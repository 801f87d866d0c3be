"""The annotation loop as plain functions: what to rate, human scores, judge scores, agreement.

Each step reads and writes plain files under ``<data_dir>/annotation`` so every step runs on its
own (the Dagster assets in ``assets/annotation.py`` are thin wrappers):

* :func:`collect_versions` - the clips to rate: a folder of versions
  (``<versions_dir>/<sample>/<version>.mp4``) or the accepted clips in the shards (one version,
  ``original``, per sample, extracted next to Label Studio's media root);
* :func:`push_tasks` - idempotent import into the Label Studio project;
* :func:`pull_human_rows` - the tidy table, one row per annotator x task x aspect (plus ``rank``);
* :func:`run_judges` - every configured MLLM judge over the same versions;
* :func:`agreement_report` - Krippendorff's alpha, unanimous pairs, judge accuracy, mean scores,
  written as JSON, markdown and one PNG.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import tarfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from pipelines.atomic import atomic_path, atomic_write_bytes
from pipelines.config import AnnotationConfig, JudgeConfig, PipelineConfig
from pipelines.ingest import atomic_write_text
from pipelines.schema.index import INDEX_FILE, MissingShardIndexError, ShardIndex, ShardIndexError, shards_lock

from . import agreement as A
from .rubric import ASPECTS, RANK_NAME

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".m4v")
SHARDS_VERSION = "original"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

HUMAN_COLUMNS = ("annotator", "task_id", "sample", "version", "aspect", "score")
SCORE_COLUMNS = ("judge", "sample", "version", "aspect", "score", "error")
PAIR_COLUMNS = ("judge", "sample", "a", "b", "prediction", "a_shown_first", "error")
# The error of every row when annotation.judges.backend is "none": no judge ran, nothing failed.
NOT_CONFIGURED = "judge_backend_not_configured"
NOT_CONFIGURED_ERROR = f"{NOT_CONFIGURED}: annotation.judges.backend is 'none', no call was made"


class AnnotationInputError(ValueError):
    """The versions to rate cannot be used as given (missing folder, bad names, no clips)."""


@dataclass(frozen=True)
class VersionClip:
    sample: str
    version: str
    path: Path
    transcript: str | None = None


# --------------------------------------------------------------------------- locations


def annotation_dir(config: PipelineConfig) -> Path:
    return config.paths.data_dir / "annotation"


def server_dir(config: PipelineConfig) -> Path:
    return config.annotation.server_dir or config.paths.data_dir / "labelstudio"


def media_root(config: PipelineConfig) -> Path:
    """Label Studio's LOCAL_FILES_DOCUMENT_ROOT: the parent of the folder its storage serves."""
    return media_folder(config).parent


def media_folder(config: PipelineConfig) -> Path:
    """The folder attached as the project's local-files storage (a strict subfolder of the root)."""
    if config.annotation.versions_dir is not None:
        return config.annotation.versions_dir
    return annotation_dir(config) / "media" / "clips"


def server_url(cfg: AnnotationConfig) -> str:
    return (cfg.url or f"http://127.0.0.1:{cfg.port}").rstrip("/")


def server_token(config: PipelineConfig) -> str:
    """The API token: the configured environment variable, else the server's 0600 token file."""
    token = os.environ.get(config.annotation.token_env, "").strip()
    if token:
        return token
    path = server_dir(config) / "api_token"
    if path.exists() and path.read_text().strip():
        return path.read_text().strip()
    raise RuntimeError(
        f"no Label Studio token: set ${config.annotation.token_env} or start the local server "
        f"(python -m annotation server start), which writes {path}"
    )


# --------------------------------------------------------------------------- versions


def versions_from_folder(folder: Path) -> list[VersionClip]:
    """``<folder>/<sample>/<version>.<ext>``, sorted; names must be plain (they become task keys)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AnnotationInputError(f"versions folder {folder} does not exist")
    clips = []
    for sample_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for path in sorted(sample_dir.iterdir()):
            if path.suffix.lower() not in VIDEO_EXTENSIONS:
                continue
            if not _SAFE_NAME.match(sample_dir.name) or not _SAFE_NAME.match(path.stem):
                raise AnnotationInputError(
                    f"{path}: sample and version names may use letters, digits, '.', '_' and '-' only"
                )
            if path.stat().st_size == 0:
                raise AnnotationInputError(f"{path} is empty")
            clips.append(VersionClip(sample_dir.name, path.stem, path))
    if not clips:
        raise AnnotationInputError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) under {folder}/<sample>/")
    return clips


def versions_from_shards(shards_dir: Path, out_folder: Path) -> list[VersionClip]:
    """Extract each accepted clip's mp4 to ``<out_folder>/<key>/original.mp4`` (unchanged files
    are left alone) and return one version per sample, with its transcript when present.

    The samples are the ones ``index.json`` lists, read under the shard folder's shared lock
    so a packer never swaps a shard out from under the extraction."""
    shards_dir = Path(shards_dir)
    if not (shards_dir / INDEX_FILE).exists():
        raise AnnotationInputError(f"no shards yet: {shards_dir / INDEX_FILE} is missing (materialise dataset_shards)")
    clips = []
    with shards_lock(shards_dir, shared=True):
        try:
            index = ShardIndex.load(shards_dir)
        except (MissingShardIndexError, ShardIndexError) as error:
            raise AnnotationInputError(f"cannot read the shards to rate: {error}") from None
        for name, path in zip(index.names, index.paths()):
            with tarfile.open(path) as tar:
                members = {m.name: m for m in tar.getmembers()}
                for key in index.keys_in(name):
                    if f"{key}.mp4" not in members:
                        raise AnnotationInputError(f"{path}: sample {key} listed in {INDEX_FILE} has no mp4")
                    data = tar.extractfile(members[f"{key}.mp4"]).read()
                    target = Path(out_folder) / key / f"{SHARDS_VERSION}.mp4"
                    if not (target.exists() and target.read_bytes() == data):
                        atomic_write_bytes(target, data)
                    transcript = None
                    if f"{key}.json" in members:
                        record = json.loads(tar.extractfile(members[f"{key}.json"]).read())
                        transcript = (record.get("speech") or {}).get("transcript")  # speech stage payload
                    clips.append(VersionClip(key, SHARDS_VERSION, target, transcript or None))
    if not clips:
        raise AnnotationInputError(f"{shards_dir / INDEX_FILE} lists no samples: no clip was accepted")
    return clips


def collect_versions(config: PipelineConfig) -> list[VersionClip]:
    if config.annotation.versions_dir is not None:
        return versions_from_folder(config.annotation.versions_dir)
    return versions_from_shards(config.paths.shards_dir, media_folder(config))


def task_data(clips: Sequence[VersionClip], root: Path) -> list[dict]:
    from .labelstudio import local_file_url

    per_sample: dict[str, int] = defaultdict(int)
    for clip in clips:
        per_sample[clip.sample] += 1
    return [{"sample": c.sample, "version": c.version, "n_versions": per_sample[c.sample],
             "video": local_file_url(c.path, root)} for c in clips]


# --------------------------------------------------------------------------- Label Studio


def push_tasks(client, config: PipelineConfig, clips: Sequence[VersionClip]) -> dict:
    """Create the project (and its media storage) when missing; import tasks not there yet."""
    most = max((sum(1 for c in clips if c.sample == s) for s in {c.sample for c in clips}), default=1)
    if most > config.annotation.max_versions:
        raise AnnotationInputError(
            f"a sample has {most} versions but annotation.max_versions is {config.annotation.max_versions}"
        )
    project = client.ensure_project(config.annotation.project_title, n_versions=config.annotation.max_versions)
    client.ensure_local_storage(project, media_folder(config))
    added = client.import_tasks(project, task_data(clips, media_root(config)))
    return {"project_id": project.id, "added": added, "tasks": len(client.task_keys(project)),
            "samples": len({c.sample for c in clips}), "versions": len(clips)}


def pull_human_rows(client, config: PipelineConfig) -> list[dict]:
    project = client.ensure_project(config.annotation.project_title, n_versions=config.annotation.max_versions)
    rows = client.export_rows(project)
    return sorted(rows, key=lambda r: (r["sample"], r["version"], r["annotator"], r["aspect"]))


# --------------------------------------------------------------------------- tables


def write_table(path: Path, rows: Iterable[dict], columns: Sequence[str]) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, buf.getvalue())
    return path


def read_table(path: Path) -> list[dict]:
    if not Path(path).exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in ("score", "task_id"):
            if key in row:
                row[key] = float(row[key]) if row[key] not in ("", None) else None
        if "a_shown_first" in row:
            row["a_shown_first"] = row["a_shown_first"] == "True"
    return rows


# --------------------------------------------------------------------------- judges


def sample_frames(path: Path, n: int) -> list[np.ndarray]:
    """``n`` frames spread uniformly over the clip (the middle of ``n`` equal spans)."""
    from pipelines.media import read_video_frames

    frames = read_video_frames(path)
    if not frames:
        raise AnnotationInputError(f"{path}: no video frames")
    idx = [min(len(frames) - 1, int((k + 0.5) * len(frames) / n)) for k in range(n)]
    return [frames[i] for i in idx]


def make_backend(cfg: JudgeConfig, aspect: str | None = None):
    from .judges import GeminiBackend, OpenAIChatBackend

    common = dict(api_key_env=cfg.api_key_env or None, timeout_s=cfg.timeout_s, max_retries=cfg.max_retries,
                  backoff_s=cfg.backoff_s, max_concurrency=cfg.max_concurrency)
    if cfg.backend == "openai_chat":
        return OpenAIChatBackend(cfg.base_url, cfg.model, **common)
    if cfg.backend == "gemini":
        return GeminiBackend(cfg.model, base_url=cfg.base_url, **common)
    raise ValueError(f"judge backend {cfg.backend!r} makes no calls")


def _score_rows(name: str, clip: VersionClip, result) -> list[dict]:
    rows = [{"judge": name, "sample": clip.sample, "version": clip.version, "aspect": "overall",
             "score": result.overall, "error": None}]
    for aspect, score in result.scores.items():
        if aspect in ASPECTS:
            rows.append({"judge": name, "sample": clip.sample, "version": clip.version, "aspect": aspect,
                         "score": float(score), "error": None})
    return rows


def _in_context_examples(videos, human_pairs: Sequence[dict], sample: str, k: int):
    """Solved pairs from *other* samples, so a judged pair never sees its own answer."""
    from .judges import PairExample

    winners = {"A": "first", "B": "second", "tie": "tie"}
    out = []
    for p in human_pairs:
        if p["sample"] == sample or (p["sample"], p["a"]) not in videos or (p["sample"], p["b"]) not in videos:
            continue
        out.append(PairExample(videos[(p["sample"], p["a"])], videos[(p["sample"], p["b"])], winners[p["winner"]],
                               "Chosen by every human annotator."))
        if len(out) == k:
            break
    return out


def _pairs_by_sample(clips: Sequence[VersionClip]) -> dict[str, list[tuple[str, str]]]:
    by_sample: dict[str, list[str]] = defaultdict(list)
    for clip in clips:
        by_sample[clip.sample].append(clip.version)
    return {sample: list(combinations(sorted(versions), 2)) for sample, versions in sorted(by_sample.items())}


def _not_configured_rows(clips: Sequence[VersionClip], cfg: JudgeConfig) -> tuple[list[dict], list[dict]]:
    """One row per clip (score kinds) and per pair (pairwise kinds), each saying that no judge ran."""
    score_rows, pair_rows = [], []
    for kind in cfg.kinds:
        if kind.startswith("pairwise_"):
            pair_rows += [{"judge": kind, "sample": sample, "a": a, "b": b, "prediction": None, "a_shown_first": None,
                           "error": NOT_CONFIGURED_ERROR}
                          for sample, pairs in _pairs_by_sample(clips).items() for a, b in pairs]
        else:
            score_rows += [{"judge": kind, "sample": c.sample, "version": c.version, "aspect": "overall",
                            "score": None, "error": NOT_CONFIGURED_ERROR} for c in clips]
    return score_rows, pair_rows


def not_configured(row: dict) -> bool:
    """A row written because no judge backend is configured (not a failed call)."""
    return str(row.get("error") or "").startswith(NOT_CONFIGURED)


def run_judges(clips: Sequence[VersionClip], cfg: JudgeConfig, human_pairs: Sequence[dict] = (),
               progress=None) -> tuple[list[dict], list[dict]]:
    """(score rows, pair rows) for every configured judge kind; a failed call becomes a row with
    ``error`` set and no score (counted as a tie when judges are evaluated), never an exception.
    Backend ``none`` makes no call: every row's error is :data:`NOT_CONFIGURED_ERROR`."""
    from pipelines.chat_http import BackendError

    from .judges import (
        AspectJudge,
        HolisticJudge,
        JudgeError,
        PairwiseJudge,
        SpecialistJudge,
        Video,
    )

    if cfg.backend == "none":
        return _not_configured_rows(clips, cfg)
    videos = {(c.sample, c.version): Video(sample_frames(c.path, cfg.frames_per_video), c.transcript,
                                           f"{c.sample}/{c.version}") for c in clips}
    backend = make_backend(cfg)
    score_judges = {"holistic": lambda: HolisticJudge(backend), "aspects": lambda: AspectJudge(backend),
                    "specialist": lambda: SpecialistJudge(backend)}
    failures = (JudgeError, BackendError)
    score_rows: list[dict] = []
    pair_rows: list[dict] = []
    for kind in cfg.kinds:
        if kind in score_judges:
            judge = score_judges[kind]()
            for clip in clips:
                try:
                    score_rows += _score_rows(kind, clip, judge.judge(videos[(clip.sample, clip.version)]))
                except failures as exc:
                    score_rows.append({"judge": kind, "sample": clip.sample, "version": clip.version,
                                       "aspect": "overall", "score": None, "error": f"{type(exc).__name__}: {exc}"})
                if progress:
                    progress(kind, clip)
            continue
        mode = kind.removeprefix("pairwise_")
        plain = PairwiseJudge(backend, mode="direct" if mode == "in_context" else mode, rng_seed=cfg.seed)
        for sample, pairs in _pairs_by_sample(clips).items():
            judge = plain
            if mode == "in_context":
                examples = _in_context_examples(videos, human_pairs, sample, cfg.in_context_examples)
                if not examples:
                    for a, b in pairs:
                        pair_rows.append({"judge": kind, "sample": sample, "a": a, "b": b, "prediction": None,
                                          "a_shown_first": None, "error": "no solved pairs from other samples"})
                    continue
                judge = PairwiseJudge(backend, mode="in_context", rng_seed=cfg.seed, examples=examples)
            for a, b in pairs:
                try:
                    result = judge.compare(videos[(sample, a)], videos[(sample, b)])
                    pair_rows.append({"judge": kind, "sample": sample, "a": a, "b": b,
                                      "prediction": {"a": "A", "b": "B", "tie": "tie"}[result.winner],
                                      "a_shown_first": result.a_shown_first, "error": None})
                except failures as exc:
                    pair_rows.append({"judge": kind, "sample": sample, "a": a, "b": b, "prediction": None,
                                      "a_shown_first": None, "error": f"{type(exc).__name__}: {exc}"})
                if progress:
                    progress(kind, (sample, a, b))
    return score_rows, pair_rows


# --------------------------------------------------------------------------- agreement


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
    atomic_write_text(out_dir / "agreement.json", json.dumps(report, indent=2, sort_keys=True))
    atomic_write_text(out_dir / "agreement.md", report_markdown(report))
    plot_report(report, out_dir / "agreement.png")
    return report
