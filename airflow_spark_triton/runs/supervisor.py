"""Supervisor of one run: starts its command (spark-submit), records its fate in ``status.json``, cancels it.

The Airflow task that submits a run may exit long before the run ends (deferral, retries, a
killed worker), so something else has to outlive it, wait for spark-submit's exit code and
turn it into SUCCESS / FAILED / CANCELED. That is this process, started detached by
:class:`~airflow_spark_triton.runs.supervised.SupervisedRuns` for the local and spark-submit backends.

Usage: ``python -m airflow_spark_triton.runs.supervisor --run-dir DIR`` where
``DIR/command.json`` holds ``argv``, ``env``, ``script`` and ``secret_env``: the names of variables
whose values the command gets from this process's own environment (secrets are never written to
``command.json``). Imports neither Airflow nor Spark.

``status.json`` is a guarded record (:data:`RUN_TRANSITIONS`): PENDING -> RUNNING -> SUCCESS | FAILED |
CANCELED, and a finished run never changes state again, whoever writes last.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from airflow_spark_triton.runs.processes import (
    ProcessRecord,
    group_members,
    iter_descendants,
    read_tail,
    start_detached,
    stop_groups,
    wait_child,
)
from airflow_spark_triton.runs.records import JsonRecord, now_iso
from airflow_spark_triton.runs.states import RUN_TRANSITIONS, UNFINISHED_STATES, RunLifecycle
from spark_jobs.contract import ERROR_PREFIX, EXCEPTION_LINE
from spark_jobs.json_files import read_json

log = logging.getLogger("airflow_spark_triton.runs.supervisor")

COMMAND_FILE = "command.json"
STATUS_FILE = "status.json"
STATUS_LOCK = ".status.lock"
DRIVER_LOG = "driver.log"
SECRET_ENV_KEY = "secret_env"  # command.json: names of variables taken from the supervisor's environment


def status_record(run_dir: Path) -> JsonRecord:
    """The run's ``status.json``: written by its supervisor, and by a cancel once the supervisor is gone."""
    return JsonRecord(run_dir / STATUS_FILE, run_dir / STATUS_LOCK, RUN_TRANSITIONS)


def run_state(status: dict[str, Any]) -> RunLifecycle:
    return RunLifecycle(status.get("state") or RunLifecycle.PENDING)


# Cancel escalation, in seconds after SIGTERM reached the supervisor. The Python driver gets
# SIGTERM first and alone, so its ``finally`` can still use Spark to stop the Triton servers;
# only then does the JVM (whose shutdown hook stops the SparkContext) get it, then SIGKILL.
DRIVER_GRACE_S = 20.0
KILL_AFTER_S = 30.0

_SPARK_LOG_LINE = re.compile(r"^\d{2}/\d{2}/\d{2} \d{2}:\d{2}:\d{2} [A-Z]+ ")
MAX_MESSAGE_CHARS = 2000


def driver_error_message(log_text: str, returncode: int | None) -> str:
    """The job's own error, not the JVM's noise: what an operator shows when a run fails.

    Preference: the last ``SPARK_TRITON_ERROR:`` line the job printed; else the final exception
    line(s) of the last Python traceback; else the last ERROR lines; always with the exit code.
    """
    lines = log_text.splitlines()
    suffix = f" (spark-submit exit code {returncode})" if returncode is not None else ""
    marked = [line for line in lines if line.startswith(ERROR_PREFIX)]
    if marked:
        return _clip(marked[-1][len(ERROR_PREFIX) :].strip() + suffix)
    killed = _killed_by(returncode)
    if killed:  # whatever the log says last is a symptom of the kill, not the cause
        return _clip(f"the driver was killed by {killed} before the job reported an error{suffix}")
    exception = _final_exception(lines)
    if exception:
        return _clip(exception + suffix)
    errors = [line for line in lines if " ERROR " in line or line.startswith("Error")]
    if errors:
        return _clip("\n".join(errors[-3:]) + suffix)
    tail = [line for line in lines if line.strip()][-5:]
    return _clip(("\n".join(tail) if tail else "no driver output") + suffix)


def _killed_by(returncode: int | None) -> str | None:
    """The signal that ended spark-submit: a negative Popen code, or 128+N from the shell wrapper.
    SIGTERM is left out: it is how a cancel or a deadline ends a run, and those say so themselves."""
    if returncode is None:
        return None
    number = -returncode if returncode < 0 else returncode - 128 if 128 < returncode < 160 else 0
    if number in (0, signal.SIGTERM):
        return None
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _final_exception(lines: list[str]) -> str | None:
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last):")]
    if not starts:
        return None
    collected: list[str] = []
    for line in lines[starts[-1] + 1 :]:
        if not collected:
            if line.startswith((" ", "\t")) or not line.strip():
                continue  # frames and source lines of the traceback
            if not EXCEPTION_LINE.match(line) and ":" not in line:
                continue
            collected.append(line)
        elif _SPARK_LOG_LINE.match(line) or not line.strip() or line.startswith("During handling"):
            break
        else:
            collected.append(line)  # a multi-line exception message
        if len(collected) >= 8:
            break
    return "\n".join(collected) if collected else None


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


def _killpg(pgid: int, sig: signal.Signals) -> None:
    """Signal spark-submit's group. Safe by construction: spark-submit is our unreaped child, so
    its pid (the group id) cannot have been reused while we are still waiting for it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class Supervisor:
    """Runs the command once and writes every state change to ``status.json`` (guarded, under its lock)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        command = read_json(run_dir / COMMAND_FILE)
        if command is None:
            raise SystemExit(f"no readable {run_dir / COMMAND_FILE}")
        self.command: dict[str, Any] = command
        self.record = status_record(run_dir)
        self.cancel_requested_at: float | None = None
        self.driver: ProcessRecord | None = None

    def _on_sigterm(self, signum: int, _frame: Any) -> None:
        # Only note it: the main loop signals the driver, so no signal work happens re-entrantly.
        if self.cancel_requested_at is None:
            self.cancel_requested_at = time.monotonic()
            log.info("received signal %s: canceling the run", signum)

    def _settle(self, state: RunLifecycle, message: str, **changes: Any) -> None:
        """Record the outcome, unless the run already has one (a finished run never changes)."""
        written = self.record.transition(
            state, allowed_from=UNFINISHED_STATES, message=message, finished_at=now_iso(), **changes
        )
        if written is None:
            log.warning(
                "not recording %s: the run is already %s", state, (self.record.read() or {}).get("state")
            )

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGINT, self._on_sigterm)
        me = ProcessRecord.of(os.getpid())
        started = self.record.transition(
            RunLifecycle.RUNNING,
            allowed_from=(RunLifecycle.PENDING,),
            supervisor=me.to_dict(),
            started_at=now_iso(),
            message="",
        )
        if started is None:  # e.g. canceled, or given up on, before this process came up
            log.warning("the run is %s already: not starting it", (self.record.read() or {}).get("state"))
            return 0
        try:
            if self.cancel_requested_at is not None:
                self._settle(RunLifecycle.CANCELED, "canceled before spark-submit started")
                return 0
            secret = {n: os.environ[n] for n in self.command.get(SECRET_ENV_KEY, ()) if n in os.environ}
            self.driver = start_detached(
                self.command["argv"],
                env={**self.command["env"], **secret},
                log_path=self.run_dir / DRIVER_LOG,
                cwd=self.run_dir,
            )
            self.record.update(driver=self.driver.to_dict())
            log.info("spark-submit started: pid %s", self.driver.pid)
            returncode = self._wait_for_driver()
            self._finish(returncode)
        except BaseException as exc:
            log.exception("supervisor failed")
            if self.driver is not None:
                stop_groups([self.driver], grace_s=5.0)
            self._settle(RunLifecycle.FAILED, f"supervisor error: {type(exc).__name__}: {exc}")
            raise
        return 0

    def _wait_for_driver(self) -> int:
        assert self.driver is not None
        escalated: set[str] = set()
        while True:
            returncode = wait_child(self.driver.pid, 0.5)
            if returncode is not None:
                return returncode
            if self.cancel_requested_at is not None:
                self._escalate(time.monotonic() - self.cancel_requested_at, escalated)

    def _escalate(self, elapsed: float, done: set[str]) -> None:
        assert self.driver is not None
        if "driver" not in done:
            done.add("driver")
            python_drivers = self._python_drivers()
            log.info("SIGTERM to the Python driver %s", [p.pid for p in python_drivers] or "(none: group)")
            for proc in python_drivers:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.send_signal(signal.SIGTERM)
            if not python_drivers:
                done.add("group")
                _killpg(self.driver.group, signal.SIGTERM)
        if elapsed >= DRIVER_GRACE_S and "group" not in done:
            done.add("group")
            log.info("driver still running after %.0fs: SIGTERM to its process group", elapsed)
            _killpg(self.driver.group, signal.SIGTERM)
        if elapsed >= KILL_AFTER_S and "kill" not in done:
            done.add("kill")
            log.info("driver still running after %.0fs: SIGKILL to its process group", elapsed)
            _killpg(self.driver.group, signal.SIGKILL)

    def _python_drivers(self) -> list[psutil.Process]:
        """The Python process running the job script under the spark-submit JVM."""
        assert self.driver is not None
        script = self.command.get("script")
        found = []
        for proc in iter_descendants(self.driver):
            try:
                cmdline = proc.cmdline()
                # The SparkSubmit JVM names the script too; it must get SIGTERM only after the grace.
                if script and script in cmdline and Path(cmdline[0]).name.startswith("python"):
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return found

    def _finish(self, returncode: int) -> None:
        assert self.driver is not None
        if group_members(self.driver):  # e.g. a child the job forked and left behind
            stop_groups([self.driver], grace_s=5.0)
        canceled = self.cancel_requested_at is not None
        if canceled:
            state = RunLifecycle.CANCELED
            message = f"canceled by SIGTERM; spark-submit exited with code {returncode}"
        elif returncode == 0:
            state, message = RunLifecycle.SUCCESS, ""
        else:
            log_text = read_tail(self.run_dir / DRIVER_LOG)
            state, message = RunLifecycle.FAILED, driver_error_message(log_text, returncode)
        self._settle(state, message, returncode=returncode)
        log.info("run %s finished: %s %s", self.command.get("run_id"), state, message)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Supervise one spark-submit run")
    parser.add_argument("--run-dir", required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    return Supervisor(Path(args.run_dir)).run()


if __name__ == "__main__":
    sys.exit(main())
