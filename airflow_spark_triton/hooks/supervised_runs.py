"""Runs launched on this machine under a detached supervisor, shared by the local and spark-submit backends.

The Airflow task that submits a run may end long before the run does (deferral, retries, a killed
worker), so each run gets a directory and a detached supervisor
(:mod:`~airflow_spark_triton.hooks.local_run_supervisor`) that records its fate in ``status.json``.
Any later task (a retry, the teardown, the triggerer) finds the run from its id alone.

Run directory ``<owner_dir>/runs/<run_id>/``::

    run.json        id, owner, idempotency token, supervisor pid + create time
    command.json    argv and environment of the launched command (read by the supervisor); the
                    environment comes from hooks.run_env (allow-listed, no secrets)
    status.json     PENDING → RUNNING → SUCCESS | FAILED | CANCELED, with the job's error message
    driver.log      the command's output; supervisor.log
    report.json, progress.json, summary.md   written by the job (spark_jobs.progress)

The JSON records (run, command, status) are readable by this user only (mode 0600).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from airflow_spark_triton.hooks import local_processes as procs
from airflow_spark_triton.hooks.base import RunError, RunLifecycle, RunStatus
from airflow_spark_triton.hooks.local_processes import ProcessRecord
from airflow_spark_triton.hooks.local_run_supervisor import (
    COMMAND_FILE,
    DRIVER_LOG,
    KILL_AFTER_S,
    STATUS_FILE,
)
from airflow_spark_triton.hooks.run_env import run_environment
from spark_jobs.json_files import read_json, write_json_atomic
from spark_jobs.progress import PROGRESS_FILE, SUMMARY_FILE

STOP_GRACE_S = 15.0
CANCEL_TIMEOUT_S = KILL_AFTER_S + 15.0  # the supervisor's own escalation, plus slack
SUPERVISOR_START_GRACE_S = 120.0
RUN_SEPARATOR = "-run-"

# Builds the command of a new run from its id and directory: (argv, env, script). ``script`` is
# the Python file the driver runs; the supervisor sends it SIGTERM first on cancel. ``env`` must
# come from hooks.run_env.run_environment: it is written to command.json and inherited by the run.
CommandBuilder = Callable[[str, Path], tuple[list[str], dict[str, str], str]]


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def update_record(path: Path, lock: Path, **changes: Any) -> dict[str, Any]:
    """Read-modify-write of a JSON record under a file lock: tasks, triggerer and supervisors share it."""
    with procs.file_lock(lock):
        record = read_json(path) or {}
        record.update(changes)
        write_json_atomic(path, record)
    return record


def update_record_if(
    path: Path, lock: Path, decide: Callable[[dict[str, Any]], dict[str, Any] | None]
) -> dict[str, Any] | None:
    """Compare-and-set on a JSON record: ``decide`` sees the current record under the lock and
    returns the changes to write, or None to leave it alone. Returns the changes written."""
    with procs.file_lock(lock):
        record = read_json(path) or {}
        changes = decide(record)
        if changes:
            record.update(changes)
            write_json_atomic(path, record)
    return changes or None


def process_record(data: dict[str, Any] | None) -> ProcessRecord | None:
    return ProcessRecord.from_dict(data) if data and data.get("pid") else None


def iter_runs(owner_dir: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """``(run_dir, run.json)`` of every run recorded under ``owner_dir``."""
    for path in sorted((owner_dir / "runs").glob("*/run.json")):
        run = read_json(path)
        if run:
            yield path.parent, run


def supervisor_lost(run: dict[str, Any], status: dict[str, Any]) -> str | None:
    """Why an unfinished run can no longer finish on its own (its supervisor is gone), or None."""
    supervisor = process_record(status.get("supervisor")) or process_record(run.get("supervisor"))
    if supervisor is None:
        age = time.time() - float(run.get("created_epoch", time.time()))
        return "supervisor never started" if age > SUPERVISOR_START_GRACE_S else None
    if procs.is_alive(supervisor):
        return None
    driver = process_record(status.get("driver"))
    detail = f"; spark-submit pid {driver.pid} is still running" if procs.is_alive(driver) else ""
    return f"supervisor died (pid {supervisor.pid}) before recording the outcome{detail}"


@dataclass(frozen=True)
class RunActivity:
    """What the runs of one cluster are doing, for the reaper's idle clock."""

    live: tuple[str, ...]  # unfinished runs whose supervisor runs (or is still starting)
    last_epoch: float | None  # latest submit or status change of any run


def run_activity(owner_dir: Path) -> RunActivity:
    """Runs that count as activity: unfinished with a live supervisor. A driver whose supervisor
    died is an orphan, not activity: it must not keep an abandoned cluster alive."""
    live: list[str] = []
    last: float | None = None
    for run_dir, run in iter_runs(owner_dir):
        status = read_json(run_dir / STATUS_FILE) or {}
        times = [float(run.get("created_epoch") or 0.0)]
        with contextlib.suppress(OSError):
            times.append((run_dir / STATUS_FILE).stat().st_mtime)
        last = max([t for t in (last, *times) if t is not None])
        state = RunLifecycle(status.get("state", RunLifecycle.PENDING.value))
        if not state.is_terminal and supervisor_lost(run, status) is None:
            live.append(run["run_id"])
    return RunActivity(tuple(live), last)


def leftover_drivers(owner_dir: Path) -> list[tuple[str, ProcessRecord]]:
    """Recorded drivers whose process group still has members, whatever their run's state: a
    supervisor killed with -9 leaves spark-submit running, and only its record finds it."""
    left = []
    for run_dir, run in iter_runs(owner_dir):
        driver = process_record((read_json(run_dir / STATUS_FILE) or {}).get("driver"))
        if driver is not None and procs.group_members(driver):
            left.append((run["run_id"], driver))
    return left


def owner_of(run_id: str) -> str:
    """The cluster (or attachment) id a run id starts with."""
    owner, separator, _ = run_id.rpartition(RUN_SEPARATOR)
    if not separator:
        raise RunError(f"{run_id!r} is not a run id (<cluster_id>{RUN_SEPARATOR}<8 hex>)")
    return owner


class SupervisedRuns:
    """Mixin for hooks whose runs are supervised on this machine; the hook says where runs live."""

    log: Any

    def run_dir(self, run_id: str) -> Path:
        raise NotImplementedError

    # -- submit -----------------------------------------------------------------------------

    def start_supervised_run(
        self,
        owner_id: str,
        owner_dir: Path,
        idempotency_token: str,
        build_command: CommandBuilder,
        check_usable: Callable[[], None] = lambda: None,
    ) -> str:
        """Start one run for ``idempotency_token``; the same token returns the run it started before."""
        with procs.file_lock(owner_dir / ".runs.lock"):
            existing = self._run_for_token(owner_dir, idempotency_token)
            if existing:
                self.log.info("Run %s exists for token %r: not submitting again", existing, idempotency_token)
                return existing
            check_usable()
            run_id = f"{owner_id}{RUN_SEPARATOR}{secrets.token_hex(4)}"
            run_dir = self.run_dir(run_id)
            (run_dir / "local").mkdir(parents=True)
            argv, env, script = build_command(run_id, run_dir)
            run = {
                "run_id": run_id,
                "owner_id": owner_id,
                "idempotency_token": idempotency_token,
                "script": script,
                "created_at": now_iso(),
                "created_epoch": time.time(),
            }
            write_json_atomic(run_dir / "run.json", run)
            write_json_atomic(
                run_dir / COMMAND_FILE, {"run_id": run_id, "argv": argv, "env": env, "script": script}
            )
            write_json_atomic(run_dir / STATUS_FILE, {"run_id": run_id, "state": RunLifecycle.PENDING.value})
            supervisor = procs.start_detached(
                [
                    sys.executable,
                    "-m",
                    "airflow_spark_triton.hooks.local_run_supervisor",
                    "--run-dir",
                    str(run_dir),
                ],
                env=run_environment(),  # never the task's own environment: it holds its secrets
                log_path=run_dir / "supervisor.log",
                cwd=run_dir,
            )
            write_json_atomic(run_dir / "run.json", {**run, "supervisor": supervisor.to_dict()})
        self.log.info("Submitted run %s (supervisor pid %s); driver log %s", run_id, supervisor.pid,
                      run_dir / DRIVER_LOG)  # fmt: skip
        return run_id

    # -- lookup -----------------------------------------------------------------------------

    @staticmethod
    def _iter_runs(owner_dir: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
        return iter_runs(owner_dir)

    def _run_for_token(self, owner_dir: Path, token: str) -> str | None:
        for _, run in self._iter_runs(owner_dir):
            if run.get("idempotency_token") == token:
                return run["run_id"]
        return None

    def active_runs(self, owner_dir: Path) -> list[str]:
        """Runs not recorded as finished, including those whose supervisor died: cancel settles
        each one. (The reaper's idle clock counts only live ones: :func:`run_activity`.)"""
        active = []
        for run_dir, run in self._iter_runs(owner_dir):
            status = read_json(run_dir / STATUS_FILE) or {}
            if not RunLifecycle(status.get("state", "PENDING")).is_terminal:
                active.append(run["run_id"])
        return active

    def _load_run(self, run_id: str) -> tuple[Path, dict[str, Any], dict[str, Any]]:
        run_dir = self.run_dir(run_id)
        run = read_json(run_dir / "run.json")
        if run is None:
            raise RunError(f"unknown run {run_id} (no {run_dir / 'run.json'})")
        return run_dir, run, read_json(run_dir / STATUS_FILE) or {"state": RunLifecycle.PENDING.value}

    @staticmethod
    def _supervisor(run: dict[str, Any], status: dict[str, Any]) -> ProcessRecord | None:
        return process_record(status.get("supervisor")) or process_record(run.get("supervisor"))

    # -- status -----------------------------------------------------------------------------

    def get_run_status(self, run_id: str) -> RunStatus:
        run_dir, run, status = self._load_run(run_id)
        url = (run_dir / DRIVER_LOG).as_uri()
        state = RunLifecycle(status.get("state", RunLifecycle.PENDING.value))
        if not state.is_terminal:
            lost = self._lost_supervisor_reason(run, status)
            if lost:
                # Read again: the supervisor may have written its outcome just before exiting.
                _, _, status = self._load_run(run_id)
                state = RunLifecycle(status.get("state", RunLifecycle.PENDING.value))
                if not state.is_terminal:
                    status = self._mark_run(run_dir, RunLifecycle.FAILED, lost)
                    state = RunLifecycle.FAILED
        return RunStatus(run_id, state, status.get("message", ""), url)

    def _lost_supervisor_reason(self, run: dict[str, Any], status: dict[str, Any]) -> str | None:
        return supervisor_lost(run, status)

    @staticmethod
    def _mark_run(run_dir: Path, state: RunLifecycle, message: str) -> dict[str, Any]:
        return update_record(
            run_dir / STATUS_FILE,
            run_dir / ".status.lock",
            state=state.value,
            message=message,
            finished_at=now_iso(),
        )

    # -- cancel -----------------------------------------------------------------------------

    def cancel_run(self, run_id: str) -> None:
        """SIGTERM the supervisor (it stops the driver gracefully) and wait until both are gone.

        Works without the supervisor too: a supervisor killed with -9 leaves spark-submit running,
        and the run may already be recorded FAILED for it; its driver is then stopped by record.
        """
        run_dir, run, status = self._load_run(run_id)
        if RunLifecycle(status.get("state", "PENDING")).is_terminal:
            driver = process_record(status.get("driver"))
            if driver is not None and procs.group_members(driver):
                self.log.warning(
                    "Run %s is %s but its driver (pid %s) still runs: its supervisor died. Stopping it",
                    run_id, status["state"], driver.pid,
                )  # fmt: skip
                procs.stop_groups([driver], grace_s=STOP_GRACE_S)
                return
            self.log.info("Run %s already finished (%s): nothing to cancel", run_id, status["state"])
            return
        supervisor = self._supervisor(run, status)
        if supervisor is not None and procs.is_alive(supervisor):
            self.log.info("Canceling run %s: SIGTERM to supervisor pid %s", run_id, supervisor.pid)
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(supervisor.pid).terminate()
            if not procs.wait_until(lambda: not procs.is_alive(supervisor), CANCEL_TIMEOUT_S):
                self.log.warning(
                    "Supervisor of %s did not exit in %.0fs: killing it", run_id, CANCEL_TIMEOUT_S
                )
                procs.stop_groups([supervisor], grace_s=0)
        _, _, status = self._load_run(run_id)
        driver = process_record(status.get("driver"))
        if driver is not None and procs.group_members(driver):
            self.log.warning("Driver of %s outlived its supervisor: stopping it", run_id)
            procs.stop_groups([driver], grace_s=STOP_GRACE_S)
        if not RunLifecycle(status.get("state", "PENDING")).is_terminal:
            self._mark_run(run_dir, RunLifecycle.CANCELED, "canceled; the supervisor recorded no outcome")
        self.log.info("Run %s canceled", run_id)

    def stop_leftover_drivers(self, owner_dir: Path) -> list[str]:
        """Stop every recorded driver under ``owner_dir`` whose process group still has members,
        whatever its run's recorded state; returns those that could not be stopped."""
        left = leftover_drivers(owner_dir)
        if not left:
            return []
        self.log.warning(
            "Stopping %d driver(s) that outlived their supervisor: %s",
            len(left), ", ".join(f"{run_id} (pid {driver.pid})" for run_id, driver in left),
        )  # fmt: skip
        procs.stop_groups([driver for _, driver in left], grace_s=STOP_GRACE_S)
        for run_id, _ in left:
            run_dir, _, status = self._load_run(run_id)
            if not RunLifecycle(status.get("state", "PENDING")).is_terminal:
                self._mark_run(run_dir, RunLifecycle.CANCELED, "canceled: its driver was stopped on delete")
        return [f"driver of {run_id} pid {d.pid}" for run_id, d in left if procs.group_members(d)]

    # -- what the job wrote -----------------------------------------------------------------

    def report_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "report.json"

    def get_run_report(self, run_id: str) -> dict[str, Any]:
        path = self.report_path(run_id)
        try:
            return json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise RunError(f"run {run_id} wrote no report: {path} does not exist") from exc
        except json.JSONDecodeError as exc:
            raise RunError(f"run {run_id} wrote an unreadable report {path}: {exc}") from exc

    def get_run_progress(self, run_id: str) -> dict[str, Any] | None:
        """The job's latest ``progress.json`` (rows done/total, rows/s), or None before it writes one."""
        return read_json(self.report_path(run_id).with_name(PROGRESS_FILE))

    def run_summary_uri(self, run_id: str) -> str:
        """Where the job writes the Markdown summary of its report (exists once the run ends)."""
        return self.report_path(run_id).with_name(SUMMARY_FILE).as_uri()

    def driver_log_tail(self, run_id: str, lines: int = 50) -> str:
        """The end of the driver's output, for operators to show in the task log on failure."""
        return procs.log_tail(self.run_dir(run_id) / DRIVER_LOG, lines)
