"""The one stage runner: ``talkinghead run``, the benches and the Dagster assets all call it.

For one stage and one source it takes the source's lock, computes the fingerprint (stage
version + the config sections it reads + the fingerprints of its inputs, and for the face
stage the source's sha256), and skips the work when the stored output has that same
fingerprint. Otherwise it withdraws the old output, gives the stage its candidate
segments (the face segments after the stages it needs) and writes what the stage returns.
Model backends are built once per process and setting (:class:`ModelBackends`).
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError
from tqdm import tqdm

from pipelines.config import PipelineConfig
from pipelines.decisions import apply_results
from pipelines.devices import set_thread_limit, threads_per_worker
from pipelines.workdir import load_record, source_dir, source_lock
from pipelines.registry import ROOT, STAGES, ancestors, deciding_stages, stage
from pipelines.schema.records import ACCEPTED, SourceRecord, SourceRef, StageResult
from pipelines.stage_spec import ProgressFn, StageContext, digest

OutcomeStatus = Literal["ran", "unchanged", "disabled"]

# (stage, its config fingerprint, model dir) -> built backend; one per process and setting.
_BUILT: dict[tuple[str, str, str], Any] = {}


class StageInputMissing(RuntimeError):
    """A stage was asked to run before a stage it needs has run for that source."""


class ModelBackends:
    """The model backend of each stage, built on first use and shared by every later call in
    this process with the same config section (a Dagster step, a CLI run, a bench)."""

    def __init__(self, config: PipelineConfig):
        self.config = config

    def get(self, name: str, config: PipelineConfig | None = None) -> Any:
        """The backend of stage ``name`` for ``config`` (default: the one given at construction)."""
        config = config or self.config
        spec = stage(name)
        key = (name, spec.config_fingerprint(config), str(config.paths.model_dir))
        if key not in _BUILT:
            _BUILT[key] = spec.build_backend(config)
        return _BUILT[key]


def close_backends() -> None:
    """Release every backend built in this process (detector sessions, worker pools)."""
    for backend in _BUILT.values():
        close = getattr(backend, "close", None)
        if close is not None:
            close()
    _BUILT.clear()


@dataclass(frozen=True)
class StageOutcome:
    stage: str
    source_id: str
    status: OutcomeStatus
    fingerprint: str
    seconds: float
    result: SourceRecord | StageResult | None  # what is on disk now (None: disabled)


@dataclass
class RunReport:
    records: list[SourceRecord] = field(default_factory=list)  # each source's face record
    outcomes: list[StageOutcome] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # source id -> the error that stopped its stages


def result_path(config: PipelineConfig, source_id: str, name: str) -> Path:
    return source_dir(config, source_id) / f"{name}.json"


def load_result(config: PipelineConfig, source_id: str, name: str) -> StageResult | None:
    """The stage's stored result, or None when absent or written under an older schema (stale)."""
    path = result_path(config, source_id, name)
    try:
        return StageResult.load(path) if path.exists() else None
    except ValidationError:
        return None


def stored_fingerprint(config: PipelineConfig, source_id: str, name: str) -> str | None:
    stored = load_record(config, source_id) if name == ROOT else load_result(config, source_id, name)
    return stored.fingerprint if stored is not None else None


def _input_fingerprint(config: PipelineConfig, source: SourceRef, name: str) -> str:
    spec = stage(name)
    if not spec.enabled(config):  # a switched-off stage passes its own inputs through
        return digest({"disabled": name, "inputs": [_input_fingerprint(config, source, n) for n in spec.needs]})
    stored = stored_fingerprint(config, source.source_id, name)
    if not stored:
        raise StageInputMissing(f"{source.source_id}: stage {name!r} has not run yet")
    return stored


def fingerprint(config: PipelineConfig, source: SourceRef, name: str) -> str:
    """What the stage's output for ``source`` depends on, as one hash."""
    spec = stage(name)
    inputs = {need: _input_fingerprint(config, source, need) for need in spec.needs}
    fields = {"config": spec.config_fingerprint(config), "inputs": inputs,
              "source_sha256": source.sha256 if spec.is_root else None}
    if spec.source_inputs is not None:
        fields["source_inputs"] = spec.source_inputs(source, config)
    return digest(fields)


def decided_record(config: PipelineConfig, record: SourceRecord, upto: str | None = None) -> SourceRecord:
    """``record`` with the enabled later stages' stored decisions applied (all of them, or those
    ``upto`` needs)."""
    names = deciding_stages(config, upto)
    return apply_results(record, names, {n: load_result(config, record.source_id, n) for n in names})


def stage_fingerprints(config: PipelineConfig, source_id: str) -> dict[str, str]:
    """Fingerprints of every enabled stage's stored output for the source."""
    out = {}
    for spec in STAGES:
        if spec.enabled(config):
            stored = stored_fingerprint(config, source_id, spec.name)
            if stored:
                out[spec.name] = stored
    return out


def run_stage(name: str, source: SourceRef, config: PipelineConfig, backends: ModelBackends, *,
              force: bool = False, progress: ProgressFn | None = None) -> StageOutcome:
    """Run one stage on one source unless its stored output is current (``force`` runs anyway)."""
    spec = stage(name)
    started = time.monotonic()
    if not spec.enabled(config):
        return StageOutcome(name, source.source_id, "disabled", "", 0.0, None)
    with source_lock(config, source.source_id):
        wanted = fingerprint(config, source, name)
        if not force and stored_fingerprint(config, source.source_id, name) == wanted:
            stored = load_record(config, source.source_id) if spec.is_root else \
                load_result(config, source.source_id, name)
            return StageOutcome(name, source.source_id, "unchanged", wanted, time.monotonic() - started, stored)
        result = _run(spec.name, source, config, backends, wanted, progress)
    return StageOutcome(name, source.source_id, "ran", wanted, time.monotonic() - started, result)


def _run(name: str, source: SourceRef, config: PipelineConfig, backends: ModelBackends, wanted: str,
         progress: ProgressFn | None) -> SourceRecord | StageResult:
    spec = stage(name)
    folder = source_dir(config, source.source_id)
    if spec.is_root:  # the face stage replaces the whole work folder atomically itself
        return spec.run(StageContext(source, config, backends.get(name, config), folder, wanted, progress=progress))
    path = result_path(config, source.source_id, name)
    path.unlink(missing_ok=True)  # withdraw first: no visible result ever names files being rewritten
    record = load_record(config, source.source_id)
    if record is None:
        raise StageInputMissing(f"{source.source_id}: the face stage has not run yet")
    if record.status != ACCEPTED:
        result = StageResult(stage=name, skipped=f"source {record.status} ({record.reason})")
    else:
        candidates = tuple(s for s in decided_record(config, record, upto=name).segments if s.status == ACCEPTED)
        result = spec.run(StageContext(source, config, backends.get(name, config), folder, wanted, record, candidates,
                                       progress))
    result = result.model_copy(update={"fingerprint": wanted})
    result.save(path)
    return StageResult.load(path)  # what is on disk (JSON types: a stage's tuples come back as lists)


def run_source(source: SourceRef, config: PipelineConfig, backends: ModelBackends, *,
               stages: Sequence[str] | None = None, force: bool = False,
               progress: ProgressFn | None = None) -> list[StageOutcome]:
    """Every stage (or ``stages`` and what they need) on one source, in run order."""
    wanted = {spec.name for spec in STAGES} if stages is None else \
        {n for name in stages for n in (name, *ancestors(name))}
    return [run_stage(spec.name, source, config, backends, force=force, progress=progress)
            for spec in STAGES if spec.name in wanted]


def run_sources(sources: Iterable[SourceRef], config: PipelineConfig, *, backends: ModelBackends | None = None,
                stages: Sequence[str] | None = None, force: bool = False, progress: bool = True,
                workers: int | None = None) -> RunReport:
    """Every stage on every source, with a progress bar over sources.

    A stage that raises on one source stops that source only: the error is recorded in
    ``failures``, its later stages stay unrun (their segments are pending, never packed),
    and the run goes on with the next source.

    ``workers`` (default ``config.runtime.workers``) > 1 runs sources in that many spawned
    processes, each limited to ``runtime.threads_per_worker`` CPU threads (default: cores //
    workers) and each loading its own models once (the process's ``_BUILT``) for all the
    sources it is given. The report is the same as with one worker: records, outcomes and
    failures in the order of ``sources``.
    """
    sources = list(sources)
    workers = workers or config.runtime.workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers > 1 and len(sources) > 1:
        return _run_sources_in_processes(sources, config, stages, force, progress, min(workers, len(sources)))
    backends = backends or ModelBackends(config)
    report = RunReport()
    bar = tqdm(sources, desc="sources", unit="source", disable=not progress)
    for source in bar:
        bar.set_postfix_str(source.source_id)
        _add(report, source, _source_run(source, config, backends, stages, force))
    return report


@dataclass(frozen=True)
class SourceRun:
    """What one source's stages left: their outcomes, the error that stopped them, its record."""

    outcomes: list[StageOutcome]
    failure: str | None
    record: SourceRecord | None


def _source_run(source: SourceRef, config: PipelineConfig, backends: ModelBackends,
                stages: Sequence[str] | None, force: bool) -> SourceRun:
    outcomes, failure = [], None
    try:
        outcomes = run_source(source, config, backends, stages=stages, force=force)
    except Exception as error:  # one bad source must not stop the others
        failure = f"{type(error).__name__}: {error}"
    return SourceRun(outcomes, failure, load_record(config, source.source_id))


def _add(report: RunReport, source: SourceRef, run: SourceRun) -> None:
    report.outcomes.extend(run.outcomes)
    if run.failure is not None:
        report.failures[source.source_id] = run.failure
    if run.record is not None:
        report.records.append(run.record)


def run_source_in_worker(source: SourceRef, config: PipelineConfig, stages: Sequence[str] | None,
                         force: bool) -> SourceRun:
    """One source in a worker process, with the backends this process has built so far."""
    return _source_run(source, config, ModelBackends(config), stages, force)


def _run_sources_in_processes(sources: list[SourceRef], config: PipelineConfig, stages: Sequence[str] | None,
                              force: bool, progress: bool, workers: int) -> RunReport:
    # spawn: a fresh interpreter per worker, so no model, thread pool or lock of this process
    # is inherited half-initialised (fork after torch/onnxruntime start their pools can hang).
    threads = threads_per_worker(workers, config.runtime.threads_per_worker)
    runs: dict[int, SourceRun] = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=set_thread_limit, initargs=(threads,)) as pool:
        futures = {pool.submit(run_source_in_worker, source, config, stages, force): index
                   for index, source in enumerate(sources)}
        with tqdm(total=len(sources), desc=f"sources ({workers} workers)", unit="source",
                  disable=not progress) as bar:
            for future in as_completed(futures):
                index = futures[future]
                try:
                    runs[index] = future.result()
                except Exception as error:  # the worker process died (killed, out of memory)
                    source_id = sources[index].source_id
                    runs[index] = SourceRun([], f"{type(error).__name__}: {error}", load_record(config, source_id))
                bar.set_postfix_str(sources[index].source_id)
                bar.update()
    report = RunReport()
    for index, source in enumerate(sources):
        _add(report, source, runs[index])
    return report
