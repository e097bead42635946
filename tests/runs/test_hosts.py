"""Records of another host are never judged by pid here: reported as running there, never stopped."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest

from airflow_spark_triton.runs.hosts import HOST_ID_ENV, foreign_host, this_host
from airflow_spark_triton.runs.states import RunLifecycle
from airflow_spark_triton.runs.supervised import RunsError, SupervisedRuns, run_activity
from spark_jobs.json_files import read_json, write_json_atomic

OWNER = "local-0123456789ab"
RUN_ID = f"{OWNER}-run-0badc0de"


def test_the_host_is_the_hostname_unless_configured(monkeypatch):
    import socket

    monkeypatch.delenv(HOST_ID_ENV, raising=False)
    assert this_host() == socket.gethostname()
    monkeypatch.setenv(HOST_ID_ENV, "gpu-node-7")
    assert this_host() == "gpu-node-7"
    assert foreign_host({"host": "gpu-node-7"}) is None
    assert foreign_host({"host": "worker-b"}) == "worker-b"
    assert foreign_host({}) is None  # written before records carried a host: this host's, as before
    assert foreign_host(None) is None


def a_dead_pid() -> dict[str, int]:
    dead = subprocess.Popen(["true"])
    dead.wait()
    return {"pid": dead.pid, "create_time": 1.0, "pgid": dead.pid}


def recorded_run(root: Path, host: str) -> SupervisedRuns:
    """An unfinished run whose recorded supervisor pid is not running on this machine."""
    run_dir = root / OWNER / "runs" / RUN_ID
    run_dir.mkdir(parents=True)
    gone = a_dead_pid()
    write_json_atomic(run_dir / "run.json", {"run_id": RUN_ID, "idempotency_token": "t", "host": host,
                                              "supervisor": gone, "created_epoch": 1.0})  # fmt: skip
    write_json_atomic(run_dir / "status.json", {"run_id": RUN_ID, "state": "RUNNING", "supervisor": gone})
    return SupervisedRuns(root, logging.getLogger("test"), owner_pattern=r"local-[0-9a-f]{12}")


def test_a_run_of_another_host_is_reported_running_there_never_failed(tmp_path):
    runs = recorded_run(tmp_path, host="worker-b")
    status = runs.status(RUN_ID)
    assert status.state == RunLifecycle.RUNNING
    assert status.message == f"running on host 'worker-b'; this host ({this_host()!r}) cannot check it"
    assert read_json(runs.run_dir(RUN_ID) / "status.json")["state"] == "RUNNING"  # nothing settled
    assert run_activity(tmp_path / OWNER).live == (RUN_ID,)  # its cluster's reaper does not idle it out


def test_the_same_run_on_this_host_is_failed_for_its_dead_supervisor(tmp_path):
    """The control: the pid check itself does run for this host's record."""
    runs = recorded_run(tmp_path, host=this_host())
    status = runs.status(RUN_ID)
    assert status.state == RunLifecycle.FAILED and "supervisor died" in status.message
    assert run_activity(tmp_path / OWNER).live == ()


def test_cancel_of_another_hosts_run_fails_naming_both_hosts(tmp_path):
    runs = recorded_run(tmp_path, host="worker-b")
    with pytest.raises(
        RunsError, match=rf"cannot cancel: run {RUN_ID} is running on host 'worker-b'; this host"
    ):
        runs.cancel(RUN_ID)
    assert read_json(runs.run_dir(RUN_ID) / "status.json")["state"] == "RUNNING"
    # Once the other host recorded its end (a shared state dir), there is nothing left to cancel.
    write_json_atomic(runs.run_dir(RUN_ID) / "status.json", {"run_id": RUN_ID, "state": "SUCCESS"})
    runs.cancel(RUN_ID)
    assert runs.status(RUN_ID).state == RunLifecycle.SUCCESS
    assert runs.stop_leftover_drivers(OWNER) == []
