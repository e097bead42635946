"""The local cluster's reaper (issue #11): a cluster whose creating task is killed with -9, or that
idles, deletes itself; a run whose supervisor was killed can still be canceled and cannot outlive
its cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import psutil
import pytest

from airflow_spark_triton.backends.base import RunLifecycle
from airflow_spark_triton.backends.local import reaper as local_reaper
from airflow_spark_triton.backends.local.backend import LocalSparkBackend
from airflow_spark_triton.backends.local.cluster_state import owner_records
from airflow_spark_triton.backends.local.reaper import IDLE_OVERRIDE_ENV, reap_reason
from airflow_spark_triton.cluster_spec import GpuClusterSpec
from airflow_spark_triton.runs import processes as procs
from airflow_spark_triton.runs.processes import ProcessRecord
from airflow_spark_triton.runs.supervised import RunActivity, run_activity
from spark_jobs.json_files import write_json_atomic
from tests.backends.local.test_backend import (
    READY_TIMEOUT_S,
    SLEEPING_JOB,
    assert_nothing_left,
    fake_cluster,
    wait_for_log_line,
    write_script,
)

pytestmark = pytest.mark.usefixtures("no_process_left_behind")

SMALL = GpuClusterSpec(num_workers=1, executor_cores=1, worker_memory="512m")
# From the kill (or the end of the idle time) to a DELETED record with nothing left: one poll
# (2 s), importing the backend in the reaper (about 3 s, more on a loaded machine) and the delete
# itself (1-3 s: the JVMs exit on SIGTERM). Measured 13-16 s on two heavily loaded cores.
REAP_BOUND_S = 30.0
NOW = 1_800_000_000.0


# -- fast: the decision, the idle clock, the owners --------------------------------------------


def record(pid: int, create_time: float = 1.0) -> dict:
    return {"pid": pid, "create_time": create_time, "pgid": pid}


def cluster_record(state: str, **extra) -> dict:
    return {
        "cluster_id": "local-0123456789ab",
        "state": state,
        "spec": {"autotermination_minutes": 10},
        "master": record(100),
        "owners": [record(200), record(201)],
        "created_epoch": NOW - 1000,
        **extra,
    }


def alive_except(*dead: int):
    return lambda r: r.pid not in dead


NO_RUNS = RunActivity(live=(), last_epoch=None)


@pytest.mark.parametrize(
    ("cluster", "runs", "dead", "expected"),
    [
        pytest.param(cluster_record("PENDING"), NO_RUNS, (), None, id="pending-owners-alive"),
        pytest.param(
            cluster_record("PENDING"), NO_RUNS, (201,), "reaper: owner pid 201 gone while PENDING",
            id="pending-supervisor-killed",
        ),
        pytest.param(
            cluster_record("TERMINATED", running_epoch=None), NO_RUNS, (200,),
            "reaper: owner pid 200 gone while TERMINATED", id="terminated-before-running-owner-killed",
        ),
        pytest.param(
            cluster_record("RUNNING", owners=[], running_epoch=NOW - 10), NO_RUNS, (200, 201), None,
            id="running-owners-no-longer-watched",
        ),
        pytest.param(
            cluster_record("RUNNING", running_epoch=NOW - 10), NO_RUNS, (100,),
            "reaper: master pid 100 exited while RUNNING", id="running-master-died",
        ),
        pytest.param(
            cluster_record("DELETING", deleting_by=record(300)), NO_RUNS, (100, 200, 201), None,
            id="deleting-deleter-alive",
        ),
        pytest.param(
            cluster_record("DELETING", deleting_by=record(300)), NO_RUNS, (300,),
            "reaper: the delete by pid 300 was left unfinished", id="deleting-deleter-killed",
        ),
        pytest.param(cluster_record("DELETED"), NO_RUNS, (100, 200, 201), None, id="deleted"),
    ],
)  # fmt: skip
def test_reap_reason(cluster, runs, dead, expected):
    assert reap_reason(cluster, runs, NOW, 600.0, alive=alive_except(*dead)) == expected


@pytest.mark.parametrize(
    ("running_for", "runs", "reaped"),
    [
        pytest.param(599, NO_RUNS, False, id="running-less-than-the-limit"),
        pytest.param(600, NO_RUNS, True, id="running-idle-for-the-limit"),
        pytest.param(3600, RunActivity(("r1",), NOW - 3600), False, id="a-live-run-is-activity"),
        pytest.param(3600, RunActivity((), NOW - 599), False, id="counted-from-the-last-run-end"),
        pytest.param(3600, RunActivity((), NOW - 601), True, id="idle-since-the-last-run-end"),
    ],
)
def test_idle_clock_starts_at_the_later_of_running_and_the_last_run(running_for, runs, reaped):
    cluster = cluster_record("RUNNING", owners=[], running_epoch=NOW - running_for)
    reason = reap_reason(cluster, runs, NOW, 600.0, alive=alive_except())
    assert (reason is not None) == reaped
    if reaped:
        assert reason.startswith("reaper: idle for") and "autotermination_minutes=10" in reason


def test_idle_limit_is_the_specs_autotermination_unless_overridden():
    assert local_reaper.idle_limit_s({"spec": {"autotermination_minutes": 10}}) == 600.0
    assert local_reaper.idle_limit_s({"spec": {}}) == 3600.0
    assert local_reaper.idle_limit_s({"spec": {"autotermination_minutes": 10}}, 5) == 5.0


def test_only_runs_with_a_live_supervisor_are_activity(backend, tmp_path):
    cdir = backend.cluster_dir(fake_cluster(backend))
    me = ProcessRecord.of(os.getpid()).to_dict()
    gone = record(os.getpid(), create_time=1.0)  # this pid, another create time: a dead process
    runs = {"aaaaaaaa": ("RUNNING", me), "bbbbbbbb": ("RUNNING", gone), "cccccccc": ("SUCCESS", gone)}
    for suffix, (state, supervisor) in runs.items():
        run_dir = cdir / "runs" / f"{cdir.name}-run-{suffix}"
        run_dir.mkdir(parents=True)
        run = {"run_id": run_dir.name, "created_epoch": time.time() - 3600, "supervisor": supervisor}
        write_json_atomic(run_dir / "run.json", run)
        write_json_atomic(run_dir / "status.json", {"state": state, "supervisor": supervisor})
    activity = run_activity(cdir)
    assert activity.live == (f"{cdir.name}-run-aaaaaaaa",)
    assert time.time() - 60 < activity.last_epoch <= time.time()  # the status files' writes


def test_owners_are_the_process_and_inside_an_airflow_task_its_supervisor(monkeypatch):
    runner = "airflow.sdk.execution_time.task_runner"
    monkeypatch.setitem(sys.modules, runner, types.SimpleNamespace())  # imported, not a task
    assert [o.pid for o in owner_records()] == [os.getpid()]
    monkeypatch.setitem(sys.modules, runner, types.SimpleNamespace(SUPERVISOR_COMMS=object()))
    assert [o.pid for o in owner_records()] == [os.getpid(), os.getppid()]


def test_cancel_stops_the_driver_of_a_run_whose_supervisor_was_killed(backend, tmp_path):
    cluster_id = fake_cluster(backend)
    run_id = f"{cluster_id}-run-0badc0de"
    run_dir = backend.run_dir(run_id)
    run_dir.mkdir(parents=True)
    supervisor = subprocess.Popen(["sleep", "300"], start_new_session=True, cwd=tmp_path)
    driver = subprocess.Popen(["bash", "-c", "sleep 300 & wait"], start_new_session=True, cwd=tmp_path)
    try:
        time.sleep(0.3)
        sup, drv = ProcessRecord.of(supervisor.pid), ProcessRecord.of(driver.pid)
        write_json_atomic(run_dir / "run.json", {"run_id": run_id, "supervisor": sup.to_dict()})
        status = {"run_id": run_id, "state": "RUNNING", "supervisor": sup.to_dict(), "driver": drv.to_dict()}
        write_json_atomic(run_dir / "status.json", status)
        supervisor.send_signal(signal.SIGKILL)
        supervisor.wait(5)
        failed = backend.get_run_status(run_id)
        assert failed.state == RunLifecycle.FAILED
        assert f"spark-submit pid {driver.pid} is still running" in failed.message
        assert len(procs.group_members(drv)) == 2  # bash and its sleep

        backend.cancel_run(run_id)  # FAILED already, but its driver runs: stopped by its record
        assert driver.wait(5) is not None
        assert not procs.group_members(drv)
        assert backend.get_run_status(run_id).state == RunLifecycle.FAILED
        backend.cancel_run(run_id)  # again: a no-op
    finally:
        for proc in (supervisor, driver):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# -- slow: real clusters, real kills -----------------------------------------------------------

# Creates a cluster through LocalSparkBackend like CreateGpuClusterOperator, in the two shapes an
# Airflow task has. "creator": this process is the task; the test kills it with -9 while create
# is still starting JVMs. "supervisor": this process is the Task SDK supervisor; it forks the task
# process into a group of its own, as Airflow does, and the test kills the supervisor with -9;
# the task process survives, tries to wait for the cluster and must be refused.
CREATOR = """
import json, os, sys, time
from pathlib import Path

home, out, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]


def create():
    from airflow_spark_triton.cluster_spec import GpuClusterSpec
    from airflow_spark_triton.backends.local.backend import LocalSparkBackend

    backend = LocalSparkBackend(spark_triton_conn_id=None, home=home)
    spec = GpuClusterSpec(num_workers=1, executor_cores=1, worker_memory="512m")
    return backend, backend.create_cluster(spec, {"dag_id": "killed"})


if mode == "creator":
    create()
    time.sleep(600)
    sys.exit(0)

pid = os.fork()
if pid:  # the "supervisor": waits for its task process, as Airflow's does
    os.waitpid(pid, 0)
    sys.exit(0)
os.setpgid(0, 0)
import airflow.sdk.execution_time.task_runner as task_runner

task_runner.SUPERVISOR_COMMS = object()  # what makes owner_records() see an Airflow task
supervisor = os.getppid()
backend, cluster_id = create()
out.write_text(json.dumps({"cluster_id": cluster_id, "task": os.getpid()}))
while os.getppid() == supervisor:
    time.sleep(0.1)
try:
    backend.wait_for_cluster(cluster_id, 120)
    outcome = "RUNNING"
except Exception as exc:
    outcome = f"{type(exc).__name__}: {exc}"
out.write_text(json.dumps({"cluster_id": cluster_id, "task": os.getpid(), "outcome": outcome}))
"""


def _cluster_ids(home: Path) -> list[str]:
    return [p.name for p in (home / "clusters").glob("local-*")] if (home / "clusters").exists() else []


def _wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {timeout_s:.0f}s")


def _assert_reaped(backend: LocalSparkBackend, cluster_id: str, killed: int, since: float) -> float:
    """Waits for the reaper; returns seconds from ``since`` to a DELETED record with nothing left."""

    def deleted():
        return (backend.get_cluster(cluster_id) or {}).get("state") == "DELETED"

    _wait_for(deleted, REAP_BOUND_S, f"cluster {cluster_id} DELETED by its reaper")
    cluster = backend.get_cluster(cluster_id)
    reaper = ProcessRecord.from_dict(cluster["reaper"])
    _wait_for(lambda: not procs.is_alive(reaper), REAP_BOUND_S - (time.monotonic() - since), "reaper exit")
    took = time.monotonic() - since
    assert cluster["deleted_by"] == f"reaper: owner pid {killed} gone while PENDING"
    assert ProcessRecord.from_dict(cluster["deleting_by"]).pid == reaper.pid
    assert_nothing_left(backend, cluster_id)
    assert "deleting" in Path(cluster["reaper"]["log"]).read_text()
    return took


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["creator", "supervisor"])
def test_a_cluster_whose_creating_task_is_killed_deletes_itself(backend, tmp_path, mode):
    out = tmp_path / "out.json"
    script = write_script(tmp_path, "creator.py", CREATOR)
    parent = subprocess.Popen(
        [sys.executable, str(script), str(backend.home), str(out), mode],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    task: psutil.Process | None = None
    cluster_id = None
    try:
        if mode == "creator":  # kill it mid-create: the master started, the worker not yet
            cluster_id = _wait_for(lambda: _cluster_ids(backend.home), 120, "a cluster record")[0]
            _wait_for(lambda: (backend.get_cluster(cluster_id) or {}).get("master"), 120, "a master")
            assert not backend.get_cluster(cluster_id)["workers"]
        else:  # kill the supervisor once its task process created the cluster (JVMs up, PENDING)
            _wait_for(out.exists, 180, "the task process creating a cluster")
            started = json.loads(out.read_text())
            cluster_id, task = started["cluster_id"], psutil.Process(started["task"])
            cluster = backend.get_cluster(cluster_id)
            assert [o["pid"] for o in cluster["owners"]] == [task.pid, parent.pid]
            assert len(cluster["workers"]) == 1
        assert backend.get_cluster(cluster_id)["state"] == "PENDING"
        parent.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        parent.wait(10)

        took = _assert_reaped(backend, cluster_id, parent.pid, killed_at)
        print(f"{mode}: reaped {took:.1f}s after the kill")
        assert backend.find_cluster({"dag_id": "killed"}) is None
        if task is not None:  # the surviving task process was refused the cluster, and exited
            _wait_for(lambda: "outcome" in json.loads(out.read_text()), 60, "the task process' outcome")
            outcome = json.loads(out.read_text())["outcome"]
            assert outcome.startswith("ClusterError"), outcome
            # Refused for the dead owner, or, when the reaper had already taken the cluster before
            # the task process asked for it (seen once in CI), for the cluster being deleted.
            refusals = (f"owner pid {parent.pid}", f"{cluster_id} is DELETING", f"{cluster_id} is DELETED")
            assert any(refusal in outcome for refusal in refusals), outcome
            psutil.wait_procs([task], timeout=30)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if task is not None and task.is_running():
            task.kill()
        if cluster_id:
            backend.delete_cluster(cluster_id)


@pytest.mark.slow
def test_an_idle_cluster_deletes_itself(backend, monkeypatch):
    idle_s = 4.0
    monkeypatch.setenv(IDLE_OVERRIDE_ENV, str(idle_s))  # the reaper inherits it (SPARK_TRITON_*)
    cluster_id = backend.create_cluster(SMALL, {"dag_id": "idle"})
    try:
        backend.wait_for_cluster(cluster_id, READY_TIMEOUT_S)
        running = backend.get_cluster(cluster_id)
        assert running["state"] == "RUNNING" and running["owners"] == []
        _wait_for(
            lambda: backend.get_cluster(cluster_id)["state"] == "DELETED", idle_s + REAP_BOUND_S, "idle reap"
        )
        cluster = backend.get_cluster(cluster_id)
        deleted_after = time.time() - running["running_epoch"]
        print(f"idle cluster deleted {deleted_after:.1f}s after RUNNING (idle limit {idle_s}s)")
        assert cluster["deleted_by"].startswith("reaper: idle for")
        assert f"limit {idle_s:.0f}s" in cluster["deleted_by"]
        reaper = ProcessRecord.from_dict(cluster["reaper"])
        _wait_for(lambda: not procs.is_alive(reaper), REAP_BOUND_S, "reaper exit")
        assert_nothing_left(backend, cluster_id)
    finally:
        backend.delete_cluster(cluster_id)


@pytest.mark.slow
def test_delete_stops_the_driver_of_a_run_whose_supervisor_was_killed(backend, tmp_path):
    cluster_id = backend.create_cluster(SMALL, {"dag_id": "orphan-driver"})
    try:
        backend.wait_for_cluster(cluster_id, READY_TIMEOUT_S)
        run_id = backend._submit_script(
            cluster_id, write_script(tmp_path, "sleep.py", SLEEPING_JOB), [], "t1"
        )
        wait_for_log_line(backend, run_id, "SLEEPING")
        status = json.loads((backend.run_dir(run_id) / "status.json").read_text())
        supervisor = ProcessRecord.from_dict(status["supervisor"])
        driver = ProcessRecord.from_dict(status["driver"])
        os.kill(supervisor.pid, signal.SIGKILL)
        _wait_for(lambda: not procs.is_alive(supervisor), 10, "the supervisor's death")
        failed = backend.get_run_status(run_id)
        assert failed.state == RunLifecycle.FAILED
        assert "still running" in failed.message
        assert procs.group_members(driver), "the killed supervisor left spark-submit running"
    finally:
        started = time.monotonic()
        backend.delete_cluster(cluster_id)
        print(f"deleted in {time.monotonic() - started:.1f}s")
    assert not procs.group_members(driver)
    assert backend.get_cluster(cluster_id)["state"] == "DELETED"
    assert_nothing_left(backend, cluster_id)
