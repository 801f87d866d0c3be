"""Which engine runs the steps, chosen per deployment, and a driver that runs the graph on it.

``TALKINGHEAD_EXECUTOR`` picks the executor of the code location (``assets.definitions``):

- ``multiprocess`` (default): Dagster's ``multi_or_in_process_executor``, one process per
  step; run config ``execution: {config: {in_process: {}}}`` switches a run to in-process.
- ``in_process``: every step in the run's own process.
- ``celery``: ``dagster_celery.celery_executor``; steps become Celery tasks that any worker
  on the broker executes (``deploy/celery/``). Broker and backend come from
  ``TALKINGHEAD_CELERY_BROKER`` / ``TALKINGHEAD_CELERY_BACKEND`` unless the run config sets them.
- ``k8s``: ``dagster_k8s.k8s_job_executor``, one Kubernetes Job per step (``deploy/k8s/``).

The step processes (and Celery workers or pods) read the pipeline config the same way as
the run: the same ``TALKINGHEAD_*`` environment or config file must reach them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import dagster as dg

EXECUTOR_ENV = "TALKINGHEAD_EXECUTOR"
CELERY_BROKER_ENV = "TALKINGHEAD_CELERY_BROKER"
CELERY_BACKEND_ENV = "TALKINGHEAD_CELERY_BACKEND"
EXECUTORS = ("multiprocess", "in_process", "celery", "k8s")
DEFAULT_EXECUTOR = "multiprocess"

# What a run returns: in-process (dg.materialize) or through an executor (dg.execute_job).
RunResult = dg.ExecuteInProcessResult | dg.JobExecutionResult

PROCESS_JOB = "process_sources"
DATASET_JOB = "build_dataset"


def executor_name() -> str:
    name = os.environ.get(EXECUTOR_ENV) or DEFAULT_EXECUTOR
    if name not in EXECUTORS:
        raise ValueError(f"${EXECUTOR_ENV}={name!r}: expected one of {', '.join(EXECUTORS)}")
    return name


def build_executor(name: str | None = None) -> dg.ExecutorDefinition:
    """The executor definition for ``name`` (default: ``$TALKINGHEAD_EXECUTOR``, else multiprocess)."""
    name = name or executor_name()
    if name == "multiprocess":
        return dg.multi_or_in_process_executor
    if name == "in_process":
        return dg.in_process_executor
    if name == "celery":
        from dagster_celery import celery_executor

        defaults = {key: {"env": env} for key, env in (("broker", CELERY_BROKER_ENV), ("backend", CELERY_BACKEND_ENV))
                    if os.environ.get(env)}
        return celery_executor.configured(defaults) if defaults else celery_executor
    if name == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    raise ValueError(f"unknown executor {name!r}: expected one of {', '.join(EXECUTORS)}")


# Step processes fork from one server that has already imported the code location and the
# model libraries, instead of each paying several seconds of imports (measured in the README).
PRELOAD_MODULES = ["assets.definitions", "pipelines.asd.score", "pipelines.speech.stage", "pipelines.flame.stage",
                   "pipelines.captions.stage"]


def executor_run_config(name: str | None = None) -> dict:
    """Run config for the executor's own settings (only the multiprocess one has defaults here)."""
    if (name or executor_name()) != "multiprocess":
        return {}
    return {"execution": {"config": {"multiprocess": {
        "start_method": {"forkserver": {"preload_modules": PRELOAD_MODULES}}}}}}


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
