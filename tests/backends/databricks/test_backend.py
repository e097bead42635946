"""The Databricks backend against a local REST emulator: lifecycle, idempotency, retries, failures, secrets."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from airflow.providers.databricks.exceptions import DatabricksApiError

from airflow_spark_triton.backends.base import (
    BackendConfigError,
    ClusterError,
    GpuSparkBackend,
    RunError,
    RunLifecycle,
)
from airflow_spark_triton.backends.databricks.backend import DatabricksBackend
from airflow_spark_triton.backends.databricks.cluster_spec import DEFAULT_SPARK_VERSION, KEY_TAG, tag_key
from airflow_spark_triton.cluster_spec import GpuClusterSpec
from spark_jobs.contract import InferenceJobConfig
from tests.backends.databricks.test_cluster_spec import TAGS
from tests.databricks_emulator import DatabricksEmulator, Fault
from tests.hooks.conftest import ARTIFACT_ROOT, TOKEN

MODEL = "spark_jobs.models.hashing_embedder:MODEL"


def job(**changes: Any) -> InferenceJobConfig:
    base = InferenceJobConfig(
        input_table="/data/documents", output_table="/data/embeddings", model=MODEL, logical_date="2024-01-01"
    )
    return base.replace(**changes)


def endpoints(emulator: DatabricksEmulator, method: str, endpoint: str) -> int:
    return len(emulator.calls(method, endpoint))


def wait_terminal(backend: DatabricksBackend, run_id: str, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    status = backend.get_run_status(run_id)
    while not status.state.is_terminal and time.monotonic() < deadline:
        time.sleep(0.05)
        status = backend.get_run_status(run_id)
    return status


# -- lifecycle --------------------------------------------------------------------------------


def test_the_connection_json_reaches_the_emulator_over_http(make_backend, emulator, conn_id):
    from airflow_spark_triton.backends.registry import get_backend

    backend = make_backend()
    assert isinstance(backend, GpuSparkBackend)
    assert (
        backend.hook._endpoint_url("api/2.1/clusters/get")
        == f"http://127.0.0.1:{emulator.port}/api/2.1/clusters/get"
    )
    assert isinstance(get_backend(conn_id), DatabricksBackend)
    assert backend.find_cluster(TAGS) is None
    assert emulator.calls()[-1].path == "/api/2.1/clusters/list"
    assert emulator.calls()[-1].query["filter_by.cluster_states"] == [
        "PENDING",
        "RUNNING",
        "RESTARTING",
        "RESIZING",
    ]


def test_create_wait_find_delete(make_backend, emulator):
    backend = make_backend()
    cluster_id = backend.create_cluster(GpuClusterSpec(num_workers=2), TAGS)

    assert backend.find_cluster(TAGS) == cluster_id
    assert backend.find_cluster({**TAGS, "airflow_task_id": "other"}) is None
    backend.wait_for_cluster(cluster_id, timeout_s=10)
    details = backend.hook.get_cluster(cluster_id)
    assert details["state"] == "RUNNING"
    created = emulator.calls("POST", "2.1/clusters/create")
    assert len(created) == 1 and created[0].body["custom_tags"][KEY_TAG] == tag_key(TAGS)
    env = created[0].body["spark_env_vars"]
    assert env["SPARK_TRITON_WHEEL"].startswith(f"{ARTIFACT_ROOT}/artifacts/")
    assert emulator.workspace.files.exists(env["SPARK_TRITON_WHEEL"])
    assert emulator.workspace.files.exists(created[0].body["init_scripts"][0]["volumes"]["destination"])

    backend.delete_cluster(cluster_id)
    assert backend.find_cluster(TAGS) is None
    backend.delete_cluster(cluster_id)  # already gone: success
    assert [r.status for r in emulator.calls("POST", "2.1/clusters/permanent-delete")] == [200, 400]
    with pytest.raises(ClusterError, match="does not exist"):
        backend.wait_for_cluster(cluster_id, timeout_s=1)


def test_artifacts_are_uploaded_once_per_version(make_backend, emulator):
    make_backend().create_cluster(GpuClusterSpec(), TAGS)
    uploads = endpoints(emulator, "PUT", "2.0/fs/files")
    make_backend().create_cluster(GpuClusterSpec(), {**TAGS, "airflow_run_id": "other"})
    assert uploads == 3
    assert endpoints(emulator, "PUT", "2.0/fs/files") == 3  # the second backend only checked (HEAD)
    assert endpoints(emulator, "HEAD", "2.0/fs/files") == 6


def test_single_user_defaults_to_the_connections_own_identity(make_backend, emulator):
    backend = make_backend(single_user_name=None)
    backend.create_cluster(GpuClusterSpec(), TAGS)
    assert emulator.calls("POST", "2.1/clusters/create")[0].body["single_user_name"] == emulator.user_name
    assert endpoints(emulator, "GET", "2.0/preview/scim/v2/Me") == 1


def test_wait_times_out_with_the_last_state(make_backend, emulator):
    emulator.settings.cluster_start_s = 60
    backend = make_backend()
    cluster_id = backend.create_cluster(GpuClusterSpec(), TAGS)
    with pytest.raises(ClusterError, match="not RUNNING after 0s; last state PENDING: Finding instances"):
        backend.wait_for_cluster(cluster_id, timeout_s=0.2)


# -- retries and idempotency --------------------------------------------------------------------


def test_429_and_503_bursts_are_retried_and_succeed(make_backend, emulator):
    backend = make_backend(attempts=4)
    cluster_id = backend.create_cluster(GpuClusterSpec(), TAGS)
    emulator.inject("GET", "2.1/clusters/get", Fault.rate_limited("0"), Fault(503), Fault.rate_limited(None))
    backend.wait_for_cluster(cluster_id, timeout_s=10)
    statuses = [r.status for r in emulator.calls("GET", "2.1/clusters/get")]
    assert statuses[:4] == [429, 503, 429, 200]

    emulator.inject(
        "POST", "2.1/clusters/create", Fault(500, "INTERNAL_ERROR", "boom"), Fault.rate_limited("0")
    )
    other = backend.create_cluster(GpuClusterSpec(), {**TAGS, "airflow_run_id": "r2"})
    assert [r.status for r in emulator.calls("POST", "2.1/clusters/create")][1:] == [500, 429, 200]
    assert len(emulator.workspace.clusters) == 2 and other in emulator.workspace.clusters


def test_non_retryable_400_fails_at_once_with_the_servers_message(make_backend, emulator):
    backend = make_backend(attempts=5)
    emulator.inject(
        "POST",
        "2.1/clusters/create",
        Fault(400, "INVALID_PARAMETER_VALUE", "Node type g5.xlarge is not supported"),
    )
    with pytest.raises(DatabricksApiError, match=r"Node type g5\.xlarge is not supported") as raised:
        backend.create_cluster(GpuClusterSpec(), TAGS)
    assert raised.value.http_status_code == 400
    assert endpoints(emulator, "POST", "2.1/clusters/create") == 1
    assert endpoints(emulator, "GET", "2.1/clusters/list") == 0


def test_a_create_whose_answer_was_lost_is_found_by_tag_not_made_twice(make_backend, emulator):
    backend = make_backend(attempts=3, timeout_seconds=1)
    emulator.inject("POST", "2.1/clusters/create", Fault.slow(2.0))
    cluster_id = backend.create_cluster(GpuClusterSpec(), TAGS)

    assert list(emulator.workspace.clusters) == [cluster_id]
    assert endpoints(emulator, "GET", "2.1/clusters/list") == 1
    time.sleep(1.2)  # the slow answer is recorded once the emulator gives up writing it
    assert endpoints(emulator, "POST", "2.1/clusters/create") == 1


def test_create_failing_on_every_attempt_raises_cluster_error(make_backend, emulator):
    backend = make_backend(attempts=3)
    emulator.inject("POST", "2.1/clusters/create", Fault(503), Fault(503), Fault(503))
    with pytest.raises(ClusterError, match=r"clusters/create failed on every attempt.*503"):
        backend.create_cluster(GpuClusterSpec(), TAGS)
    assert endpoints(emulator, "POST", "2.1/clusters/create") == 3
    assert endpoints(emulator, "GET", "2.1/clusters/list") == 3  # before each re-send, and after the last
    assert emulator.workspace.clusters == {}


def test_find_cluster_follows_pages_and_skips_dead_clusters(make_backend, emulator):
    emulator.settings.max_page_size = 1
    backend = make_backend()
    wanted = backend.create_cluster(GpuClusterSpec(), TAGS)
    for i in range(2):
        backend.create_cluster(GpuClusterSpec(), {**TAGS, "airflow_run_id": f"other{i}"})
    assert backend.find_cluster(TAGS) == wanted
    assert endpoints(emulator, "GET", "2.1/clusters/list") == 3

    emulator.fail_next_init_script()
    dead = {**TAGS, "airflow_run_id": "dead"}
    dead_id = backend.create_cluster(GpuClusterSpec(), dead)
    with pytest.raises(ClusterError):
        backend.wait_for_cluster(dead_id, timeout_s=5)
    assert backend.find_cluster(dead) is None


def test_same_idempotency_token_gives_one_run(make_backend, emulator):
    backend = make_backend(timeout_seconds=1)
    cluster_id = backend.create_cluster(GpuClusterSpec(), TAGS)
    backend.wait_for_cluster(cluster_id, timeout_s=10)
    emulator.inject("POST", "2.2/jobs/runs/submit", Fault.slow(1.5))  # the first answer is lost
    first = backend.submit_job(cluster_id, job(), "try-1")
    again = backend.submit_job(cluster_id, job(), "try-1")
    other = backend.submit_job(cluster_id, job(), "try-2")

    assert first == again != other
    assert sorted(emulator.workspace.runs) == sorted({int(first), int(other)})
    assert isinstance(first, str)


# -- runs ---------------------------------------------------------------------------------------


def test_submit_builds_a_typed_one_task_run_from_the_clusters_artifacts(make_backend, emulator):
    backend = make_backend()
    cluster_id = backend.create_cluster(GpuClusterSpec(num_workers=3), TAGS)
    backend.wait_for_cluster(cluster_id, timeout_s=10)
    run_id = backend.submit_job(cluster_id, job(), "token-abc")

    body = emulator.calls("POST", "2.2/jobs/runs/submit")[0].body
    assert set(body) == {"run_name", "idempotency_token", "tasks"}
    assert body["idempotency_token"] == "token-abc"
    (task,) = body["tasks"]
    wheel = emulator.calls("POST", "2.1/clusters/create")[0].body["spark_env_vars"]["SPARK_TRITON_WHEEL"]
    assert task["existing_cluster_id"] == cluster_id
    assert task["spark_python_task"]["python_file"] == wheel.rsplit("/", 1)[0] + "/batch_inference.py"
    assert "libraries" not in task  # the init script installed the wheel (without Airflow's deps)
    flag, payload = task["spark_python_task"]["parameters"]
    sent = InferenceJobConfig.from_json(payload)
    assert flag == "--job"
    assert sent.report_path == f"{ARTIFACT_ROOT}/reports/token-abc.json"
    assert (sent.expected_executors, sent.run_id) == (3, "token-abc")
    assert sent.replace(report_path=None, expected_executors=None, run_id="manual") == job()

    status = wait_terminal(backend, run_id)
    assert status.state is RunLifecycle.SUCCESS
    assert status.url == f"{emulator.url}/?o=0#job/0/run/{run_id}"
    assert backend.get_run_report(run_id).run_id == "token-abc"


def test_a_cluster_made_elsewhere_gets_the_wheel_as_a_library(make_backend, emulator):
    backend = make_backend()
    body = {"spark_version": DEFAULT_SPARK_VERSION, "node_type_id": "g5.xlarge", "num_workers": 1}
    cluster_id = backend.hook.create_cluster(body, lambda: None)
    backend.submit_job(cluster_id, job(expected_executors=5, run_id="nightly"), "t")
    (task,) = emulator.calls("POST", "2.2/jobs/runs/submit")[0].body["tasks"]
    assert task["libraries"][0]["whl"].endswith("/airflow_spark_triton-0.1.0-py3-none-any.whl")
    assert emulator.workspace.files.exists(task["spark_python_task"]["python_file"])
    sent = InferenceJobConfig.from_json(task["spark_python_task"]["parameters"][1])
    assert (sent.expected_executors, sent.run_id) == (5, "nightly")


def test_a_failed_run_reports_the_jobs_own_error(make_backend, emulator):
    backend = make_backend()
    cluster_id = backend.create_cluster(GpuClusterSpec(), TAGS)
    emulator.fail_next_run("JobConfigError: job setting 'model' must be a 'module:attribute' reference")
    run_id = backend.submit_job(cluster_id, job(), "t1")
    status = wait_terminal(backend, run_id)

    assert status.state is RunLifecycle.FAILED
    assert status.message.startswith("SPARK_TRITON_ERROR: JobConfigError: job setting 'model'")
    assert "TERMINATED/FAILED" in status.message
    task_run = emulator.workspace.runs[int(run_id)].task_run_id
    assert emulator.calls("GET", "2.2/jobs/runs/get-output")[0].query["run_id"] == [str(task_run)]
    with pytest.raises(RunError, match="wrote no report"):
        backend.get_run_report(run_id)


def test_cancel_waits_for_the_run_to_end_and_is_a_no_op_afterwards(make_backend, emulator):
    emulator.settings.run_duration_s = 60
    emulator.settings.cancel_s = 0.3
    backend = make_backend()
    cluster_id = backend.create_cluster(GpuClusterSpec(), TAGS)
    run_id = backend.submit_job(cluster_id, job(), "t1")
    assert wait_terminal(backend, run_id, timeout_s=0.3).state in (RunLifecycle.PENDING, RunLifecycle.RUNNING)

    backend.cancel_run(run_id)
    assert backend.get_run_status(run_id).state is RunLifecycle.CANCELED
    backend.cancel_run(run_id)
    assert endpoints(emulator, "POST", "2.2/jobs/runs/cancel") == 1


def test_cancel_gives_up_after_its_timeout(make_backend, emulator):
    emulator.settings.run_duration_s = 60
    emulator.settings.cancel_s = 60
    backend = make_backend(cancel_timeout_s=0.3)
    run_id = backend.submit_job(backend.create_cluster(GpuClusterSpec(), TAGS), job(), "t1")
    with pytest.raises(RunError, match="still RUNNING"):
        backend.cancel_run(run_id)


def test_init_script_failure_raises_cluster_error_with_reason_and_events(make_backend, emulator):
    backend = make_backend()
    emulator.fail_next_init_script("SPARK_TRITON_INIT_ERROR: pip could not install nvidia-pytriton==0.7.0")
    cluster_id = backend.create_cluster(GpuClusterSpec(), TAGS)
    with pytest.raises(ClusterError) as raised:
        backend.wait_for_cluster(cluster_id, timeout_s=10)

    message = str(raised.value)
    assert f"cluster {cluster_id} is TERMINATED" in message
    assert "termination reason INIT_SCRIPT_FAILURE (CLIENT_ERROR)" in message
    assert "databricks_error_message=Cluster scoped init script" in message
    assert "INIT_SCRIPTS_FINISHED" in message and "FAILED_EXECUTION" in message
    assert "/databricks_init.sh" in message
    assert "pip could not install nvidia-pytriton==0.7.0" in message
    assert emulator.calls("POST", "2.1/clusters/events")[0].body == {
        "cluster_id": cluster_id,
        "order": "DESC",
        "page_size": 10,
    }


def test_the_token_never_appears_in_logs_records_results_or_errors(make_backend, emulator, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    backend = make_backend()
    results: list[Any] = []
    cluster_id = backend.create_cluster(GpuClusterSpec(), TAGS)
    backend.wait_for_cluster(cluster_id, timeout_s=10)
    run_id = backend.submit_job(cluster_id, job(), "t1")
    results += [
        cluster_id,
        run_id,
        wait_terminal(backend, run_id).to_dict(),
        backend.get_run_report(run_id).to_dict(),
    ]
    emulator.fail_next_run()
    results.append(wait_terminal(backend, backend.submit_job(cluster_id, job(), "t2")).to_dict())
    emulator.inject("GET", "2.1/clusters/get", Fault(400, "INVALID_PARAMETER_VALUE", "nope"))
    with pytest.raises(DatabricksApiError) as raised:
        backend.wait_for_cluster(cluster_id, timeout_s=1)
    results.append(str(raised.value))
    backend.delete_cluster(cluster_id)

    out, err = capfd.readouterr()
    logged = caplog.text + out + err  # Airflow 3 hooks log through structlog (stdout), not only logging
    assert "Submitted run" in logged, "the hook's log lines must be captured, or this test proves nothing"
    assert TOKEN not in logged
    assert all(TOKEN not in str(r.args) and TOKEN not in r.getMessage() for r in caplog.records)
    assert TOKEN not in json.dumps(results, default=str)
    assert all(r.headers.get("Authorization") == "Bearer <redacted>" for r in emulator.requests)
    assert TOKEN not in repr(emulator.requests)


def test_report_path_comes_from_the_runs_own_parameters():
    payload = job(report_path="/Volumes/a/b/c/reports/x.json").to_json()
    run = {"tasks": [{"spark_python_task": {"parameters": ["--job", payload]}}]}
    assert DatabricksBackend.report_path_of(run) == "/Volumes/a/b/c/reports/x.json"
    assert DatabricksBackend.report_path_of({"tasks": [{"notebook_task": {}}]}) is None


def test_artifact_root_must_be_a_volume(make_backend):
    with pytest.raises(BackendConfigError, match="needs extra 'artifact_root'") as raised:
        make_backend(artifact_root="dbfs:/tmp").create_cluster(GpuClusterSpec(), TAGS)
    assert isinstance(raised.value, ValueError)  # callers that caught the old ValueError still do


def test_an_idempotency_token_databricks_refuses_is_a_config_error(make_backend, emulator):
    with pytest.raises(BackendConfigError, match="idempotency_token must be 1 to 64 characters"):
        make_backend().submit_job("0000-000000-abc", job(), "x" * 65)
    assert not emulator.calls("POST", "2.2/jobs/runs/submit")


# End to end on local Spark (the nightly DAG through the emulator, both compute modes):
# tests/backends/databricks/test_compute_modes.py.


def test_the_operators_output_settings_reach_the_job_argument(make_backend, emulator, monkeypatch):
    from airflow_spark_triton.operators import backend_cache
    from airflow_spark_triton.operators.inference import TritonInferenceOperator
    from tests.operators.test_inference import Store
    from tests.operators.test_inference import context as task_context

    backend = make_backend()
    monkeypatch.setattr(backend_cache, "get_backend", lambda conn_id: backend)
    cluster_id = backend.create_cluster(GpuClusterSpec(num_workers=2), TAGS)
    backend.wait_for_cluster(cluster_id, timeout_s=10)
    emulator.add_table(  # the inference task's pre-flight reads the input's columns from Unity Catalog
        "main.docs.raw",
        [(name, '"string"') for name in ("text", "title", "customer_id", "lang")]
        + [("id", '"long"'), ("date", '"date"')],
    )
    settings = {
        "write_mode": "merge",
        "keep_columns": ["title", "customer_id"],
        "where": "lang = 'en' AND length(text) > 0",
        "max_reject_fraction": 0.05,
        "min_rows": 100,
        "lease_wait_s": 120,
        "lease_ttl_s": 600,
    }
    common = {"cluster_id": cluster_id, "input_table": "main.docs.raw", "output_table": "main.docs.scored"}
    infer = TritonInferenceOperator(
        task_id="infer", model=MODEL, logical_date="2024-01-01", **common, **settings
    )
    infer.submit_job(task_context(Store()))
    dry = TritonInferenceOperator(
        task_id="infer", model=MODEL, logical_date="2024-01-01", dry_run=True, limit=25, **common
    )
    dry.submit_job(task_context(Store(), try_number=2))

    sent = [
        InferenceJobConfig.from_args(call.body["tasks"][0]["spark_python_task"]["parameters"])
        for call in emulator.calls("POST", "2.2/jobs/runs/submit")
    ]
    assert {name: getattr(sent[0], name) for name in settings} == {
        **settings,
        "keep_columns": ("title", "customer_id"),
    }
    assert (
        sent[0].write_id == "d/infer/r/-1"
    )  # the task instance: one append and one lease holder per DAG run
    assert (sent[0].lease_table, sent[0].rejects_table) == (
        "main.docs.scored_leases",
        "main.docs.scored_rejects",
    )
    assert (sent[1].dry_run, sent[1].limit, sent[1].write_mode, sent[1].write_id) == (
        True,
        25,
        "replace_date",
        "d/infer/r/-1",
    )
