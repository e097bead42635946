"""The ``compute`` setting through the operators and the group, against the in-memory backend: jobs
compute where the backend has it, the group's own cluster where it does not, the teardown's cancel,
and the time limit each submit carries."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from airflow_spark_triton.backends.base import BackendError, RunLifecycle
from airflow_spark_triton.cluster_spec import ClusterSpecError
from airflow_spark_triton.operators import backend_cache, inference
from airflow_spark_triton.operators.cluster import CreateGpuClusterOperator, DeleteClusterOperator
from tests.backends.fake import FakeBackend
from tests.operators.test_cluster import context as create_context
from tests.operators.test_inference import Store
from tests.operators.test_inference import context as infer_context
from tests.operators.test_inference import operator as infer_operator


def use(monkeypatch: pytest.MonkeyPatch, fake: FakeBackend) -> FakeBackend:
    monkeypatch.setattr(backend_cache, "get_backend", lambda conn_id: fake)
    return fake


def create(**spec: Any) -> CreateGpuClusterOperator:
    return CreateGpuClusterOperator(task_id="create", cluster_spec={"num_workers": 2, **spec})


def test_jobs_compute_creates_no_cluster_and_returns_a_compute_id(monkeypatch) -> None:
    backend = use(monkeypatch, FakeBackend(has_job_compute=True))
    store = Store()
    compute_id = create().execute(create_context(store))  # compute="job" is the default

    assert compute_id.startswith("jobcompute-")
    assert [call for call, _ in backend.calls] == ["prepare_job_compute"]
    assert backend.clusters[compute_id]["tags"]["airflow_run_id"] == "r"
    assert store == {}  # nothing to resume: the same tags give the same id
    assert create().execute(create_context(store)) == compute_id


def test_all_purpose_compute_creates_and_waits_for_the_cluster_as_before(monkeypatch) -> None:
    backend = use(monkeypatch, FakeBackend(has_job_compute=True))
    cluster_id = create(compute="all_purpose").execute(create_context())
    assert backend.clusters[cluster_id]["state"] == "RUNNING"
    assert "prepare_job_compute" not in [call for call, _ in backend.calls]


def test_a_backend_without_jobs_compute_creates_the_groups_cluster_for_compute_job(
    monkeypatch, caplog, capsys
) -> None:
    backend = use(monkeypatch, FakeBackend())  # like the local and spark-submit backends
    cluster_id = create(compute="job").execute(create_context())
    assert backend.clusters[cluster_id]["state"] == "RUNNING"
    assert "has no separate jobs compute" in caplog.text + capsys.readouterr().out
    with pytest.raises(BackendError, match="FakeBackend has no jobs compute"):
        backend.prepare_job_compute(None, {})


def test_a_bad_compute_setting_fails_before_the_backend_is_asked(monkeypatch) -> None:
    backend = use(monkeypatch, FakeBackend(has_job_compute=True))
    with pytest.raises(ClusterSpecError, match="'compute'"):
        create(compute="serverless").execute(create_context())
    assert backend.calls == []


def test_the_teardown_cancels_a_run_its_killed_infer_task_left_on_jobs_compute(monkeypatch) -> None:
    backend = use(monkeypatch, FakeBackend(has_job_compute=True, run_states=(RunLifecycle.RUNNING,)))
    compute_id = create().execute(create_context())
    infer = inference.TritonInferenceOperator(
        task_id="infer",
        cluster_id=compute_id,
        input_table="/in",
        output_table="/out",
        model="spark_jobs.models.hashing_embedder:MODEL",
        logical_date="2026-11-26",
    )
    run_id = infer.submit_job(infer_context(Store()))  # then the worker died: no on_kill, no cancel
    assert backend.get_run_status(run_id).state is RunLifecycle.RUNNING

    DeleteClusterOperator(task_id="delete", cluster_id=compute_id).execute({})

    assert ("cancel_run", run_id) in backend.calls
    assert backend.get_run_status(run_id).state is RunLifecycle.CANCELED


@pytest.mark.parametrize(
    ("execution_timeout", "job_timeout_s", "limit"),
    [
        (dt.timedelta(hours=3), None, 3 * 3600 + inference.EXECUTION_TIMEOUT_MARGIN_S),
        (None, 600, 600 + inference.JOB_TIMEOUT_MARGIN_S),
        (dt.timedelta(hours=1), 600, 600 + inference.JOB_TIMEOUT_MARGIN_S),  # the smaller wins
        (dt.timedelta(minutes=5), 3600, 300 + inference.EXECUTION_TIMEOUT_MARGIN_S),
        (None, None, None),
    ],
)
def test_each_submit_carries_the_tasks_time_limit(
    monkeypatch, execution_timeout, job_timeout_s, limit
) -> None:
    backend = use(monkeypatch, FakeBackend())
    op = infer_operator(execution_timeout=execution_timeout, job_timeout_s=job_timeout_s)
    op.execute(infer_context(Store()))
    assert backend.time_limits == {"run-1": limit}


def test_the_group_switches_mode_with_the_specs_compute_setting() -> None:
    from airflow.sdk import DAG

    from airflow_spark_triton.task_group import gpu_batch_inference

    with DAG("g", schedule=None, start_date=dt.datetime(2026, 1, 1)):
        group = gpu_batch_inference(
            "embed",
            cluster_spec={"compute": "all_purpose", "policy_id": "p"},
            input_table="/in",
            output_table="/out",
            model="m:M",
        )
    tasks = {t.task_id: t for t in group}
    create_task = tasks["embed.create_cluster"]
    assert create_task.cluster_spec == {"compute": "all_purpose", "policy_id": "p", "model": "m:M"}
    assert create_task._spec().compute == "all_purpose"
    assert tasks["embed.delete_cluster"].is_teardown
