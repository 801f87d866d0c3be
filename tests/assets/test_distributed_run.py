"""The asset graph on real engines: Dagster's multiprocess executor on a persistent SQLite
instance, and Celery workers on a loopback Redis; both must give the in-process shards.
The Kubernetes example configs are checked against dagster-k8s's own config schemas."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml
from graph_runs import (
    REPO,
    celery_config,
    celery_workers,
    demo,
    fingerprint,
    make_input,
    redis_server,
    reference_fingerprint,
    run_env,
    shards_dir,
)


def _steps_on_workers(home: Path) -> dict[str, set[str]]:
    """Step key -> Celery worker names that reported executing it, from the runs' event logs."""
    steps: dict[str, set[str]] = {}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for run in instance.get_runs():
            for event in instance.all_logs(run.run_id):
                data = event.dagster_event.event_specific_data if event.dagster_event else None
                metadata = getattr(data, "metadata", None) or {}
                if "Celery worker" in metadata:
                    steps.setdefault(metadata["step_keys"].value, set()).add(metadata["Celery worker"].value)
    return steps


@pytest.mark.slow
def test_multiprocess_executor_gives_the_in_process_shards(tmp_path, tmp_path_factory, grid_dir, model_dir):
    expected = reference_fingerprint(tmp_path_factory, grid_dir, model_dir)
    env = run_env(tmp_path, make_input(grid_dir, tmp_path / "input"), model_dir)
    out = demo(env, "--executor", "multiprocess").stdout
    assert "every_source_accounted_for=passed" in out and "shards_open=passed" in out
    assert fingerprint(shards_dir(env)) == expected
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs()
        assert len(runs) == 3 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        # Steps ran in their own processes, not in the run's.
        assert any("in subprocess" in (e.user_message or "") for e in instance.all_logs(runs[0].run_id))


@pytest.mark.slow
def test_celery_workers_on_loopback_give_the_in_process_shards(tmp_path, tmp_path_factory, grid_dir, model_dir):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/setup.sh installs it from apt)")
    if importlib.util.find_spec("dagster_celery") is None:
        pytest.skip("dagster-celery is not installed (pyproject extra 'distributed')")
    expected = reference_fingerprint(tmp_path_factory, grid_dir, model_dir)
    with redis_server(tmp_path / "redis") as url:
        config = celery_config(tmp_path, url)
        env = run_env(tmp_path, make_input(grid_dir, tmp_path / "input"), model_dir, TALKINGHEAD_EXECUTOR="celery",
                      TALKINGHEAD_CELERY_BROKER=f"{url}/0", TALKINGHEAD_CELERY_BACKEND=f"{url}/1")
        with celery_workers(env, config, count=2, log_dir=tmp_path):
            out = demo(env, "--executor", "celery").stdout
    assert "every_source_accounted_for=passed" in out and "shards_open=passed" in out
    assert fingerprint(shards_dir(env)) == expected
    steps = _steps_on_workers(Path(env["DAGSTER_HOME"]))
    assert {"source_probe", "face_clips", "active_speakers", "speech_analysis", "dataset_shards"} <= set(steps)
    assert {name.split("@")[0] for names in steps.values() for name in names} <= {"w0", "w1"}


def test_k8s_example_configs_match_dagster_k8s_schemas():
    dagster_k8s = pytest.importorskip("dagster_k8s", reason="dagster-k8s is not installed (pyproject extra 'distributed')")
    from dagster._config import validate_config

    folder = REPO / "deploy" / "k8s"
    instance = yaml.safe_load((folder / "dagster.yaml").read_text())
    assert instance["run_launcher"]["class"] == "K8sRunLauncher"
    launcher = validate_config(dagster_k8s.K8sRunLauncher.config_type(), instance["run_launcher"]["config"])
    assert launcher.success, [e.message for e in launcher.errors]
    run_config = yaml.safe_load((folder / "run_config.yaml").read_text())
    executor = validate_config(dagster_k8s.k8s_job_executor.config_schema.config_type, run_config["execution"]["config"])
    assert executor.success, [e.message for e in executor.errors]
    env = yaml.safe_load((folder / "talkinghead-env.yaml").read_text())["data"]
    assert env["TALKINGHEAD_EXECUTOR"] == "k8s"
    from pipelines.config import load_config

    pipeline = load_config(folder / "config.yaml")  # the example pipeline config is valid
    assert pipeline.shards.publish_url.startswith("s3://") and env["TALKINGHEAD_CONFIG"].endswith("config.yaml")
    values = yaml.safe_load((folder / "values.yaml").read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"


def test_executor_is_chosen_per_deployment(monkeypatch):
    from assets.executors import EXECUTOR_ENV, build_executor, executor_run_config

    monkeypatch.setenv(EXECUTOR_ENV, "in_process")
    assert build_executor().name == "in_process"
    monkeypatch.setenv(EXECUTOR_ENV, "multiprocess")
    assert build_executor().name == dg.multi_or_in_process_executor.name
    assert "forkserver" in executor_run_config()["execution"]["config"]["multiprocess"]["start_method"]
    monkeypatch.setenv(EXECUTOR_ENV, "nonsense")
    with pytest.raises(ValueError, match="expected one of"):
        build_executor()
