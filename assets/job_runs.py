"""Running the code location's jobs on the configured executor (assets/executors.py).

Kept apart from the executor choice so that the code location (assets/definitions.py) can
use the executor without importing the module that rebuilds jobs from it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import dagster as dg

from assets.executors import DATASET_JOB, PROCESS_JOB, build_executor

# What a run returns: in-process (dg.materialize) or through an executor (dg.execute_job).
RunResult = dg.ExecuteInProcessResult | dg.JobExecutionResult


def _job(name: str) -> dg.JobDefinition:
    # The executor is read from the environment when the job is built, not when
    # assets.definitions was imported: the run process and every step process (or worker)
    # rebuild the job through these functions and must agree.
    from assets.definitions import defs

    return defs.resolve_job_def(name).with_executor_def(build_executor())


def process_sources_job() -> dg.JobDefinition:
    """Every per-source stage for one partition; module-level so it is reconstructable."""
    return _job(PROCESS_JOB)


def build_dataset_job() -> dg.JobDefinition:
    """Shards, index, stats, manifest and the dataset checks."""
    return _job(DATASET_JOB)


def run_job(job_fn: Callable[[], dg.JobDefinition], instance: dg.DagsterInstance,
            partition_key: str | None = None, run_config: Mapping | None = None) -> RunResult:
    """One run of a code-location job on the configured executor (needs a persistent instance)."""
    tags = {"dagster/partition": partition_key} if partition_key else None
    return dg.execute_job(dg.reconstructable(job_fn), instance=instance, run_config=dict(run_config or {}),
                          tags=tags, raise_on_error=False)


def verify_dataset_job() -> dg.JobDefinition:
    """Full verification: every shard streamed (assets/shards.py)."""
    return _job("verify_dataset")


def compact_dataset_job() -> dg.JobDefinition:
    """Explicit compaction of small or largely retired shards (assets/shards.py)."""
    return _job("compact_dataset")
