"""Human ratings in Label Studio, automatic judges, and how well they agree.

Thin wrappers over the :mod:`annotation` steps (versions, labelstudio_client, judging, report);
every table lands under ``<data_dir>/annotation``.
The server itself is started with ``python -m annotation server start`` (or any Label Studio
the config's ``annotation.url`` points at).
"""

import dagster as dg

from annotation.judge_cache import JudgeCache
from annotation.judging import not_configured, run_judges, solved_pairs
from annotation.labelstudio_client import AnnotationClient, pull_human_rows, push_tasks
from annotation.locations import annotation_dir, server_token, server_url
from annotation.report import REPORT_PLOT, monitoring_markdown, report_markdown
from annotation.report import agreement_report as write_agreement_report
from annotation.tables import (
    HUMAN_COLUMNS,
    HUMAN_SCORES_FILE,
    JUDGE_CACHE_FILE,
    JUDGE_PAIRS_FILE,
    JUDGE_SCORES_FILE,
    PAIR_COLUMNS,
    SCORE_COLUMNS,
    read_table,
    write_table,
)
from annotation.versions import collect_versions
from assets.resources import PipelineSettings
from assets.shards import dataset_shards

GROUP = "annotation"


def _client(config):
    return AnnotationClient(server_url(config.annotation), server_token(config))


@dg.asset(group_name=GROUP, deps=[dataset_shards], kinds={"labelstudio"})
def annotation_tasks(context: dg.AssetExecutionContext, settings: PipelineSettings) -> dg.MaterializeResult:
    """One Label Studio task per (sample, version), pushed idempotently: re-runs add only new keys."""
    config = settings.load()
    clips = collect_versions(config)
    pushed = push_tasks(_client(config), config, clips)
    context.log.info(f"{pushed['added']} new task(s); the project has {pushed['tasks']}")
    return dg.MaterializeResult(metadata={
        **pushed,
        "source": "versions folder" if config.annotation.versions_dir else "shards",
        "url": dg.MetadataValue.url(f"{server_url(config.annotation)}/projects/{pushed['project_id']}"),
    })


@dg.asset(group_name=GROUP, deps=[annotation_tasks], kinds={"labelstudio", "csv"})
def human_scores(context: dg.AssetExecutionContext, settings: PipelineSettings) -> dg.MaterializeResult:
    """Tidy table of every submitted annotation: annotator x task x aspect (ratings 1-5 and the rank)."""
    config = settings.load()
    rows = pull_human_rows(_client(config), config)
    path = write_table(annotation_dir(config) / HUMAN_SCORES_FILE, rows, HUMAN_COLUMNS)
    per_annotator: dict[str, int] = {}
    for r in rows:
        if r["aspect"] == "rank":
            per_annotator[r["annotator"]] = per_annotator.get(r["annotator"], 0) + 1
    table = "\n".join(["| annotator | tasks annotated |", "|---|---|"]
                      + [f"| {k} | {v} |" for k, v in sorted(per_annotator.items())])
    return dg.MaterializeResult(metadata={
        "rows": len(rows),
        "annotators": len({r["annotator"] for r in rows}),
        "tasks_annotated": len({r["task_id"] for r in rows}),
        "per_annotator": dg.MetadataValue.md(table if rows else "no annotations yet"),
        "path": dg.MetadataValue.path(str(path)),
    })


@dg.asset(group_name=GROUP, deps=[annotation_tasks, human_scores], kinds={"csv"})
def judge_scores(context: dg.AssetExecutionContext, settings: PipelineSettings) -> dg.MaterializeResult:
    """Every configured MLLM judge over the same versions: scores per clip and verdicts per pair.

    The in-context pairwise judge is shown solved human pairs from other samples, so it depends
    on the human scores. Results are cached in ``judge_cache.jsonl`` by clip sha256, judge kind,
    prompt version and model: after new annotations only the comparisons they change are asked."""
    config = settings.load()
    judges = config.annotation.judges
    out = annotation_dir(config)
    clips = collect_versions(config)
    if judges.backend == "none":
        context.log.warning("annotation.judges.backend is 'none': no judge ran (every row says so)")
    solved = solved_pairs(read_table(out / HUMAN_SCORES_FILE), config.annotation.min_annotators)
    cache = JudgeCache(out / JUDGE_CACHE_FILE)
    done = {"n": 0}

    def progress(kind, item):
        done["n"] += 1
        if done["n"] % 10 == 0:
            context.log.info(f"{done['n']} judgement(s) done (now {kind})")

    score_rows, pair_rows = run_judges(clips, judges, solved, progress, cache)
    write_table(out / JUDGE_SCORES_FILE, score_rows, SCORE_COLUMNS)
    write_table(out / JUDGE_PAIRS_FILE, pair_rows, PAIR_COLUMNS)
    failed = sum(1 for r in score_rows + pair_rows if r.get("error") and not not_configured(r))
    inputs: dict[str, int] = {}
    for r in score_rows + pair_rows:
        if r.get("input"):
            inputs[r["input"]] = inputs.get(r["input"], 0) + 1
    return dg.MaterializeResult(metadata={
        "backend": judges.backend,
        "judges": ", ".join(judges.kinds) if judges.backend != "none" else "none (judge_backend_not_configured)",
        "score_rows": len(score_rows),
        "pair_rows": len(pair_rows),
        "failed_calls": failed,
        "cached_results": cache.hits,
        "new_results": cache.misses,
        "inputs": ", ".join(f"{k}: {v}" for k, v in sorted(inputs.items())) or "none",
    })


@dg.asset(group_name=GROUP, deps=[human_scores, judge_scores], kinds={"json", "markdown"})
def agreement_report(context: dg.AssetExecutionContext, settings: PipelineSettings) -> dg.MaterializeResult:
    """Krippendorff's alpha per aspect, unanimous pairs, each judge's accuracy and coverage, mean
    scores, per-annotator monitoring (leave-one-out alpha, majority agreement, score
    distributions, time per task, gold clips), plots."""
    config = settings.load()
    out = annotation_dir(config)
    gold = [g.model_dump() for g in config.annotation.gold]
    report = write_agreement_report(read_table(out / HUMAN_SCORES_FILE), read_table(out / JUDGE_SCORES_FILE),
                                    read_table(out / JUDGE_PAIRS_FILE), out / "report",
                                    config.annotation.min_annotators, gold)
    metadata = {
        "report": dg.MetadataValue.md(report_markdown(report)),
        "annotators": dg.MetadataValue.md(monitoring_markdown(report)),
        "plot": dg.MetadataValue.path(str(out / "report" / REPORT_PLOT)),
        "pairs_unanimous": report["pairs_unanimous"],
        "pairs_all_tie": report["pairs_all_tie"],
        "pairs_total": report["pairs_total"],
    }
    for aspect, alpha in report["alpha_ordinal"].items():
        metadata[f"alpha_{aspect}"] = dg.MetadataValue.float(alpha if alpha is not None else float("nan"))
    for name, numbers in report["judges"].items():
        for key in ("accuracy", "coverage"):
            value = numbers[key]
            metadata[f"{name}_{key}"] = dg.MetadataValue.float(value if value is not None else float("nan"))
    return dg.MaterializeResult(metadata=metadata)


ANNOTATION_ASSETS = [annotation_tasks, human_scores, judge_scores, agreement_report]

annotation_loop_job = dg.define_asset_job(
    "annotation_loop", selection=dg.AssetSelection.assets(*ANNOTATION_ASSETS),
    description="Push tasks to Label Studio, pull the ratings, run the judges, report agreement.",
)
refresh_annotations_job = dg.define_asset_job(
    "refresh_annotations", selection=dg.AssetSelection.assets(human_scores, judge_scores, agreement_report),
    description="Pull new ratings from Label Studio and recompute the judges' agreement.",
)


def annotation_fingerprint(client, config) -> str | None:
    """Changes whenever an annotation is added, edited or removed; None before the project exists."""
    for project in client.ls.projects.list(title=config.annotation.project_title):
        if project.title != config.annotation.project_title:
            continue
        stamps = []
        for task in client.tasks(project):
            stamps.append(f"{task.id}:{getattr(task, 'total_annotations', 0)}:{getattr(task, 'updated_at', '')}")
        return f"{project.id}|" + ",".join(sorted(stamps))
    return None


@dg.sensor(job=refresh_annotations_job, minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.STOPPED)
def new_annotations(context: dg.SensorEvaluationContext, settings: PipelineSettings):
    """Pull annotations when Label Studio has new or changed ones (start it in the UI once the
    server runs)."""
    import hashlib

    config = settings.load()
    try:
        fingerprint = annotation_fingerprint(_client(config), config)
    except Exception as exc:  # server down or no token: say so in the tick, try again next time
        return dg.SkipReason(f"Label Studio not reachable at {server_url(config.annotation)}: "
                             f"{type(exc).__name__}: {str(exc)[:200]}")
    if fingerprint is None:
        return dg.SkipReason(f"no project {config.annotation.project_title!r} yet (materialise annotation_tasks)")
    digest = hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
    if digest == context.cursor:
        return dg.SkipReason("no new annotations")
    context.update_cursor(digest)
    return dg.RunRequest(run_key=digest)
