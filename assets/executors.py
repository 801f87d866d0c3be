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
import dagster as dg

EXECUTOR_ENV = "TALKINGHEAD_EXECUTOR"
CELERY_BROKER_ENV = "TALKINGHEAD_CELERY_BROKER"
CELERY_BACKEND_ENV = "TALKINGHEAD_CELERY_BACKEND"
EXECUTORS = ("multiprocess", "in_process", "celery", "k8s")
DEFAULT_EXECUTOR = "multiprocess"
# The code location's jobs (assets/definitions.py), rebuilt by name on the executor (assets/job_runs.py).
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
# Importing these builds no model (pipelines.runner._BUILT starts empty; backends are built on a
# step's first use, tests/pipelines/test_workers.py checks it), so every step process loads its
# own models after the fork and none share a half-initialised session or thread pool.
# max_concurrent (the executor's config) is how many step processes run at once, hence how many
# copies of a stage's models are in memory at once (assets/resources.py StageModels).
PRELOAD_MODULES = ["assets.definitions", "pipelines.runner", "pipelines.asd.score", "pipelines.speech.stage", "pipelines.flame.stage",
                   "pipelines.captions.stage"]


def executor_run_config(name: str | None = None) -> dict:
    """Run config for the executor's own settings (only the multiprocess one has defaults here)."""
    if (name or executor_name()) != "multiprocess":
        return {}
    return {"execution": {"config": {"multiprocess": {
        "start_method": {"forkserver": {"preload_modules": PRELOAD_MODULES}}}}}}
