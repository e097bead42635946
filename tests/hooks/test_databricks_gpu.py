"""The Databricks hook against a local REST emulator: the connection, retries, Retry-After, the Files API.

Clusters and runs are the backend's: tests/backends/databricks/.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from airflow.providers.common.compat.sdk import AirflowException
from airflow.providers.databricks.exceptions import DatabricksApiError
from tenacity import RetryError

from airflow_spark_triton.backends.databricks.cluster_spec import cluster_create_body
from airflow_spark_triton.cluster_spec import GpuClusterSpec
from airflow_spark_triton.errors import BackendConfigError, ClusterError
from airflow_spark_triton.hooks.databricks_gpu import DatabricksGpuHook, gave_up_retryable, last_http_error
from tests.databricks_emulator import DatabricksEmulator, Fault
from tests.hooks.conftest import ARTIFACT_ROOT

LIST_CLUSTERS = ("GET", "2.1/clusters/list")
CREATE_CLUSTER = ("POST", "2.1/clusters/create")
BODY = {"spark_version": "15.4.x-gpu-ml-scala2.12", "node_type_id": "g5.xlarge", "num_workers": 1}
FILE = f"{ARTIFACT_ROOT}/tests/data.bin"


def endpoints(emulator: DatabricksEmulator, method: str, endpoint: str) -> int:
    return len(emulator.calls(method, endpoint))


# -- the connection ----------------------------------------------------------------------------


def test_the_connection_json_reaches_the_emulator_over_http(make_hook, emulator):
    hook = make_hook()
    assert isinstance(hook, DatabricksGpuHook)
    assert (
        hook._endpoint_url("api/2.1/clusters/get") == f"http://127.0.0.1:{emulator.port}/api/2.1/clusters/get"
    )
    assert hook._do_api_call(LIST_CLUSTERS, {})["clusters"] == []
    assert emulator.calls()[-1].path == "/api/2.1/clusters/list"


def test_a_wrong_token_fails_at_once_with_401(make_hook, emulator, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_DBX_WRONG", json.dumps({**emulator.connection(), "password": "dapi-wrong"})
    )
    hook = make_hook(attempts=5, databricks_conn_id="dbx_wrong")
    with pytest.raises(DatabricksApiError, match="401") as raised:
        hook._do_api_call(LIST_CLUSTERS, {})
    assert raised.value.http_status_code == 401
    assert len(emulator.calls()) == 1


def test_artifact_root_must_be_a_volume(make_hook):
    with pytest.raises(BackendConfigError, match="needs extra 'artifact_root'") as raised:
        _ = make_hook(artifact_root="dbfs:/tmp").artifact_root
    assert isinstance(raised.value, ValueError)
    assert make_hook(artifact_root=f"{ARTIFACT_ROOT}/").artifact_root == ARTIFACT_ROOT


def test_extras_come_from_the_connection_unless_given(make_hook, emulator, monkeypatch):
    extra = {"artifact_root": "/Volumes/c/s/v", "wheel": "/dist/x.whl", "single_user_name": "sp@example.com"}
    monkeypatch.setenv("AIRFLOW_CONN_DBX_EXTRA", json.dumps({**emulator.connection(), "extra": extra}))
    hook = make_hook(databricks_conn_id="dbx_extra", artifact_root=None, wheel=None, single_user_name=None)
    assert (hook.artifact_root, hook.wheel, hook.single_user_name()) == (
        "/Volumes/c/s/v",
        "/dist/x.whl",
        "sp@example.com",
    )
    assert make_hook(databricks_conn_id="dbx_extra").artifact_root == ARTIFACT_ROOT
    assert not emulator.calls()


def test_single_user_defaults_to_the_connections_own_identity(make_hook, emulator):
    hook = make_hook(single_user_name=None)
    assert hook.single_user_name() == hook.single_user_name() == emulator.user_name
    assert endpoints(emulator, "GET", "2.0/preview/scim/v2/Me") == 1


# -- retries -----------------------------------------------------------------------------------


def test_retry_after_is_honoured(make_hook, emulator):
    hook = make_hook(attempts=2)
    emulator.inject("GET", "2.1/clusters/list", Fault.rate_limited("1"))
    started = time.monotonic()
    assert hook._do_api_call(LIST_CLUSTERS, {})["clusters"] == []
    assert time.monotonic() - started >= 0.95  # not the 0.05 s of the configured wait


def test_retries_give_up_after_the_configured_attempts(make_hook, emulator):
    hook = make_hook(attempts=2)
    emulator.inject("GET", "2.1/clusters/list", Fault(503), Fault(503))
    with pytest.raises(AirflowException, match="503"):
        hook._do_api_call(LIST_CLUSTERS, {})
    assert endpoints(emulator, "GET", "2.1/clusters/list") == 2


def test_riding_out_retries_an_incident_until_it_ends_honouring_retry_after(make_hook, emulator):
    hook = make_hook(attempts=2)  # the policy of a one-off call: two attempts, 0.05 s apart
    emulator.inject(
        "GET", "2.1/clusters/list", *[Fault.rate_limited("0.3"), Fault(503, retry_after="0.2")] * 3
    )
    started = time.monotonic()
    assert hook.riding_out(time.time() + 30)._do_api_call(LIST_CLUSTERS, {})["clusters"] == []
    assert time.monotonic() - started >= 0.3 * 3 + 0.2 * 3 - 0.1  # each Retry-After was waited for
    assert [r.status for r in emulator.calls("GET", "2.1/clusters/list")] == [429, 503] * 3 + [200]
    assert hook.retry_args["stop"].__class__.__name__ == "stop_after_attempt", "the hook itself is unchanged"


def test_riding_out_gives_up_at_its_deadline_and_not_before(make_hook, emulator):
    hook = make_hook(attempts=2)
    emulator.start_outage(30, (Fault(503),))
    started = time.monotonic()
    with pytest.raises(AirflowException, match="503"):
        hook.riding_out(time.time() + 1.0)._do_api_call(LIST_CLUSTERS, {})
    assert 0.95 <= time.monotonic() - started < 5
    assert endpoints(emulator, "GET", "2.1/clusters/list") > 2


def test_riding_out_does_not_retry_a_client_error(make_hook, emulator):
    emulator.inject("GET", "2.1/clusters/get", Fault(403, "PERMISSION_DENIED", "no access"))
    with pytest.raises(DatabricksApiError, match="no access"):
        make_hook().riding_out(None).get_cluster("0101-000000-abcdefgh")
    assert endpoints(emulator, "GET", "2.1/clusters/get") == 1


def test_the_async_calls_ride_out_an_incident_honouring_retry_after(make_hook, emulator):
    """The provider's aiohttp calls (what the trigger uses): same back-off, same ``Retry-After``;
    a GET's parameters travel as a JSON body, which the emulator accepts as Databricks does."""
    cluster_id = make_hook().create_cluster(BODY, lambda: None)
    emulator.inject(
        "GET", "2.1/clusters/get", Fault.rate_limited("0.5"), Fault(502), Fault(503, retry_after="0.5")
    )

    async def state():
        hook = make_hook(attempts=1).riding_out(None)
        async with hook:
            return await hook.a_get_cluster_state(cluster_id)

    started = time.monotonic()
    assert asyncio.run(asyncio.wait_for(state(), 30)).state in ("PENDING", "RUNNING")
    assert time.monotonic() - started >= 0.95
    assert [r.status for r in emulator.calls("GET", "2.1/clusters/get")] == [429, 502, 503, 200]
    assert emulator.calls("GET", "2.1/clusters/get")[-1].body == {"cluster_id": cluster_id}


def test_the_emulator_answers_an_invalid_body_with_a_400_naming_the_field(make_hook, emulator):
    hook = make_hook(attempts=5)
    paths = {"wheel_path": f"{ARTIFACT_ROOT}/a/x.whl", "init_script_path": f"{ARTIFACT_ROOT}/a/init.sh"}
    body = cluster_create_body(GpuClusterSpec(), {"team": "search"}, **paths)
    with pytest.raises(DatabricksApiError, match="unknown field 'worker_memory'"):
        hook._do_api_call(CREATE_CLUSTER, {**body, "worker_memory": "2g"})
    assert endpoints(emulator, "POST", "2.1/clusters/create") == 1


def test_post_checked_asks_before_each_resend_and_takes_its_answer(make_hook, emulator):
    hook = make_hook(attempts=3, timeout_seconds=1)
    emulator.inject("POST", "2.1/clusters/create", Fault.slow(2.0))  # applied, but the answer is lost
    asked: list[int] = []

    def went_through():
        asked.append(len(emulator.workspace.clusters))
        return (
            {"cluster_id": next(iter(emulator.workspace.clusters))} if emulator.workspace.clusters else None
        )

    answer = hook.post_checked(CREATE_CLUSTER, BODY, went_through)
    assert asked == [1]
    assert list(emulator.workspace.clusters) == [answer["cluster_id"]]


def test_post_checked_gives_up_with_the_servers_last_answer(make_hook, emulator):
    hook = make_hook(attempts=2)
    emulator.inject("POST", "2.1/clusters/create", Fault(503), Fault(503), Fault(503), Fault(503))
    asked: list[bool] = []
    with pytest.raises(AirflowException) as raised:
        hook.post_checked(CREATE_CLUSTER, BODY, lambda: asked.append(True))
    assert gave_up_retryable(raised.value) and isinstance(raised.value.__cause__, RetryError)
    assert "503" in last_http_error(raised.value) and "TEMPORARILY_UNAVAILABLE" in last_http_error(
        raised.value
    )
    assert asked == [True]  # once, before the one re-send
    assert endpoints(emulator, "POST", "2.1/clusters/create") == 2


def test_post_checked_does_not_resend_a_non_retryable_error(make_hook, emulator):
    hook = make_hook(attempts=5)
    emulator.inject("POST", "2.1/clusters/create", Fault(400, "INVALID_PARAMETER_VALUE", "no such node type"))
    with pytest.raises(DatabricksApiError, match="no such node type"):
        hook.post_checked(CREATE_CLUSTER, BODY, lambda: pytest.fail("a 400 is not re-sent"))
    assert endpoints(emulator, "POST", "2.1/clusters/create") == 1


# -- one method per endpoint -------------------------------------------------------------------


def test_cluster_endpoints_are_one_method_each(make_hook, emulator):
    hook = make_hook()
    cluster_id = hook.create_cluster(BODY, lambda: pytest.fail("the first attempt went through"))
    assert hook.get_cluster(cluster_id)["cluster_id"] == cluster_id
    assert [c["cluster_id"] for c in hook.list_clusters(["PENDING", "RUNNING"])] == [cluster_id]
    assert hook.get_library_statuses(cluster_id) == []
    hook.permanent_delete_cluster(cluster_id)
    assert hook.list_clusters(["PENDING", "RUNNING"]) == []
    assert [c.endpoint for c in emulator.calls()] == [
        "2.1/clusters/create", "2.1/clusters/get", "2.1/clusters/list", "2.0/libraries/cluster-status",
        "2.1/clusters/permanent-delete", "2.1/clusters/list",
    ]  # fmt: skip


def test_a_create_that_failed_on_every_attempt_is_a_cluster_error_with_the_last_answer(make_hook, emulator):
    emulator.inject("POST", "2.1/clusters/create", Fault(503), Fault(503))
    asked: list[bool] = []
    with pytest.raises(ClusterError, match=r"clusters/create failed on every attempt; last: .*503"):
        make_hook(attempts=2).create_cluster(BODY, lambda: asked.append(True))
    assert asked == [True, True], "asked before the re-send, and after the last attempt"


def test_a_create_whose_last_attempt_went_through_without_an_answer_returns_its_cluster(make_hook, emulator):
    """A 5xx or a timeout may still have created the cluster: the lookup after the last attempt
    finds it, so the caller gets its id instead of an error (and nothing to delete blindly)."""
    hook = make_hook(attempts=2, timeout_seconds=1)
    emulator.inject("POST", "2.1/clusters/create", Fault(503), Fault.slow(2.0))  # the 2nd is applied
    found = []

    def went_through():
        found.append(list(emulator.workspace.clusters))
        return next(iter(emulator.workspace.clusters), None)

    cluster_id = hook.create_cluster(BODY, went_through)
    assert found == [[], [cluster_id]]
    assert list(emulator.workspace.clusters) == [cluster_id]


# -- the Files API -----------------------------------------------------------------------------


def test_upload_read_and_exists_on_a_volume(make_hook, emulator, tmp_path):
    hook = make_hook()
    local = tmp_path / "data.bin"
    local.write_bytes(b"\x00\x01binary\xff")

    assert hook.file_exists(FILE) is False
    assert hook.read_file(FILE) is None  # 404 means missing, not an error
    assert hook.upload_file(local, FILE) is True
    assert hook.file_exists(FILE) is True
    assert hook.read_file(FILE) == local.read_bytes()
    assert hook.upload_file(local, FILE) is False  # already there: only checked
    assert endpoints(emulator, "PUT", "2.0/fs/files") == 1
    assert endpoints(emulator, "PUT", "2.0/fs/directories") == 1

    local.write_bytes(b"new")
    assert hook.upload_file(local, FILE, overwrite=True) is True
    assert hook.read_file(FILE) == b"new"
    assert endpoints(emulator, "PUT", "2.0/fs/directories") == 1  # once per directory and hook
    put = emulator.calls("PUT", "2.0/fs/files")[-1]
    assert put.query["overwrite"] == ["true"]
    assert put.headers["Content-Type"] == "application/octet-stream"
    assert put.headers["Authorization"] == "Bearer <redacted>"


def test_a_concurrent_upload_of_the_same_file_counts_as_already_there(make_hook, emulator, tmp_path):
    local = tmp_path / "data.bin"
    local.write_bytes(b"v1")
    hook = make_hook()
    emulator.inject("HEAD", "2.0/fs/files", Fault(404, "NOT_FOUND", "not found"))  # checked before...
    emulator.workspace.files.write(FILE, b"v1", overwrite=False)  # ...another task uploaded it
    assert hook.upload_file(local, FILE) is False
    assert [r.status for r in emulator.calls("PUT", "2.0/fs/files")] == [409]


def test_files_api_calls_are_retried_with_retry_after(make_hook, emulator, tmp_path):
    local = tmp_path / "data.bin"
    local.write_bytes(b"payload")
    hook = make_hook(attempts=3)
    emulator.inject("PUT", "2.0/fs/files", Fault(503), Fault.rate_limited("1"))
    started = time.monotonic()
    assert hook.upload_file(local, FILE) is True
    assert time.monotonic() - started >= 0.95
    assert [r.status for r in emulator.calls("PUT", "2.0/fs/files")] == [503, 429, 204]


def test_files_api_errors_carry_the_status_and_give_up_after_the_attempts(make_hook, emulator, tmp_path):
    hook = make_hook(attempts=2)
    with pytest.raises(DatabricksApiError) as raised:
        hook.read_file("/Volumes/only-two/levels")
    assert raised.value.http_status_code == 400 and "Invalid path" in str(raised.value)

    emulator.inject("GET", "2.0/fs/files", Fault(503), Fault(503))
    with pytest.raises(AirflowException, match=r"GET api/2.0/fs/files.* failed on every attempt"):
        hook.read_file(FILE)
    assert endpoints(emulator, "GET", "2.0/fs/files") == 3
