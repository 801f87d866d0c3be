"""Human ratings in Label Studio, automatic judges, and how well they agree.

Thin wrappers over the :mod:`annotation` steps (versions, labelstudio_client, judging, report);
every table lands under ``<data_dir>/annotation``.
The server itself is started with ``python -m annotation server start`` (or any Label Studio
the config's ``annotation.url`` points at).
"""

import dagster as dg

from annotation.judge_cache import JudgeCache
from annotation.judging import not_configured, run_judges, solved_pairs
from annotation.labelstudio_client import (
    AnnotationClient,
    project_titles,
    pull_study,
    push_tasks,
    write_snapshot,
)
from annotation.locations import annotation_dir, export_folder, server_token, server_url
from annotation.report import REPORT_PLOT, monitoring_markdown, report_markdown
from annotation.report import agreement_report as write_agreement_report
from annotation.tables import (
    HUMAN_COLUMNS,
    HUMAN_REJECTIONS_FILE,
    HUMAN_SCORES_FILE,
    JUDGE_CACHE_FILE,
    JUDGE_PAIRS_FILE,
    JUDGE_SCORES_FILE,
    PAIR_COLUMNS,
    REJECTION_COLUMNS,
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
    """The study's two projects: a blind rating task per clip, a side-by-side ranking task per sample;
    pushed idempotently (re-runs add only new clips), imported in a seeded shuffled order."""
    config = settings.load()
    clips = collect_versions(config)
    pushed = push_tasks(_client(config), config, clips)
    context.log.info(f"{pushed['rating_added']} new rating task(s), {pushed.get('ranking_added', 0)} new "
                     f"ranking task(s); each offered to {pushed['annotators_per_task']} annotators")
    urls = {f"{kind}_url": dg.MetadataValue.url(f"{server_url(config.annotation)}/projects/{pushed[f'{kind}_project_id']}")
            for kind in project_titles(config) if f"{kind}_project_id" in pushed}
    return dg.MaterializeResult(metadata={
        **pushed,
        **urls,
        "source": "versions folder" if config.annotation.versions_dir else "shards",
        "blinding_file": dg.MetadataValue.path(pushed["blinding_file"]),
    })


@dg.asset(group_name=GROUP, deps=[annotation_tasks], kinds={"labelstudio", "csv", "json"})
def human_scores(context: dg.AssetExecutionContext, settings: PipelineSettings) -> dg.MaterializeResult:
    """Tidy table of every submitted annotation (rater id x clip x aspect, the rank as aspect ``rank``),
    the rejected ones with their reasons, and Label Studio's raw JSON export of both projects."""
    config = settings.load()
    export = pull_study(_client(config), config)
    out = annotation_dir(config)
    path = write_table(out / HUMAN_SCORES_FILE, export.rows, HUMAN_COLUMNS)
    write_table(out / HUMAN_REJECTIONS_FILE, export.rejections, REJECTION_COLUMNS)
    manifest = write_snapshot(export_folder(config), export, config.annotation.seed)
    done: dict[str, dict[str, set]] = {}
    for r in export.rows:
        form = "ranking" if r["aspect"] == "rank" else "rating"
        done.setdefault(r["annotator"], {"rating": set(), "ranking": set()})[form].add(r["task_id"])
    table = "\n".join(["| annotator | rating tasks | ranking tasks |", "|---|---|---|"]
                      + [f"| {k} | {len(v['rating'])} | {len(v['ranking'])} |" for k, v in sorted(done.items())])
    rejected = "\n".join(["| annotator | form | sample | reason |", "|---|---|---|---|"]
                         + [f"| {r['annotator']} | {r['form']} | {r['sample']} | {r['reason']} |"
                            for r in export.rejections])
    if export.rejections:
        context.log.warning(f"{len(export.rejections)} annotation(s) rejected (see {HUMAN_REJECTIONS_FILE})")
    return dg.MaterializeResult(metadata={
        "rows": len(export.rows),
        "annotators": len(done),
        "tasks_annotated": len({r["task_id"] for r in export.rows}),
        "per_annotator": dg.MetadataValue.md(table if export.rows else "no annotations yet"),
        "rejected": len(export.rejections),
        "rejections": dg.MetadataValue.md(rejected if export.rejections else "none"),
        "superseded": export.superseded,
        **{f"{kind}_rubric_version": p["rubric_version"] for kind, p in export.projects.items()},
        "path": dg.MetadataValue.path(str(path)),
        "labelstudio_export": dg.MetadataValue.path(str(manifest)),
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
    """Changes whenever an annotation is added, edited or removed in either project of the study;
    None before the projects exist."""
    parts = []
    for title in project_titles(config).values():
        project = client.find_project(title)
        if project is None:
            continue
        stamps = [f"{task.id}:{getattr(task, 'total_annotations', 0)}:{getattr(task, 'updated_at', '')}"
                  for task in client.tasks(project)]
        parts.append(f"{project.id}|" + ",".join(sorted(stamps)))
    return ";".join(parts) or None


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
