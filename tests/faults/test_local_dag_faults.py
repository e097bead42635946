"""Faults of one nightly run on the local backend, through Airflow for real (``dag.test()``).

Each test seeds the date with a complete earlier run, runs the nightly DAG, strikes while the run is
under way (a kill, a signal, a timeout) or lets the job fail by itself, and checks the designed task
outcome, then that no cluster, server or process is left and the date has every row exactly once.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import signal

import pytest

from tests.faults import ledger
from tests.faults.nightly import (
    DAY,
    PREVIOUS,
    Probe,
    Strike,
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


def run_report(probe: Probe) -> dict:
    (run_dir,) = probe.run_dirs()
    return json.loads((run_dir / "report.json").read_text())


def outcome(result, note: str = "", width: int = 72) -> str:
    """``infer failed, teardown success: <the task's error>``, cut to fit the table."""
    states = result.task_states if hasattr(result, "task_states") else result["task_states"]
    text = f"infer {states.get('embed_documents')}, teardown {states.get('delete_cluster')}"
    if note:
        text += ": " + " ".join(note.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def test_job_exception_fails_the_task_and_leaves_the_date_as_it_was(
    request, airflow_db, fault_home, timeline
):
    tables = make_tables(fault_home, [DAY])
    seed_previous_run(tables, [DAY])
    versions = (table_version(tables.output), table_version(tables.rejects))
    poison = input_rows(tables, DAY)["text"].dropna().iloc[-1]
    probe = Probe(fault_home)
    aborted = Strike(lambda: "aborting job" in probe.driver_log_tail(), lambda: None)
    aborted.start()

    result = run_nightly(tables, model_options={"fail_on_text": poison})

    aborted.finish()
    message = probe.run_status().get("message", "")
    row = measure(
        request, "job exception", outcome(result, message),
        fault_home, tables, [DAY], aborted.fired_at, timeline,
    )  # fmt: skip
    assert result.state == "failed"
    assert result.task_states["embed_documents"] == "failed"
    assert result.task_states["delete_cluster"] == "success"
    assert "hashing_embedder asked to fail on text" in message, message
    report = run_report(probe)
    assert report["status"] == "FAILED" and "asked to fail on text" in report["error"]
    assert report["servers"] and all(not s["running"] for s in report["servers_stopped"])
    assert (table_version(tables.output), table_version(tables.rejects)) == versions, "a failed run committed"
    assert run_ids_of(tables, DAY) == {PREVIOUS}
    assert_clean(row)


def test_model_load_failure_fails_the_task_naming_the_host_and_the_cause(
    request, airflow_db, fault_home, timeline
):
    tables = make_tables(fault_home, [DAY])
    seed_previous_run(tables, [DAY])
    versions = (table_version(tables.output), table_version(tables.rejects))
    probe = Probe(fault_home)
    seen = Strike(lambda: "TritonStartError" in probe.driver_log_tail(), lambda: None)
    seen.start()

    # The model resolves on the driver, but its loader rejects the option inside the server.
    result = run_nightly(tables, model_options={"seconds_per_batch": -1})

    seen.finish()
    message = probe.run_status().get("message", "")
    row = measure(
        request,
        "model load failure",
        outcome(result, message),
        fault_home,
        tables,
        [DAY],
        seen.fired_at,
        timeline,
    )
    assert result.state == "failed"
    assert result.task_states["embed_documents"] == "failed"
    assert result.task_states["delete_cluster"] == "success"
    assert "TritonStartError" in message and "on host" in message and "exited before ready" in message, (
        message
    )
    assert "seconds_per_batch' must be >= 0" in message, message
    report = run_report(probe)
    assert report["status"] == "FAILED" and not report["servers"]
    assert (table_version(tables.output), table_version(tables.rejects)) == versions
    assert run_ids_of(tables, DAY) == {PREVIOUS}
    assert_clean(row)


def exit_code(message: str) -> str:
    match = re.search(r"exit(?:ed with)? code -?\d+", message)
    return match.group(0) if match else message


def server_stop_reasons(probe: Probe) -> list[str]:
    return [
        line.split("stopping Triton: ", 1)[1]
        for line in probe.server_logs().splitlines()
        if "stopping Triton: " in line
    ]


def test_driver_kill_fails_the_task_clearly_and_nothing_is_left(request, airflow_db, fault_home, timeline):
    tables = make_tables(fault_home, [DAY])
    seed_previous_run(tables, [DAY])
    versions = (table_version(tables.output), table_version(tables.rejects))
    probe = Probe(fault_home)
    strike = Strike(probe.serving, lambda: kill9(probe.python_driver()))
    strike.start()

    result = run_nightly(tables, model_options={"seconds_per_batch": 2})

    strike.finish()
    message = probe.run_status().get("message", "")
    reasons = server_stop_reasons(probe)
    row = measure(
        request, "driver kill -9", outcome(result, "run FAILED, " + exit_code(message)), fault_home,
        tables, [DAY], strike.fired_at, timeline, server_stopped_by=reasons, message=message,
    )  # fmt: skip
    strike.check(result, message)
    assert result.state == "failed"
    assert result.task_states["embed_documents"] == "failed"
    assert result.task_states["delete_cluster"] == "success"
    # spark-submit passes on the Python driver's fate: 128 + SIGKILL.
    assert probe.run_status()["state"] == "FAILED", message
    assert "the driver was killed by SIGKILL before the job reported an error" in message, message
    assert "exit code 137" in message, message
    assert not (probe.run_dirs()[0] / "report.json").exists(), "a killed driver cannot have reported"
    assert (table_version(tables.output), table_version(tables.rejects)) == versions
    assert run_ids_of(tables, DAY) == {PREVIOUS}
    assert_clean(row)


def test_executor_kill_is_survived_by_spark_task_retry_and_a_restarted_server(
    request, airflow_db, fault_home, timeline
):
    tables = make_tables(fault_home, [DAY])
    seed_previous_run(tables, [DAY])
    probe = Probe(fault_home)

    def kill_the_executor_the_server_watches() -> dict:
        watched = probe.server_watch_pids()
        (executor,) = [e for e in probe.executors() if e.pid in watched]
        return kill9(executor)

    strike = Strike(
        lambda: probe.serving() and len(probe.executors()) == 2, kill_the_executor_the_server_watches
    )
    strike.start()

    result = run_nightly(tables, num_workers=2, model_options={"seconds_per_batch": 0.5})

    strike.finish()
    log = probe.driver_log_tail(1 << 22)
    reasons = server_stop_reasons(probe)
    row = measure(
        request, "Spark executor kill -9", outcome(result, "task retry + server restart"), fault_home,
        tables, [DAY], strike.fired_at, timeline, executor=strike.result, server_stops=reasons,
    )  # fmt: skip
    strike.check(result)
    assert result.state == "success", result.task_states
    report = result.xcoms["embed_documents"]
    assert (report["rows_read"], report["rows_scored"], report["rows_rejected"]) == (60, 57, 3)
    assert run_ids_of(tables, DAY) == {report["run_id"]}
    assert "Lost executor" in log, "Spark never noticed the killed executor"
    # The server watched the killed executor and stopped itself; the surviving executor (or the
    # replacement) started a new one, and the run's end stopped that one.
    assert any("is gone" in reason for reason in reasons), reasons
    assert probe.server_logs().count("Triton ready for") >= 2
    assert_clean(row)


def test_sigterm_to_the_task_runs_on_kill_which_cancels_the_run(request, airflow_db, fault_home, timeline):
    tables = make_tables(fault_home, [DAY])
    seed_previous_run(tables, [DAY])
    versions = (table_version(tables.output), table_version(tables.rejects))
    probe = Probe(fault_home)
    worker, result_path = start_nightly_process(fault_home, tables, model_options={"seconds_per_batch": 2})
    strike = Strike(probe.serving, lambda: worker.send_signal(signal.SIGTERM))
    strike.start()
    try:
        worker.wait(timeout=600)
    finally:
        strike.finish()
        if worker.poll() is None:
            worker.kill()
            worker.wait()

    result = json.loads(result_path.read_text()) if result_path.exists() else {"task_states": {}}
    status = probe.run_status()
    row = measure(
        request, "Airflow task SIGTERM (on_kill)", outcome(result, f"run {status.get('state')}"),
        fault_home, tables, [DAY], strike.fired_at, timeline, run_status=status,
    )  # fmt: skip
    strike.check(result, str(status))
    assert worker.returncode == 0, (fault_home / "dag_process.log").read_text()[-3000:]
    assert result["state"] == "failed"
    assert result["task_states"]["embed_documents"] == "failed"
    assert result["task_states"]["delete_cluster"] == "success"
    # on_kill canceled the run: the supervisor got SIGTERM, passed it on, and recorded the cancel.
    assert status["state"] == "CANCELED", status
    report = run_report(probe)
    assert report["status"] == "CANCELED" and "canceled" in report["error"], report
    assert report["servers"] and all(not s["running"] for s in report["servers_stopped"])
    assert (table_version(tables.output), table_version(tables.rejects)) == versions
    assert run_ids_of(tables, DAY) == {PREVIOUS}
    assert_clean(row)


def test_execution_timeout_cancels_the_run_and_cleans_up(request, airflow_db, fault_home, timeline):
    tables = make_tables(fault_home, [DAY])
    seed_previous_run(tables, [DAY])
    versions = (table_version(tables.output), table_version(tables.rejects))
    probe = Probe(fault_home)
    serving_when_it_fired: list[bool] = []
    # The cancel starts with SIGTERM to the run's supervisor: that is when the timeout took effect.
    fired = Strike(
        lambda: "received signal" in probe.supervisor_log() or probe.run_status().get("state") == "CANCELED",
        lambda: serving_when_it_fired.append(bool(probe.server_records())),
    )
    fired.start()

    result = run_nightly(
        tables,
        overrides={"execution_timeout": dt.timedelta(seconds=EXECUTION_TIMEOUT_S)},
        model_options={"seconds_per_batch": 8},
    )

    fired.finish()
    status = probe.run_status()
    row = measure(
        request, "Airflow execution_timeout", outcome(result, f"AirflowTaskTimeout, run {status.get('state')}"),
        fault_home, tables, [DAY], fired.fired_at, timeline, servers_up_at_timeout=serving_when_it_fired,
    )  # fmt: skip
    fired.check(result)
    assert result.state == "failed"
    assert result.task_states["embed_documents"] == "failed"
    assert result.task_states["delete_cluster"] == "success"
    assert status["state"] == "CANCELED", status
    assert (table_version(tables.output), table_version(tables.rejects)) == versions
    assert run_ids_of(tables, DAY) == {PREVIOUS}
    assert_clean(row)


def test_mid_write_failure_then_rerun_writes_the_date_exactly_once(request, airflow_db, fault_home, timeline):
    """The whole driver (spark-submit's JVM and the Python job) dies with -9 while the output's files
    are being written, so nothing can abort the write: the files tasks already committed stay on
    disk, uncommitted. Readers keep seeing the previous run's rows, never those files; the rerun
    replaces the date with exactly its rows."""
    tables = make_tables(fault_home, [DAY])
    seed_previous_run(tables, [DAY])
    versions = (table_version(tables.output), table_version(tables.rejects))
    probe = Probe(fault_home)

    def a_task_committed_its_file() -> bool:
        return any("/_temporary/0/_temporary/" not in str(p) for p in probe.staged_output_files(tables, DAY))

    strike = Strike(a_task_committed_its_file, probe.kill_whole_driver)
    strike.start()
    failed = run_nightly(tables, model_options={"seconds_per_batch": 2})
    strike.finish()
    ledger.wait_until_no_process(fault_home)
    orphans = probe.staged_output_files(tables, DAY)
    after_failure = (table_version(tables.output), table_version(tables.rejects)), run_ids_of(tables, DAY)
    lost_dup_after_failure = ledger.rows_lost_and_duplicated(
        tables.input, tables.output, tables.rejects, [DAY]
    )

    rerun = run_nightly(tables)

    report = rerun.xcoms.get("embed_documents") or {}
    row = measure(
        request, "mid-write failure, then rerun", outcome(rerun, f"first run {failed.task_states.get('embed_documents')}"),
        fault_home, tables, [DAY], strike.fired_at, timeline, orphaned_files=len(orphans),
    )  # fmt: skip
    strike.check(failed)
    assert failed.task_states["embed_documents"] == "failed"
    assert failed.task_states["delete_cluster"] == "success"
    assert orphans, "the killed write left no files: nothing tested that uncommitted files stay unread"
    assert after_failure == (versions, {PREVIOUS}), "the killed run committed"
    assert lost_dup_after_failure == (0, 0)
    assert rerun.state == "success", rerun.task_states
    assert report["output_version"] > versions[0] and report["rejects_version"] > versions[1]
    assert (report["rows_read"], report["rows_scored"], report["rows_rejected"]) == (60, 57, 3)
    assert run_ids_of(tables, DAY) == {report["run_id"]}
    assert_clean(row)


# The backfill and rerun faults (3 dates run twice, reruns of one date) run on a real Airflow now:
# tests/deployed/test_nightly_deployed.py backfills 3 dates in parallel, reprocesses them and clears
# one, through the scheduler, as users do.
