"""Faults of one nightly run on the local backend, through Airflow for real (``dag.test()``), as one table.

Every row of :data:`FAULTS` runs the same way: seed the date with a complete earlier run, run the
nightly DAG, strike while the run is under way (a kill, a signal, a timeout) or let the job fail by
itself, record the fault's row in the fault table, then check the fault's designed outcome, that no
cluster, server or process is left, and that the date holds every row exactly once: the earlier
run's rows when the run failed, its own when it succeeded.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import signal
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from spark_jobs.processes import wait_until
from tests.faults import ledger
from tests.faults.nightly import (
    DAY,
    PREVIOUS,
    TEST_SPARK_CONF,
    Probe,
    Strike,
    Tables,
    assert_clean,
    input_rows,
    kill9,
    make_tables,
    measure,
    run_ids_of,
    run_nightly,
    seed_previous_run,
    start_nightly_process,
    table_version,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow]

# Long enough for the run to reach inference on a slow CI machine; the model's 8 s per batch keeps
# it there for minutes, so the timeout fires while the Triton servers serve.
EXECUTION_TIMEOUT_S = 50
DAG_PROCESS_TIMEOUT_S = 600


@dataclass
class FaultRun:
    """What a fault's checks look at once the DAG run has ended."""

    home: Path
    tables: Tables
    probe: Probe
    strike: Strike
    result: dict[str, Any]  # state, task_states, xcoms: the same whether in this process or its own
    versions: tuple[int | None, int | None]  # output and rejects before the run
    seen: dict[str, Any] = field(default_factory=dict)  # what a strike recorded while the run was on

    @property
    def states(self) -> dict[str, str]:
        return self.result["task_states"]

    @property
    def message(self) -> str:
        """The run's own error, as the task reports it."""
        return self.probe.run_status().get("message", "")

    def report(self) -> dict[str, Any]:
        (run_dir,) = self.probe.run_dirs()
        return json.loads((run_dir / "report.json").read_text())

    def server_stop_reasons(self) -> list[str]:
        return [
            line.split("stopping Triton: ", 1)[1]
            for line in self.probe.server_logs().splitlines()
            if "stopping Triton: " in line
        ]


@dataclass(frozen=True)
class DagFault:
    """One row of the fault table: how the run is made to fail and what must come of it.

    :param strike: the watcher that injects the fault once its condition holds (for a fault the job
        runs into by itself, the moment it shows); given the probe, the tables, what it records for
        the checks (``seen``) and the DAG's own process, if it has one.
    :param note: the table's outcome note and extra details; must not assert (the row is recorded
        first, so a failing fault still shows in the table).
    :param check: the fault's own assertions, besides the ones every fault gets.
    :param succeeds: the designed outcome is a successful run that replaced the date (else: the
        run failed and the date is as the earlier run left it).
    """

    name: str
    strike: Callable[[Probe, Tables, dict[str, Any], subprocess.Popen | None], Strike]
    note: Callable[[FaultRun], tuple[str, dict[str, Any]]]
    check: Callable[[FaultRun], None]
    model_options: Callable[[Tables], dict[str, Any]] = lambda _tables: {}
    params: Mapping[str, Any] = field(default_factory=dict)
    overrides: Mapping[str, Any] = field(default_factory=dict)
    own_process: bool = False  # the DAG in a process of its own, to signal it like a worker's task
    succeeds: bool = False


def outcome(result: Mapping[str, Any], note: str = "", width: int = 72) -> str:
    """``infer failed, teardown success: <the task's error>``, cut to fit the table."""
    states = result["task_states"]
    text = f"infer {states.get('embed_documents')}, teardown {states.get('delete_cluster')}"
    if note:
        text += ": " + " ".join(note.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def exit_code(message: str) -> str:
    match = re.search(r"exit(?:ed with)? code -?\d+", message)
    return match.group(0) if match else message


def when_log_shows(text: str) -> Callable[..., Strike]:
    """A fault the job runs into by itself: note when the driver log first shows ``text``."""
    # The last 4 MiB: a failing job's tracebacks and Spark's retries can push the line out of a short tail.
    return lambda probe, *_: Strike(lambda: text in probe.driver_log_tail(1 << 22), lambda: None)


def failed_with_teardown(run: FaultRun) -> None:
    assert run.result["state"] == "failed"
    assert run.states["embed_documents"] == "failed"
    assert run.states["delete_cluster"] == "success"


# -- the faults --------------------------------------------------------------------------------


def _check_job_exception(run: FaultRun) -> None:
    failed_with_teardown(run)
    assert "hashing_embedder asked to fail on text" in run.message, run.message
    report = run.report()
    assert report["status"] == "FAILED" and "asked to fail on text" in report["error"]
    assert report["servers"] and all(not s["running"] for s in report["servers_stopped"])


def _check_model_load_failure(run: FaultRun) -> None:
    failed_with_teardown(run)
    message = run.message
    assert "TritonStartError" in message and "on host" in message, message
    assert "exited before ready" in message, message
    assert "seconds_per_batch' must be >= 0" in message, message
    report = run.report()
    assert report["status"] == "FAILED" and not report["servers"]


def _check_driver_kill(run: FaultRun) -> None:
    failed_with_teardown(run)
    message = run.message
    # spark-submit passes on the Python driver's fate: 128 + SIGKILL.
    assert run.probe.run_status()["state"] == "FAILED", message
    assert "the driver was killed by SIGKILL before the job reported an error" in message, message
    assert "exit code 137" in message, message
    assert not (run.probe.run_dirs()[0] / "report.json").exists(), "a killed driver cannot have reported"


def _kill_the_executor_the_server_watches(probe: Probe) -> dict[str, Any]:
    watched = probe.server_watch_pids()
    (executor,) = [e for e in probe.executors() if e.pid in watched]
    return kill9(executor)


def _check_executor_kill(run: FaultRun) -> None:
    assert run.result["state"] == "success", run.states
    report = run.result["xcoms"]["embed_documents"]
    assert (report["rows_read"], report["rows_scored"], report["rows_rejected"]) == (60, 57, 3)
    assert "Lost executor" in run.probe.driver_log_tail(1 << 22), "Spark never noticed the killed executor"
    # The server watched the killed executor and stopped itself; the surviving executor (or the
    # replacement) started a new one, and the run's end stopped that one.
    reasons = run.server_stop_reasons()
    assert any("is gone" in reason for reason in reasons), reasons
    assert run.probe.server_logs().count("Triton ready for") >= 2


def _check_sigterm(run: FaultRun) -> None:
    failed_with_teardown(run)
    # on_kill canceled the run: the supervisor got SIGTERM, passed it on, and recorded the cancel.
    status = run.probe.run_status()
    assert status["state"] == "CANCELED", status
    report = run.report()
    assert report["status"] == "CANCELED" and "canceled" in report["error"], report
    assert report["servers"] and all(not s["running"] for s in report["servers_stopped"])


def _timeout_fired(probe: Probe, _tables: Tables, seen: dict[str, Any], _proc: Any) -> Strike:
    """The cancel starts with SIGTERM to the run's supervisor: that is when the timeout took effect."""
    return Strike(
        lambda: "received signal" in probe.supervisor_log() or probe.run_status().get("state") == "CANCELED",
        lambda: seen.setdefault("servers_up_at_timeout", bool(probe.server_records())),
    )


def _check_execution_timeout(run: FaultRun) -> None:
    failed_with_teardown(run)
    status = run.probe.run_status()
    assert status["state"] == "CANCELED", status


def _kill_mid_write(probe: Probe, tables: Tables, seen: dict[str, Any], _proc: Any) -> Strike:
    """kill -9 of the whole driver (spark-submit's JVM and the Python job) once a task committed its
    output file, so nothing can abort the write; then, before Airflow's retry scores the date
    again, what readers see: the killed try's files stay on disk, uncommitted."""

    def a_task_committed_its_file() -> bool:
        return any("/_temporary/0/_temporary/" not in str(p) for p in probe.staged_output_files(tables, DAY))

    def kill_and_look() -> list[dict[str, Any]]:
        killed_run = probe.run_dirs()[-1]
        killed = probe.kill_whole_driver()
        # The supervisor records the try's end; the task then fails, and its retry waits 5 s.
        if not wait_until(lambda: probe.status_of(killed_run).get("state") == "FAILED", 120):
            raise TimeoutError(f"the killed try {killed_run.name} never ended FAILED")
        seen["orphans"] = probe.staged_output_files(tables, DAY)
        seen["after_failure"] = (table_version(tables.output), table_version(tables.rejects))
        seen["run_ids_after_failure"] = run_ids_of(tables, DAY)
        seen["lost_dup_after_failure"] = ledger.rows_lost_and_duplicated(
            tables.input, tables.output, tables.rejects, [DAY]
        )
        return killed

    return Strike(a_task_committed_its_file, kill_and_look)


def _check_mid_write_retry(run: FaultRun) -> None:
    assert run.result["state"] == "success", run.states
    tries = [run.probe.status_of(d) for d in run.probe.run_dirs()]
    first_try, retry = sorted(tries, key=lambda status: status["started_at"])
    assert first_try["state"] == "FAILED", first_try
    assert run.seen["orphans"], (
        "the killed write left no files: nothing tested that uncommitted files stay unread"
    )
    assert run.seen["after_failure"] == run.versions, "the killed try committed"
    assert run.seen["run_ids_after_failure"] == {PREVIOUS}
    assert run.seen["lost_dup_after_failure"] == (0, 0)
    report = run.result["xcoms"]["embed_documents"]
    assert retry["state"] == "SUCCESS" and report["run_id"] != first_try.get("run_id"), (first_try, retry)
    assert report["output_version"] > run.versions[0] and report["rejects_version"] > run.versions[1]
    assert (report["rows_read"], report["rows_scored"], report["rows_rejected"]) == (60, 57, 3)


FAULTS = {
    "job_exception": DagFault(
        name="job exception",
        model_options=lambda tables: {"fail_on_text": input_rows(tables, DAY)["text"].dropna().iloc[-1]},
        strike=when_log_shows("aborting job"),
        note=lambda run: (run.message, {}),
        check=_check_job_exception,
    ),
    "model_load_failure": DagFault(
        name="model load failure",
        # The model resolves on the driver, but its loader rejects the option inside the server.
        model_options=lambda _: {"seconds_per_batch": -1},
        strike=when_log_shows("TritonStartError"),
        note=lambda run: (run.message, {}),
        check=_check_model_load_failure,
    ),
    "driver_kill": DagFault(
        name="driver kill -9",
        model_options=lambda _: {"seconds_per_batch": 2},
        strike=lambda probe, *_: Strike(probe.serving, lambda: kill9(probe.python_driver())),
        note=lambda run: (
            "run FAILED, " + exit_code(run.message),
            {"server_stopped_by": run.server_stop_reasons(), "message": run.message},
        ),
        check=_check_driver_kill,
    ),
    "executor_kill": DagFault(
        name="Spark executor kill -9",
        params={"num_workers": 2},
        model_options=lambda _: {"seconds_per_batch": 0.5},
        strike=lambda probe, *_: Strike(
            lambda: probe.serving() and len(probe.executors()) == 2,
            lambda: _kill_the_executor_the_server_watches(probe),
        ),
        note=lambda run: (
            "task retry + server restart",
            {"executor": run.strike.result, "server_stops": run.server_stop_reasons()},
        ),
        check=_check_executor_kill,
        succeeds=True,
    ),
    "task_sigterm": DagFault(
        name="Airflow task SIGTERM (on_kill)",
        model_options=lambda _: {"seconds_per_batch": 2},
        strike=lambda probe, _tables, _seen, worker: Strike(
            probe.serving, lambda: worker.send_signal(signal.SIGTERM)
        ),
        note=lambda run: (
            f"run {run.probe.run_status().get('state')}",
            {"run_status": run.probe.run_status()},
        ),
        check=_check_sigterm,
        own_process=True,
    ),
    "execution_timeout": DagFault(
        name="Airflow execution_timeout",
        overrides={"execution_timeout": dt.timedelta(seconds=EXECUTION_TIMEOUT_S)},
        model_options=lambda _: {"seconds_per_batch": 8},
        strike=_timeout_fired,
        note=lambda run: (
            f"AirflowTaskTimeout, run {run.probe.run_status().get('state')}",
            {"servers_up_at_timeout": run.seen.get("servers_up_at_timeout")},
        ),
        check=_check_execution_timeout,
    ),
    "mid_write_kill_then_retry": DagFault(
        name="mid-write driver kill, then Airflow retry",
        # The first try's driver dies mid-write; Airflow's retry scores the date on the same cluster.
        overrides={"retries": 1, "retry_delay": dt.timedelta(seconds=5)},
        # Four write tasks, not one: AQE would coalesce 57 tiny rows into a single partition, whose
        # file then lands just before the commit, and a fast driver committed before the kill (CI).
        params={"spark_conf": {**TEST_SPARK_CONF, "spark.sql.adaptive.coalescePartitions.enabled": "false"}},
        # 1 s per batch of 4 rows: the other partitions are still scoring when the first file lands.
        model_options=lambda _: {"seconds_per_batch": 1},
        strike=_kill_mid_write,
        note=lambda run: (
            "try 1 killed mid-write, try 2 scored the date",
            {"orphaned_files": len(run.seen.get("orphans", []))},
        ),
        check=_check_mid_write_retry,
        succeeds=True,
    ),
}


def run_in_own_process(
    fault: DagFault, home: Path, tables: Tables, probe: Probe, seen: dict[str, Any]
) -> tuple[Strike, dict[str, Any]]:
    worker, result_path = start_nightly_process(
        home, tables, model_options=fault.model_options(tables), **fault.params
    )
    strike = fault.strike(probe, tables, seen, worker)
    strike.start()
    try:
        worker.wait(timeout=DAG_PROCESS_TIMEOUT_S)
    finally:
        strike.finish()
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, (home / "dag_process.log").read_text()[-3000:]
    result = json.loads(result_path.read_text()) if result_path.exists() else {"task_states": {}}
    return strike, result


def run_in_this_process(
    fault: DagFault, tables: Tables, probe: Probe, seen: dict[str, Any]
) -> tuple[Strike, dict[str, Any]]:
    strike = fault.strike(probe, tables, seen, None)
    strike.start()
    try:
        result = run_nightly(
            tables, overrides=dict(fault.overrides), model_options=fault.model_options(tables), **fault.params
        )
    finally:
        strike.finish()
    return strike, {"state": result.state, "task_states": result.task_states, "xcoms": result.xcoms}


@pytest.mark.parametrize("fault", list(FAULTS.values()), ids=list(FAULTS))
def test_nightly_run_fault(fault: DagFault, request, airflow_db, fault_home, timeline) -> None:
    tables = make_tables(fault_home, [DAY])
    seed_previous_run(tables, [DAY])
    versions = (table_version(tables.output), table_version(tables.rejects))
    probe = Probe(fault_home)
    seen: dict[str, Any] = {}
    if fault.own_process:
        assert not fault.overrides, "the DAG's own process takes no task overrides but the polling"
        strike, result = run_in_own_process(fault, fault_home, tables, probe, seen)
    else:
        strike, result = run_in_this_process(fault, tables, probe, seen)

    run = FaultRun(fault_home, tables, probe, strike, result, versions, seen)
    note, details = fault.note(run)
    row = measure(
        request,
        fault.name,
        outcome(result, note),
        fault_home,
        tables,
        [DAY],
        strike.fired_at,
        timeline,
        **details,
    )
    strike.check(result, run.message)
    fault.check(run)
    if fault.succeeds:
        assert run_ids_of(tables, DAY) == {result["xcoms"]["embed_documents"]["run_id"]}
    else:
        assert (table_version(tables.output), table_version(tables.rejects)) == versions, (
            "a failed run committed"
        )
        assert run_ids_of(tables, DAY) == {PREVIOUS}
    assert_clean(row)


# The backfill and rerun faults (3 dates run twice, reruns of one date) run on a real Airflow:
# tests/deployed/test_nightly_deployed.py backfills 3 dates in parallel, reprocesses them and clears
# one, through the scheduler, as users do.
