"""Uploads fail loudly: every Files API refusal names the path and status, a missing volume by name.

Against the emulator, whose Files API answers 404 under a volume that does not exist, as the real one
does (the exact wording of Databricks' messages is not asserted; the hook's own message is).
"""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_spark_triton.hooks.databricks_gpu import FilesApiError, volume_of
from tests.databricks_emulator import Fault
from tests.hooks.conftest import ARTIFACT_ROOT
from tests.operators.test_inference import Store

MISSING_ROOT = "/Volumes/main/default/no_such_volume/spark_triton"


@pytest.fixture
def make_hook(make_backend):
    """The hook of a backend on the emulator (fast retries)."""
    return lambda **kwargs: make_backend(**kwargs).hook


def test_volume_of_names_the_volume_of_a_path():
    assert volume_of("/Volumes/main/default/v/a/b.whl") == "main.default.v"
    assert volume_of("/Volumes/main/default/v") == "main.default.v"
    assert volume_of("/Workspace/Users/x") is None


def test_an_upload_into_a_missing_volume_fails_naming_the_volume_and_the_path(make_hook, tmp_path, caplog):
    local = tmp_path / "init.sh"
    local.write_text("#!/bin/bash\n")
    target = f"{MISSING_ROOT}/artifacts/abc/init.sh"
    with caplog.at_level(logging.INFO), pytest.raises(FilesApiError) as raised:
        make_hook().upload_file(local, target)
    message = str(raised.value)
    assert raised.value.http_status_code == 404
    assert raised.value.path == f"{MISSING_ROOT}/artifacts/abc"  # the directory call is the first refused
    assert "volume main.default.no_such_volume does not exist" in message
    assert "HTTP 404" in message
    assert "Uploaded" not in caplog.text


def test_a_missing_file_in_an_existing_volume_is_not_called_a_missing_volume(make_hook, emulator):
    emulator.inject("PUT", "2.0/fs/files", Fault(404, "NOT_FOUND", "gone"))
    hook = make_hook(attempts=1)
    with pytest.raises(FilesApiError) as raised:
        hook.upload_bytes(b"x", f"{ARTIFACT_ROOT}/a/b.txt")
    assert "HTTP 404" in str(raised.value) and "does not exist" not in str(raised.value)
    assert f"{ARTIFACT_ROOT}/a/b.txt" in str(raised.value)


@pytest.mark.parametrize("status", [400, 403, 409])
def test_every_refusal_but_already_exists_fails_with_path_and_status(make_hook, emulator, status):
    emulator.inject("PUT", "2.0/fs/files", Fault(status, "PERMISSION_DENIED", "no"))
    target = f"{ARTIFACT_ROOT}/x/data.bin"
    if status == 409:  # a concurrent upload of the same content-addressed file: already there
        assert make_hook(attempts=1).upload_bytes(b"x", target) is False
        return
    with pytest.raises(FilesApiError, match=rf"PUT {target} failed with HTTP {status}"):
        make_hook(attempts=1).upload_bytes(b"x", target)


def test_a_read_of_a_missing_file_is_none_but_a_refused_read_raises(make_hook, emulator):
    hook = make_hook(attempts=1)
    assert hook.read_file(f"{ARTIFACT_ROOT}/nothing.json") is None
    emulator.inject("GET", "2.0/fs/files", Fault(403, "PERMISSION_DENIED", "no"))
    with pytest.raises(FilesApiError, match="HTTP 403"):
        hook.read_file(f"{ARTIFACT_ROOT}/nothing.json")


# -- the Test button -------------------------------------------------------------------------------


def test_test_connection_writes_and_deletes_a_probe_in_artifact_root(make_hook, emulator):
    ok, message = make_hook().test_connection()
    assert ok, message
    assert f"artifact_root {ARTIFACT_ROOT}" in message and "writable" in message
    puts = [r.path for r in emulator.calls("PUT", "2.0/fs/files")]
    deletes = [r.path for r in emulator.calls("DELETE", "2.0/fs/files")]
    assert len(puts) == 1 and deletes == puts  # the probe is gone again
    assert not emulator.workspace.files.exists(puts[0].removeprefix("/api/2.0/fs/files"))


def test_test_connection_names_a_missing_volume(make_hook, emulator):
    ok, message = make_hook(artifact_root=MISSING_ROOT).test_connection()
    assert not ok
    assert "main.default.no_such_volume does not exist" in message
    assert not emulator.calls("PUT")  # nothing was tried before the volume was checked


def test_test_connection_reports_a_volume_it_may_not_write(make_hook, emulator):
    emulator.inject("PUT", "2.0/fs/files", Fault(403, "PERMISSION_DENIED", "User lacks WRITE VOLUME"))
    ok, message = make_hook(attempts=1).test_connection()
    assert not ok
    assert "HTTP 403" in message and ARTIFACT_ROOT in message


def test_test_connection_reports_a_bad_artifact_root_setting(make_hook):
    ok, message = make_hook(artifact_root="dbfs:/tmp").test_connection()
    assert not ok and "artifact_root" in message


def test_a_created_volume_accepts_uploads(make_hook, emulator):
    emulator.create_volume("main.default.no_such_volume")
    assert make_hook().upload_bytes(b"x", f"{MISSING_ROOT}/f.txt") is True


# -- the create task -------------------------------------------------------------------------------


@pytest.mark.parametrize("compute", ["job", "all_purpose"])
def test_the_create_task_fails_before_any_cluster_naming_the_missing_volume(
    emulator, monkeypatch, fake_wheel, compute
):
    from airflow_spark_triton.operators.cluster import CreateGpuClusterOperator

    extra = {"artifact_root": MISSING_ROOT, "wheel": str(fake_wheel), "single_user_name": "sp@example.com"}
    monkeypatch.setenv("AIRFLOW_CONN_DBX_NO_VOLUME", json.dumps({**emulator.connection(), "extra": extra}))
    op = CreateGpuClusterOperator(
        task_id="create_cluster", conn_id="dbx_no_volume", cluster_spec={"num_workers": 1, "compute": compute}
    )
    ti = SimpleNamespace(
        dag_id="d", task_id="create_cluster", run_id="r", map_index=-1, try_number=1, stats_tags={}
    )
    context: dict[str, Any] = {"ti": ti, "task_state_store": Store()}
    with pytest.raises(FilesApiError, match=r"volume main\.default\.no_such_volume does not exist"):
        op.execute(context)
    assert not emulator.calls("POST", "2.1/clusters/create")
    assert not emulator.calls("POST", "2.2/jobs/runs/submit")
    assert not emulator.workspace.clusters
