"""The Databricks backend against a local REST emulator: bodies, idempotency, retries, failures, secrets."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import zipfile
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowException
from airflow.providers.databricks.exceptions import DatabricksApiError
from databricks.sdk.service import compute

from airflow_spark_triton.cluster_spec import ClusterSpecError, GpuClusterSpec
from airflow_spark_triton.databricks_cluster_spec import (
    DEFAULT_NODE_TYPE,
    DEFAULT_SPARK_VERSION,
    KEY_TAG,
    cluster_create_body,
    parse_node_type,
    sanitize_tags,
    tag_key,
)
from airflow_spark_triton.hooks.base import ClusterError, GpuSparkBackend, RunError, RunLifecycle
from airflow_spark_triton.hooks.databricks_gpu import DatabricksGpuHook
from spark_jobs.job_config import InferenceJobConfig
from tests.databricks_emulator import DatabricksEmulator, Fault, Settings
from tests.databricks_emulator.validation import InvalidRequest, check_call, check_object
from tests.hooks.conftest import ARTIFACT_ROOT, TOKEN

TAGS = {
    "airflow_dag_id": "nightly_embeddings",
    "airflow_run_id": "scheduled__2024-01-01T00:00:00+00:00",
    "airflow_task_id": "create_cluster",
}
PATHS = {
    "wheel_path": f"{ARTIFACT_ROOT}/artifacts/abc/airflow_spark_triton-0.1.0-py3-none-any.whl",
    "init_script_path": f"{ARTIFACT_ROOT}/artifacts/abc/databricks_init.sh",
    "single_user_name": "etl-sp@example.com",
}
MODEL = "spark_jobs.models.hashing_embedder:MODEL"


def job(**changes: Any) -> InferenceJobConfig:
    base = InferenceJobConfig(
        input_table="/data/documents", output_table="/data/embeddings", model=MODEL, logical_date="2024-01-01"
    )
    return base.replace(**changes)


def endpoints(emulator: DatabricksEmulator, method: str, endpoint: str) -> int:
    return len(emulator.calls(method, endpoint))


def wait_terminal(hook: DatabricksGpuHook, run_id: str, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    status = hook.get_run_status(run_id)
    while not status.state.is_terminal and time.monotonic() < deadline:
        time.sleep(0.05)
        status = hook.get_run_status(run_id)
    return status


# -- the clusters/create body -------------------------------------------------------------------


def test_default_spec_builds_the_documented_body_and_the_sdk_accepts_it():
    body = cluster_create_body(GpuClusterSpec(), TAGS, **PATHS)

    assert body["spark_version"] == DEFAULT_SPARK_VERSION == "15.4.x-gpu-ml-scala2.12"
    assert body["node_type_id"] == DEFAULT_NODE_TYPE == "g5.xlarge"
    assert "driver_node_type_id" not in body  # Databricks defaults the driver to the worker type
    assert body["num_workers"] == 2
    assert body["autotermination_minutes"] == 60
    assert body["spark_conf"] == {
        "spark.executor.cores": "1",
        "spark.executor.resource.gpu.amount": "1",
        "spark.task.resource.gpu.amount": "1",
        "spark.python.worker.reuse": "true",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    }
    assert body["spark_env_vars"] == {
        "SPARK_TRITON_STATE_DIR": "/local_disk0/spark_triton",
        "SPARK_TRITON_WHEEL": PATHS["wheel_path"],
    }
    assert body["init_scripts"] == [{"volumes": {"destination": PATHS["init_script_path"]}}]
    assert body["custom_tags"] == {**TAGS, KEY_TAG: tag_key(TAGS)}
    assert body["data_security_mode"] == "SINGLE_USER"
    assert body["single_user_name"] == "etl-sp@example.com"
    assert (
        body["cluster_name"]
        == "spark-triton nightly_embeddings create_cluster scheduled__2024-01-01T00:00:00+00:00"
    )
    check_call(compute.ClustersAPI.create, body)  # what the emulator checks on every request
    assert compute.ClusterSpec.from_dict(body).as_dict() == body


def test_spec_fields_reach_the_body():
    spec = GpuClusterSpec(
        num_workers=4,
        executor_cores=8,
        tasks_per_gpu=4,
        node_type_id="g5.2xlarge",
        driver_node_type_id="g5.xlarge",
        spark_version="16.4.x-gpu-ml-scala2.12",
        autotermination_minutes=30,
        cluster_name="embeddings",
        spark_conf={"spark.sql.shuffle.partitions": "64"},
        spark_env_vars={"HF_HOME": "/local_disk0/hf"},
        init_script="/Workspace/Shared/extra.sh",
    )
    body = cluster_create_body(
        spec, {**TAGS, "team": "search"}, **PATHS, user_init_script_path=spec.init_script
    )
    assert body["spark_conf"]["spark.executor.cores"] == "8"
    assert body["spark_conf"]["spark.task.resource.gpu.amount"] == "0.25"
    assert body["spark_conf"]["spark.sql.shuffle.partitions"] == "64"
    assert body["spark_env_vars"]["HF_HOME"] == "/local_disk0/hf"
    assert body["init_scripts"][1] == {"workspace": {"destination": "/Workspace/Shared/extra.sh"}}
    assert (body["num_workers"], body["node_type_id"], body["driver_node_type_id"]) == (
        4,
        "g5.2xlarge",
        "g5.xlarge",
    )
    assert (body["cluster_name"], body["autotermination_minutes"]) == ("embeddings", 30)
    assert body["custom_tags"]["team"] == "search"
    check_call(compute.ClustersAPI.create, body)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"node_type_id": "m5d.large"}, "'node_type_id' must be a GPU instance type"),
        ({"node_type_id": "Standard_D4s_v3"}, "'node_type_id' must be a GPU instance type"),
        ({"node_type_id": "n2-standard-4"}, "'node_type_id' must be a GPU instance type"),
        ({"driver_node_type_id": "i3.xlarge"}, "'driver_node_type_id' must be a GPU instance type"),
        ({"driver_node_type_id": "Standard_NC4as_T4_v3"}, "'driver_node_type_id'.*different clouds"),
        ({"spark_version": "15.4.x-scala2.12"}, "'spark_version' must be a GPU runtime"),
        ({"spark_version": "12.2.x-gpu-ml-scala2.12"}, "'spark_version' must be Databricks Runtime 13"),
        ({"executor_cores": 8}, r"'executor_cores' \(spark.executor.cores=8\) exceeds the 4 vCPUs"),
        ({"spark_env_vars": {"SPARK_TRITON_WHEEL": "/x.whl"}}, "SPARK_TRITON_WHEEL"),
        ({"init_script": "scripts/extra.sh"}, "'init_script' must be a /Volumes/"),
    ],
)
def test_inconsistent_databricks_specs_are_rejected_naming_the_setting(fields, message):
    spec = GpuClusterSpec(**fields)
    with pytest.raises(ClusterSpecError, match=message):
        cluster_create_body(spec, TAGS, **PATHS, user_init_script_path=spec.init_script)


def test_unrecognised_node_types_are_not_judged():
    assert parse_node_type("my-pool-node") == parse_node_type("x")
    assert cluster_create_body(GpuClusterSpec(node_type_id="custom-gpu-node"), TAGS, **PATHS)["node_type_id"]


@pytest.mark.parametrize(
    ("node_type", "cloud", "gpu", "vcpus"),
    [
        ("g5.xlarge", "aws", True, 4),
        ("p4d.24xlarge", "aws", True, 96),
        ("g4dn.2xlarge", "aws", True, 8),
        ("i3.xlarge", "aws", False, 4),
        ("Standard_NC24ads_A100_v4", "azure", True, 24),
        ("Standard_DS3_v2", "azure", False, 3),
        ("g2-standard-8", "gcp", True, 8),
        ("a2-highgpu-1g", "gcp", True, None),
    ],
)
def test_node_type_parsing(node_type, cloud, gpu, vcpus):
    parsed = parse_node_type(node_type)
    assert (parsed.cloud, parsed.gpu, parsed.vcpus) == (cloud, gpu, vcpus)


def test_tags_follow_each_clouds_rules_and_the_key_tag_does_not_depend_on_them():
    aws = sanitize_tags(
        {"Team Name": "ML Platform", "run": "manual__2024-01-01T00:00:00+00:00", "bad<key>": "a&b"}, "aws"
    )
    assert aws == {"Team Name": "ML Platform", "run": "manual__2024-01-01T00:00:00+00:00", "bad_key_": "a_b"}
    gcp = sanitize_tags({"Team": "ML Platform", "run": "manual__2024-01-01T00:00:00+00:00", "1x": "y"}, "gcp")
    assert gcp == {"team": "ml_platform", "run": "manual__2024-01-01t00_00_00_00_00", "t_1x": "y"}
    long = sanitize_tags({"k": "v" * 300}, "aws")["k"]
    assert len(long) == 255 and long != sanitize_tags({"k": "v" * 299 + "w"}, "aws")["k"]
    gcp_body = cluster_create_body(GpuClusterSpec(node_type_id="g2-standard-4"), TAGS, **PATHS)
    assert (
        gcp_body["custom_tags"][KEY_TAG]
        == cluster_create_body(GpuClusterSpec(), TAGS, **PATHS)["custom_tags"][KEY_TAG]
    )
    with pytest.raises(ClusterSpecError, match="'aws:' prefix"):
        sanitize_tags({"aws:owner": "me"}, "aws")
    with pytest.raises(ClusterSpecError, match="'tags' has 46 tags"):
        sanitize_tags({f"t{i}": "v" for i in range(46)}, "aws")


def test_the_emulator_rejects_unknown_and_mistyped_fields_naming_them():
    body = cluster_create_body(GpuClusterSpec(), TAGS, **PATHS)
    with pytest.raises(InvalidRequest, match="unknown field 'spark_confs'"):
        check_call(compute.ClustersAPI.create, {**body, "spark_confs": {}})
    with pytest.raises(InvalidRequest, match=r"unknown field 'init_scripts\[0\].volumes.path'"):
        check_call(
            compute.ClustersAPI.create,
            {**body, "init_scripts": [{"volumes": {"destination": "/V", "path": "x"}}]},
        )
    with pytest.raises(InvalidRequest, match="'num_workers' must be an integer"):
        check_call(compute.ClustersAPI.create, {**body, "num_workers": "2"})
    with pytest.raises(InvalidRequest, match="invalid value 'SHARED'"):
        check_call(compute.ClustersAPI.create, {**body, "data_security_mode": "SHARED"})
    with pytest.raises(InvalidRequest, match="missing required field 'spark_version'"):
        check_call(compute.ClustersAPI.create, {k: v for k, v in body.items() if k != "spark_version"})
    with pytest.raises(InvalidRequest, match=r"unknown field 'body\.bogus'"):
        check_object({**body, "bogus": 1}, compute.ClusterSpec, "body")


# -- hook basics --------------------------------------------------------------------------------


def test_the_connection_json_reaches_the_emulator_over_http(make_hook, emulator, conn_id):
    from airflow_spark_triton.hooks.backend import get_backend

    hook = make_hook()
    assert isinstance(hook, GpuSparkBackend)
    assert (
        hook._endpoint_url("api/2.1/clusters/get") == f"http://127.0.0.1:{emulator.port}/api/2.1/clusters/get"
    )
    assert isinstance(get_backend(conn_id), DatabricksGpuHook)
    assert hook.find_cluster(TAGS) is None
    assert emulator.calls()[-1].path == "/api/2.1/clusters/list"
    assert emulator.calls()[-1].query["filter_by.cluster_states"] == [
        "PENDING",
        "RUNNING",
        "RESTARTING",
        "RESIZING",
    ]


def test_create_wait_find_delete(make_hook, emulator):
    hook = make_hook()
    cluster_id = hook.create_cluster(GpuClusterSpec(num_workers=2), TAGS)

    assert hook.find_cluster(TAGS) == cluster_id
    assert hook.find_cluster({**TAGS, "airflow_task_id": "other"}) is None
    hook.wait_for_cluster(cluster_id, timeout_s=10)
    details = hook._do_api_call(("GET", "2.1/clusters/get"), {"cluster_id": cluster_id})
    assert details["state"] == "RUNNING"
    created = emulator.calls("POST", "2.1/clusters/create")
    assert len(created) == 1 and created[0].body["custom_tags"][KEY_TAG] == tag_key(TAGS)
    env = created[0].body["spark_env_vars"]
    assert env["SPARK_TRITON_WHEEL"].startswith(f"{ARTIFACT_ROOT}/artifacts/")
    assert emulator.workspace.files.exists(env["SPARK_TRITON_WHEEL"])
    assert emulator.workspace.files.exists(created[0].body["init_scripts"][0]["volumes"]["destination"])

    hook.delete_cluster(cluster_id)
    assert hook.find_cluster(TAGS) is None
    hook.delete_cluster(cluster_id)  # already gone: success
    assert [r.status for r in emulator.calls("POST", "2.1/clusters/permanent-delete")] == [200, 400]
    with pytest.raises(ClusterError, match="does not exist"):
        hook.wait_for_cluster(cluster_id, timeout_s=1)


def test_artifacts_are_uploaded_once_per_version(make_hook, emulator):
    make_hook().create_cluster(GpuClusterSpec(), TAGS)
    uploads = endpoints(emulator, "PUT", "2.0/fs/files")
    make_hook().create_cluster(GpuClusterSpec(), {**TAGS, "airflow_run_id": "other"})
    assert uploads == 3
    assert endpoints(emulator, "PUT", "2.0/fs/files") == 3  # the second hook only checked (HEAD)
    assert endpoints(emulator, "HEAD", "2.0/fs/files") == 6


def test_single_user_defaults_to_the_connections_own_identity(make_hook, emulator):
    hook = make_hook(single_user_name=None)
    hook.create_cluster(GpuClusterSpec(), TAGS)
    assert emulator.calls("POST", "2.1/clusters/create")[0].body["single_user_name"] == emulator.user_name
    assert endpoints(emulator, "GET", "2.0/preview/scim/v2/Me") == 1


def test_wait_times_out_with_the_last_state(make_hook, emulator):
    emulator.settings.cluster_start_s = 60
    hook = make_hook()
    cluster_id = hook.create_cluster(GpuClusterSpec(), TAGS)
    with pytest.raises(ClusterError, match="not RUNNING after 0s; last state PENDING: Finding instances"):
        hook.wait_for_cluster(cluster_id, timeout_s=0.2)


# -- retries and idempotency --------------------------------------------------------------------


def test_429_and_503_bursts_are_retried_and_succeed(make_hook, emulator):
    hook = make_hook(attempts=4)
    cluster_id = hook.create_cluster(GpuClusterSpec(), TAGS)
    emulator.inject("GET", "2.1/clusters/get", Fault.rate_limited("0"), Fault(503), Fault.rate_limited(None))
    hook.wait_for_cluster(cluster_id, timeout_s=10)
    statuses = [r.status for r in emulator.calls("GET", "2.1/clusters/get")]
    assert statuses[:4] == [429, 503, 429, 200]

    emulator.inject(
        "POST", "2.1/clusters/create", Fault(500, "INTERNAL_ERROR", "boom"), Fault.rate_limited("0")
    )
    other = hook.create_cluster(GpuClusterSpec(), {**TAGS, "airflow_run_id": "r2"})
    assert [r.status for r in emulator.calls("POST", "2.1/clusters/create")][1:] == [500, 429, 200]
    assert len(emulator.workspace.clusters) == 2 and other in emulator.workspace.clusters


def test_retry_after_is_honoured(make_hook, emulator):
    hook = make_hook(attempts=2)
    emulator.inject("GET", "2.1/clusters/list", Fault.rate_limited("1"))
    started = time.monotonic()
    assert hook.find_cluster(TAGS) is None
    assert time.monotonic() - started >= 0.95  # not the 0.05 s of the configured wait


def test_retries_give_up_after_the_configured_attempts(make_hook, emulator):
    hook = make_hook(attempts=2)
    emulator.inject("GET", "2.1/clusters/list", Fault(503), Fault(503))
    with pytest.raises(AirflowException, match="503"):
        hook.find_cluster(TAGS)
    assert endpoints(emulator, "GET", "2.1/clusters/list") == 2


def test_non_retryable_400_fails_at_once_with_the_servers_message(make_hook, emulator):
    hook = make_hook(attempts=5)
    emulator.inject(
        "POST",
        "2.1/clusters/create",
        Fault(400, "INVALID_PARAMETER_VALUE", "Node type g5.xlarge is not supported"),
    )
    with pytest.raises(DatabricksApiError, match=r"Node type g5\.xlarge is not supported") as raised:
        hook.create_cluster(GpuClusterSpec(), TAGS)
    assert raised.value.http_status_code == 400
    assert endpoints(emulator, "POST", "2.1/clusters/create") == 1
    assert endpoints(emulator, "GET", "2.1/clusters/list") == 0


def test_the_emulator_answers_an_invalid_body_with_a_400_naming_the_field(make_hook, emulator):
    hook = make_hook(attempts=5)
    body = cluster_create_body(GpuClusterSpec(), TAGS, **PATHS)
    with pytest.raises(DatabricksApiError, match="unknown field 'worker_memory'"):
        hook._do_api_call(("POST", "2.1/clusters/create"), {**body, "worker_memory": "2g"})
    assert endpoints(emulator, "POST", "2.1/clusters/create") == 1


def test_a_create_whose_answer_was_lost_is_found_by_tag_not_made_twice(make_hook, emulator):
    hook = make_hook(attempts=3, timeout_seconds=1)
    emulator.inject("POST", "2.1/clusters/create", Fault.slow(2.0))
    cluster_id = hook.create_cluster(GpuClusterSpec(), TAGS)

    assert list(emulator.workspace.clusters) == [cluster_id]
    assert endpoints(emulator, "GET", "2.1/clusters/list") == 1
    time.sleep(1.2)  # the slow answer is recorded once the emulator gives up writing it
    assert endpoints(emulator, "POST", "2.1/clusters/create") == 1


def test_create_failing_on_every_attempt_raises_cluster_error(make_hook, emulator):
    hook = make_hook(attempts=3)
    emulator.inject("POST", "2.1/clusters/create", Fault(503), Fault(503), Fault(503))
    with pytest.raises(ClusterError, match=r"clusters/create failed on every attempt.*503"):
        hook.create_cluster(GpuClusterSpec(), TAGS)
    assert endpoints(emulator, "POST", "2.1/clusters/create") == 3
    assert endpoints(emulator, "GET", "2.1/clusters/list") == 2
    assert emulator.workspace.clusters == {}


def test_find_cluster_follows_pages_and_skips_dead_clusters(make_hook, emulator):
    emulator.settings.max_page_size = 1
    hook = make_hook()
    wanted = hook.create_cluster(GpuClusterSpec(), TAGS)
    for i in range(2):
        hook.create_cluster(GpuClusterSpec(), {**TAGS, "airflow_run_id": f"other{i}"})
    assert hook.find_cluster(TAGS) == wanted
    assert endpoints(emulator, "GET", "2.1/clusters/list") == 3

    emulator.fail_next_init_script()
    dead = {**TAGS, "airflow_run_id": "dead"}
    dead_id = hook.create_cluster(GpuClusterSpec(), dead)
    with pytest.raises(ClusterError):
        hook.wait_for_cluster(dead_id, timeout_s=5)
    assert hook.find_cluster(dead) is None


def test_same_idempotency_token_gives_one_run(make_hook, emulator):
    hook = make_hook(timeout_seconds=1)
    cluster_id = hook.create_cluster(GpuClusterSpec(), TAGS)
    hook.wait_for_cluster(cluster_id, timeout_s=10)
    emulator.inject("POST", "2.2/jobs/runs/submit", Fault.slow(1.5))  # the first answer is lost
    first = hook.submit_job(cluster_id, job(), "try-1")
    again = hook.submit_job(cluster_id, job(), "try-1")
    other = hook.submit_job(cluster_id, job(), "try-2")

    assert first == again != other
    assert sorted(emulator.workspace.runs) == sorted({int(first), int(other)})
    assert isinstance(first, str)


# -- runs ---------------------------------------------------------------------------------------


def test_submit_builds_a_typed_one_task_run_from_the_clusters_artifacts(make_hook, emulator):
    hook = make_hook()
    cluster_id = hook.create_cluster(GpuClusterSpec(num_workers=3), TAGS)
    hook.wait_for_cluster(cluster_id, timeout_s=10)
    run_id = hook.submit_job(cluster_id, job(), "token-abc")

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

    status = wait_terminal(hook, run_id)
    assert status.state is RunLifecycle.SUCCESS
    assert status.url == f"{emulator.url}/?o=0#job/0/run/{run_id}"
    assert hook.get_run_report(run_id)["run_id"] == "token-abc"


def test_a_cluster_made_elsewhere_gets_the_wheel_as_a_library(make_hook, emulator):
    hook = make_hook()
    body = {"spark_version": DEFAULT_SPARK_VERSION, "node_type_id": "g5.xlarge", "num_workers": 1}
    cluster_id = hook._do_api_call(("POST", "2.1/clusters/create"), body)["cluster_id"]
    hook.submit_job(cluster_id, job(expected_executors=5, run_id="nightly"), "t")
    (task,) = emulator.calls("POST", "2.2/jobs/runs/submit")[0].body["tasks"]
    assert task["libraries"][0]["whl"].endswith("/airflow_spark_triton-0.1.0-py3-none-any.whl")
    assert emulator.workspace.files.exists(task["spark_python_task"]["python_file"])
    sent = InferenceJobConfig.from_json(task["spark_python_task"]["parameters"][1])
    assert (sent.expected_executors, sent.run_id) == (5, "nightly")


def test_a_failed_run_reports_the_jobs_own_error(make_hook, emulator):
    hook = make_hook()
    cluster_id = hook.create_cluster(GpuClusterSpec(), TAGS)
    emulator.fail_next_run("JobConfigError: job setting 'model' must be a 'module:attribute' reference")
    run_id = hook.submit_job(cluster_id, job(), "t1")
    status = wait_terminal(hook, run_id)

    assert status.state is RunLifecycle.FAILED
    assert status.message.startswith("SPARK_TRITON_ERROR: JobConfigError: job setting 'model'")
    assert "TERMINATED/FAILED" in status.message
    task_run = emulator.workspace.runs[int(run_id)].task_run_id
    assert emulator.calls("GET", "2.2/jobs/runs/get-output")[0].query["run_id"] == [str(task_run)]
    with pytest.raises(RunError, match="wrote no report"):
        hook.get_run_report(run_id)


def test_cancel_waits_for_the_run_to_end_and_is_a_no_op_afterwards(make_hook, emulator):
    emulator.settings.run_duration_s = 60
    emulator.settings.cancel_s = 0.3
    hook = make_hook()
    cluster_id = hook.create_cluster(GpuClusterSpec(), TAGS)
    run_id = hook.submit_job(cluster_id, job(), "t1")
    assert wait_terminal(hook, run_id, timeout_s=0.3).state in (RunLifecycle.PENDING, RunLifecycle.RUNNING)

    hook.cancel_run(run_id)
    assert hook.get_run_status(run_id).state is RunLifecycle.CANCELED
    hook.cancel_run(run_id)
    assert endpoints(emulator, "POST", "2.2/jobs/runs/cancel") == 1


def test_cancel_gives_up_after_its_timeout(make_hook, emulator):
    emulator.settings.run_duration_s = 60
    emulator.settings.cancel_s = 60
    hook = make_hook(cancel_timeout_s=0.3)
    run_id = hook.submit_job(hook.create_cluster(GpuClusterSpec(), TAGS), job(), "t1")
    with pytest.raises(RunError, match="still RUNNING"):
        hook.cancel_run(run_id)


def test_init_script_failure_raises_cluster_error_with_reason_and_events(make_hook, emulator):
    hook = make_hook()
    emulator.fail_next_init_script("SPARK_TRITON_INIT_ERROR: pip could not install nvidia-pytriton==0.7.0")
    cluster_id = hook.create_cluster(GpuClusterSpec(), TAGS)
    with pytest.raises(ClusterError) as raised:
        hook.wait_for_cluster(cluster_id, timeout_s=10)

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


def test_a_wrong_token_fails_at_once_with_401(make_hook, emulator, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_DBX_WRONG", json.dumps({**emulator.connection(), "password": "dapi-wrong"})
    )
    hook = make_hook(attempts=5, databricks_conn_id="dbx_wrong")
    with pytest.raises(DatabricksApiError, match="401") as raised:
        hook.find_cluster(TAGS)
    assert raised.value.http_status_code == 401
    assert len(emulator.calls()) == 1


def test_the_token_never_appears_in_logs_records_results_or_errors(make_hook, emulator, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    hook = make_hook()
    results: list[Any] = []
    cluster_id = hook.create_cluster(GpuClusterSpec(), TAGS)
    hook.wait_for_cluster(cluster_id, timeout_s=10)
    run_id = hook.submit_job(cluster_id, job(), "t1")
    results += [cluster_id, run_id, wait_terminal(hook, run_id).to_dict(), hook.get_run_report(run_id)]
    emulator.fail_next_run()
    results.append(wait_terminal(hook, hook.submit_job(cluster_id, job(), "t2")).to_dict())
    emulator.inject("GET", "2.1/clusters/get", Fault(400, "INVALID_PARAMETER_VALUE", "nope"))
    with pytest.raises(DatabricksApiError) as raised:
        hook.wait_for_cluster(cluster_id, timeout_s=1)
    results.append(str(raised.value))
    hook.delete_cluster(cluster_id)

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
    assert DatabricksGpuHook.report_path_of(run) == "/Volumes/a/b/c/reports/x.json"
    assert DatabricksGpuHook.report_path_of({"tasks": [{"notebook_task": {}}]}) is None


def test_artifact_root_must_be_a_volume(make_hook):
    with pytest.raises(ValueError, match="needs extra 'artifact_root'"):
        make_hook(artifact_root="dbfs:/tmp").create_cluster(GpuClusterSpec(), TAGS)


# -- artifacts and the init script --------------------------------------------------------------


def test_the_wheel_is_built_from_the_sources_once_per_version():
    from airflow_spark_triton.hooks.databricks_artifacts import artifact_set

    first, second = artifact_set(), artifact_set()
    assert first == second
    assert first.wheel.name == "airflow_spark_triton-0.1.0-py3-none-any.whl"
    names = zipfile.ZipFile(first.wheel).namelist()
    assert "spark_jobs/batch_inference.py" in names
    assert "airflow_spark_triton/init_scripts/databricks_init.sh" in names
    paths = first.remote_paths(ARTIFACT_ROOT)
    assert paths["wheel"] == f"{ARTIFACT_ROOT}/artifacts/{first.digest}/{first.wheel.name}"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "SPARK_TRITON_WHEEL is not set"),
        (
            {"SPARK_TRITON_WHEEL": "/Volumes/x/y/z/missing.whl"},
            "wheel /Volumes/x/y/z/missing.whl is not readable",
        ),
    ],
)
def test_the_init_script_fails_with_a_clear_message(tmp_path, env, message):
    from airflow_spark_triton.hooks.databricks_artifacts import INIT_SCRIPT

    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPARK_TRITON")}
    run = subprocess.run(
        ["bash", str(INIT_SCRIPT)],
        env={**clean, **env, "SPARK_TRITON_INIT_LOG": str(tmp_path / "init.log")},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 1
    assert run.stderr.startswith("SPARK_TRITON_INIT_ERROR: ")
    assert message in run.stderr
    assert message in (tmp_path / "init.log").read_text()


# -- end to end on local Spark ------------------------------------------------------------------


@pytest.mark.slow
def test_a_real_job_runs_through_the_emulator_on_local_spark(tmp_path, monkeypatch, fake_wheel):
    import pandas as pd
    from deltalake import write_deltalake
    from tenacity import stop_after_attempt, wait_fixed

    input_table = str(tmp_path / "documents")
    rows = pd.DataFrame(
        {
            "id": pd.Series([1, 2, 3, 4], dtype="int64"),
            "text": ["the quick brown fox", "jumps over", "the lazy dog", "other day"],
            "date": ["2024-01-01", "2024-01-01", "2024-01-01", "2024-01-02"],
        }
    )
    write_deltalake(input_table, rows)
    settings = Settings(cluster_start_s=0.0)
    with DatabricksEmulator(
        TOKEN, local_spark=True, home=tmp_path / "emulator", settings=settings
    ) as emulator:
        monkeypatch.setenv("AIRFLOW_CONN_DBX_LOCAL", json.dumps(emulator.connection()))
        hook = DatabricksGpuHook(
            "dbx_local",
            artifact_root=ARTIFACT_ROOT,
            wheel=str(fake_wheel),
            single_user_name="etl-sp@example.com",
            poll_interval_s=1.0,
            retry_args={"stop": stop_after_attempt(3), "wait": wait_fixed(0.2)},
        )
        cluster_id = hook.create_cluster(GpuClusterSpec(num_workers=1, executor_cores=1), TAGS)
        try:
            hook.wait_for_cluster(cluster_id, timeout_s=300)
            work = job(input_table=input_table, output_table=str(tmp_path / "embeddings"), batch_size=2)
            run_id = hook.submit_job(cluster_id, work, "e2e-try-1")
            status = wait_terminal(hook, run_id, timeout_s=600)
            assert status.state is RunLifecycle.SUCCESS, status.message
            report = hook.get_run_report(run_id)
            assert report["status"] == "SUCCESS"
            assert (report["rows_read"], report["rows_scored"], report["rows_rejected"]) == (3, 3, 0)
        finally:
            hook.delete_cluster(cluster_id)
