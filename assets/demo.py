"""Materialise the whole graph for every video in a folder, through Dagster, and print a summary.

    DAGSTER_HOME=.dagster_home python -m assets.demo [--input DIR] [--config FILE]
        [--executor multiprocess|in_process|celery|k8s]

Runs are recorded in the instance at $DAGSTER_HOME (SQLite by default), so `dagster dev`
on the same home shows them afterwards.
"""

import argparse
import os
import sys
from pathlib import Path

import dagster as dg

from assets.definitions import ALL_ASSETS, ALL_CHECKS, build_resources
from assets.executors import EXECUTOR_ENV, EXECUTORS, executor_run_config
from assets.job_runs import RunResult, build_dataset_job, process_sources_job, run_job
from assets.partitions import PER_SOURCE_GROUPS, SOURCE_PARTITIONS_NAME
from assets.sources import register_sources
from pipelines.config import INPUT_DIR_ENV, load_config
from pipelines.schema.index import ShardIndex
from pipelines.schema.manifest import DatasetStats
from pipelines.workdir import load_record

# Dagster's console logger prints every engine event at DEBUG; the demo keeps warnings only.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _materialize_in_process(config_path: str | None, instance: dg.DagsterInstance,
                            partition_key: str | None) -> RunResult:
    everything = [*ALL_ASSETS, *ALL_CHECKS]
    groups = PER_SOURCE_GROUPS if partition_key else ("dataset",)
    return dg.materialize(everything, selection=dg.AssetSelection.groups(*groups), partition_key=partition_key,
                          instance=instance, resources=build_resources(config_path),
                          raise_on_error=False, run_config=QUIET)


def _run_on_executor(config_path: str | None, instance: dg.DagsterInstance,
                     partition_key: str | None) -> RunResult:
    """The code location's jobs on the executor named by $TALKINGHEAD_EXECUTOR (assets/executors.py)."""
    run_config = {**QUIET, **executor_run_config(), "resources": {"settings": {"config": {"config_path": config_path}}}}
    job = process_sources_job if partition_key else build_dataset_job
    return run_job(job, instance, partition_key=partition_key, run_config=run_config)


def run_demo(config_path: str | None, instance: dg.DagsterInstance, log=print, executor: str | None = None) -> dict:
    """Process every source, one partition run after another, then pack the dataset.

    ``executor`` None: each run in this process (``dg.materialize``); otherwise the name of
    an executor (assets/executors.py) that runs the code location's jobs. Partition runs
    in parallel are the run queue's job (the sensor requests one run per source).
    """
    config = load_config(config_path)
    if executor is not None:
        os.environ[EXECUTOR_ENV] = executor
    run = _materialize_in_process if executor is None else _run_on_executor
    source_ids, new = register_sources(config, instance)
    if new:
        instance.add_dynamic_partitions(SOURCE_PARTITIONS_NAME, new)
    log(f"{len(source_ids)} source(s) in {config.paths.input_dir} ({len(new)} newly registered)")
    failed_runs = []
    for n, sid in enumerate(source_ids, 1):
        result = run(config_path, instance, sid)
        record = load_record(config, sid) if result.success else None
        status = (record.status + (f" ({record.reason})" if record.reason else "")) if record else "RUN FAILED"
        if not result.success:
            failed_runs.append(sid)
        log(f"[{n}/{len(source_ids)}] {sid}: {status}")
    result = run(config_path, instance, None)
    checks = {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()} if result.success else {}
    stats = DatasetStats.load(config.paths.shards_dir).model_dump(mode="json") if result.success else {}
    shards = ShardIndex.load(config.paths.shards_dir).locations() if result.success else []
    return {"stats": stats, "shards": shards,
            "checks": checks, "failed_runs": failed_runs, "dataset_run_ok": result.success,
            "manifest": str(config.paths.shards_dir / "manifest.jsonl"),
            "qc_reports": [str(config.paths.shards_dir / "qc" / n) for n in ("overview.png", "gates.png")]}


def print_summary(summary: dict) -> None:
    stats = summary["stats"]
    print("\n== summary ==")
    if stats:
        print(f"sources: {stats['sources']['total']} ({stats['sources']['accepted']} with accepted clips)")
        print(f"clips accepted: {stats['segments']['accepted']} "
              f"({stats['accepted_duration_s']['total']:.1f} s of video)")
        rejected = {**{f"source/{k}": v for k, v in stats["sources"]["rejected_by_reason"].items()},
                    **{f"segment/{k}": v for k, v in stats["segments"]["rejected_by_reason"].items()}}
        print("rejected by reason: " + (", ".join(f"{k}={v}" for k, v in rejected.items()) or "none"))
        skipped = stats.get("skipped_files", {})  # input files that are not sources: links out, other types, copies
        print("files not taken as sources: " + (", ".join(f"{k}={v}" for k, v in skipped.items()) or "none"))
        funnel = stats.get("funnel")
        if funnel:  # where the decoded seconds went, gate by gate
            lost = sorted(funnel["lost_s"].items(), key=lambda kv: -kv[1])
            print(f"seconds: {funnel['seconds_in']:.1f} in, {funnel['seconds_kept']:.1f} kept, "
                  f"{funnel['seconds_pending']:.1f} pending; lost: " + (", ".join(f"{k}={v:.1f}" for k, v in lost)
                                                                         or "none"))
        print("accepted with flags: " + (", ".join(f"{k}={v}" for k, v in stats["accepted_flags"].items()) or "none"))
    for path in summary["shards"]:
        print(f"shard: {path}")
    print(f"manifest: {summary['manifest']}")
    for path in summary.get("qc_reports", []):
        print(f"QC report: {path}")
    print("checks: " + ", ".join(f"{k}={'passed' if v else 'FAILED'}" for k, v in summary["checks"].items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="pipeline YAML config (default: $TALKINGHEAD_CONFIG or built-in defaults)")
    parser.add_argument("--input", help="folder of source videos (overrides the config's paths.input_dir)")
    parser.add_argument("--executor", choices=EXECUTORS,
                        help="run the code location's jobs on this executor (default: every run in this process)")
    args = parser.parse_args(argv)
    if args.input:
        os.environ[INPUT_DIR_ENV] = str(Path(args.input).resolve())
    if not os.environ.get("DAGSTER_HOME"):
        parser.error("set DAGSTER_HOME (the Makefile uses ./.dagster_home)")
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    with dg.DagsterInstance.get() as instance:
        summary = run_demo(args.config, instance, executor=args.executor)
    print_summary(summary)
    ok = summary["dataset_run_ok"] and not summary["failed_runs"] and all(summary["checks"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
