"""The detached run supervisor: the job's own error from a driver log, and the run's guarded status record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airflow_spark_triton.runs.processes import ProcessRecord
from airflow_spark_triton.runs.records import TransitionRefused
from airflow_spark_triton.runs.states import RunLifecycle
from airflow_spark_triton.runs.supervisor import (
    COMMAND_FILE,
    DRIVER_LOG,
    driver_error_message,
    status_record,
)
from spark_jobs.json_files import write_json_atomic


def test_error_message_prefers_the_jobs_marked_line():
    log = "\n".join(
        [
            "26/11/25 10:00:00 INFO SparkContext: Running Spark",
            "Traceback (most recent call last):",
            '  File "job.py", line 3, in <module>',
            "ValueError: inner",
            "SPARK_TRITON_ERROR: JobConfigError: job setting 'model' is required",
            "26/11/25 10:00:01 INFO ShutdownHookManager: Shutdown hook called",
        ]
    )
    message = driver_error_message(log, 1)
    assert message.startswith("JobConfigError: job setting 'model' is required")
    assert "exit code 1" in message


def test_error_message_falls_back_to_the_final_exception_of_the_last_traceback():
    log = "\n".join(
        [
            "Traceback (most recent call last):",
            '  File "a.py", line 1, in <module>',
            "KeyError: 'first'",
            "",
            "During handling of the above exception, another exception occurred:",
            "",
            "Traceback (most recent call last):",
            '  File "job.py", line 9, in <module>',
            "    run()",
            "pyspark.errors.exceptions.captured.AnalysisException: [TABLE_OR_VIEW_NOT_FOUND] table x",
            "cannot be found. SQLSTATE: 42P01",
            "26/11/25 10:00:01 INFO SparkContext: Invoking stop() from shutdown hook",
        ]
    )
    message = driver_error_message(log, 1)
    assert message.splitlines()[0] == (
        "pyspark.errors.exceptions.captured.AnalysisException: [TABLE_OR_VIEW_NOT_FOUND] table x"
    )
    assert "SQLSTATE: 42P01" in message
    assert "KeyError" not in message and "INFO" not in message


def test_error_message_without_traceback_uses_error_lines():
    log = "26/11/25 10:00:00 INFO A: fine\n26/11/25 10:00:01 ERROR SparkContext: master unreachable\n"
    assert "master unreachable" in driver_error_message(log, 1)
    assert "no driver output" in driver_error_message("", 1)


def test_a_killed_driver_is_named_as_killed_not_by_its_last_log_line():
    log = "26/11/25 10:00:01 ERROR FileFormatWriter: Aborting job 3f2.\n"
    assert driver_error_message(log, 137) == (
        "the driver was killed by SIGKILL before the job reported an error (spark-submit exit code 137)"
    )
    assert "killed by SIGSEGV" in driver_error_message(log, -11)
    assert "Aborting job" in driver_error_message(log, 143), "a cancel (SIGTERM) says why on its own"


# -- status.json: guarded, whoever writes ---------------------------------------------------------


def test_a_finished_run_never_changes_state(tmp_path):
    record = status_record(tmp_path)
    record.update(run_id="r", state=RunLifecycle.PENDING.value)
    assert record.transition(RunLifecycle.RUNNING, allowed_from=(RunLifecycle.PENDING,)) is not None
    assert record.transition(RunLifecycle.CANCELED, message="canceled") is not None
    for late in (RunLifecycle.RUNNING, RunLifecycle.FAILED, RunLifecycle.SUCCESS, RunLifecycle.PENDING):
        assert record.transition(late) is None, late
        with pytest.raises(TransitionRefused):
            record.update(state=late.value)
    assert record.read()["state"] == "CANCELED" and record.read()["message"] == "canceled"


def run_supervisor(run_dir: Path, argv: list[str], state: str) -> dict:
    write_json_atomic(
        run_dir / COMMAND_FILE, {"run_id": "r", "argv": argv, "env": dict(os.environ), "script": ""}
    )
    record = status_record(run_dir)
    record.update(run_id="r", state=RunLifecycle.PENDING.value)
    if state != RunLifecycle.PENDING:
        assert record.transition(RunLifecycle(state), message="given up on") is not None
    done = subprocess.run(
        [sys.executable, "-m", "airflow_spark_triton.runs.supervisor", "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads((run_dir / "status.json").read_text())


def test_the_supervisor_records_the_commands_outcome_and_error_line(tmp_path):
    ok = run_supervisor(tmp_path / "ok", [sys.executable, "-c", "print('hi')"], "PENDING")
    assert ok["state"] == "SUCCESS" and ok["returncode"] == 0
    assert ProcessRecord.from_dict(ok["supervisor"]).pid != os.getpid()
    failing = "import sys; print('SPARK_TRITON_ERROR: ValueError: bad row', file=sys.stderr); sys.exit(3)"
    failed = run_supervisor(tmp_path / "failed", [sys.executable, "-c", failing], "PENDING")
    assert failed["state"] == "FAILED"
    assert failed["message"] == "ValueError: bad row (spark-submit exit code 3)"
    assert "bad row" in (tmp_path / "failed" / DRIVER_LOG).read_text()


def test_a_supervisor_that_starts_after_its_run_was_settled_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    status = run_supervisor(tmp_path / "run", [sys.executable, "-c", f"open({str(marker)!r}, 'w')"], "FAILED")
    time.sleep(0.2)
    assert status["state"] == "FAILED" and "driver" not in status
    assert not marker.exists(), "a run given up on (e.g. 'supervisor never started') must not start late"
