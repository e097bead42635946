"""Runs launched on this machine under a detached supervisor: the component the local and spark-submit backends hold.

The Airflow task that submits a run may end long before the run does (deferral, retries, a killed
worker), so each run gets a directory and a detached supervisor
(:mod:`~airflow_spark_triton.runs.supervisor`) that records its fate in ``status.json``.
Any later task (a retry, the teardown, the triggerer) finds the run from its id alone.

Run directory ``<root>/<owner_id>/runs/<run_id>/`` (the owner is a local cluster or a spark-submit
attachment; ``run_id`` is ``<owner_id>-run-<8 hex>``)::

    run.json        id, owner, idempotency token, host, supervisor pid + create time
    command.json    argv and environment of the launched command (read by the supervisor); the
                    environment comes from runs.env (allow-listed, no secrets); secret variables the
                    command needs (a cluster spec's secret spark_env_vars) are named under
                    ``secret_env`` and their values reach it only through the supervisor's own
                    environment
    status.json     PENDING → RUNNING → SUCCESS | FAILED | CANCELED, with the job's error message
                    (a guarded record: a finished run never changes state again)
    driver.log      the command's output; supervisor.log
    report.json, report.progress.json, report.md   written by the job (names: spark_jobs.contract)

The JSON records (run, command, status) are readable by this user only (mode 0600). The pids in
them are judged only on the run's own host (:mod:`~airflow_spark_triton.runs.hosts`): elsewhere an
unfinished run is reported as running there, and cancel fails naming both hosts.

:class:`SupervisedRuns` returns plain values (:class:`RunOutcome`, dicts, paths) and raises the
error class its backend hands it (the backend contract's ``RunError``), so this module stays free of
Airflow.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import sys
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from airflow_spark_triton.runs import processes as procs
from airflow_spark_triton.runs.env import run_environment
from airflow_spark_triton.runs.hosts import (
    elsewhere_message,
    foreign_host,
    this_host,
    unchecked_message,
)
from airflow_spark_triton.runs.processes import ProcessRecord
from airflow_spark_triton.runs.records import file_lock, now_iso
from airflow_spark_triton.runs.states import UNFINISHED_STATES, RunLifecycle
from airflow_spark_triton.runs.supervisor import (
    COMMAND_FILE,
    DRIVER_LOG,
    KILL_AFTER_S,
    SECRET_ENV_KEY,
    STATUS_FILE,
    run_state,
    status_record,
)
from spark_jobs.contract import REPORT_FILE, ReportError, RunReport, progress_path, summary_path
from spark_jobs.json_files import read_json, write_json_atomic

STOP_GRACE_S = 15.0
CANCEL_TIMEOUT_S = KILL_AFTER_S + 15.0  # the supervisor's own escalation, plus slack
SUPERVISOR_START_GRACE_S = 120.0
SUPERVISOR_MODULE = "airflow_spark_triton.runs.supervisor"
RUN_SEPARATOR = "-run-"
RUN_FILE = "run.json"

# Builds the command of a new run from its id and directory: (argv, env, script). ``script`` is
# the Python file the driver runs; the supervisor sends it SIGTERM first on cancel. ``env`` must
# come from runs.env.run_environment: it is written to command.json and inherited by the run.
CommandBuilder = Callable[[str, Path], tuple[list[str], dict[str, str], str]]


class RunsError(Exception):
    """What :class:`SupervisedRuns` raises unless its backend hands it an error class of its own."""


def process_record(data: dict[str, Any] | None) -> ProcessRecord | None:
    return ProcessRecord.from_dict(data) if data and data.get("pid") else None


def iter_runs(owner_dir: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """``(run_dir, run.json)`` of every run recorded under ``owner_dir``."""
    for path in sorted((owner_dir / "runs").glob(f"*/{RUN_FILE}")):
        run = read_json(path)
        if run:
            yield path.parent, run


def supervisor_lost(run: dict[str, Any], status: dict[str, Any]) -> str | None:
    """Why an unfinished run can no longer finish on its own (its supervisor is gone), or None.
    A run of another host is never judged here: its pids are that host's."""
    if foreign_host(run):
        return None
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
    """What the runs of one owner are doing, for the local reaper's idle clock."""

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
        with contextlib.suppress(OSError):  # no status file yet: the submit time counts
            times.append((run_dir / STATUS_FILE).stat().st_mtime)
        last = max([t for t in (last, *times) if t is not None])
        if not run_state(status).is_terminal and supervisor_lost(run, status) is None:
            live.append(run["run_id"])
    return RunActivity(tuple(live), last)


def leftover_drivers(owner_dir: Path) -> list[tuple[str, ProcessRecord]]:
    """Recorded drivers whose process group still has members, whatever their run's state: a
    supervisor killed with -9 leaves spark-submit running, and only its record finds it. Runs of
    another host are not judged (an unfinished one fails its cancel first)."""
    left = []
    for run_dir, run in iter_runs(owner_dir):
        if foreign_host(run):
            continue
        driver = process_record((read_json(run_dir / STATUS_FILE) or {}).get("driver"))
        if driver is not None and procs.group_members(driver):
            left.append((run["run_id"], driver))
    return left


@dataclass(frozen=True)
class RunOutcome:
    """Where a run is, as plain values; the backend turns it into the contract's ``RunStatus``."""

    run_id: str
    state: RunLifecycle
    message: str
    url: str

    def to_dict(self) -> dict[str, Any]:
        """The fields of the contract's ``RunStatus.from_dict``."""
        return {"run_id": self.run_id, "state": self.state.value, "message": self.message, "url": self.url}


class SupervisedRuns:
    """Start, watch, cancel and read the supervised runs of one backend's owners under ``root``.

    :param root: the directory of the owners (local clusters, spark-submit attachments); each owner
        keeps its runs in ``<root>/<owner_id>/runs/``.
    :param log: where to log (the backend's logger).
    :param owner_pattern: regular expression of a valid owner id (run ids are checked against it, so
        a run id cannot name a path outside ``root``).
    :param error: the exception class raised for an unknown or malformed run or a missing report.
    :param report_path: where a run's report is, if not ``report.json`` in its run directory.
    """

    def __init__(
        self,
        root: Path,
        log: logging.Logger,
        *,
        owner_pattern: str,
        error: Callable[[str], Exception] = RunsError,
        report_path: Callable[[str], Path] | None = None,
    ) -> None:
        self.root = root
        self.log = log
        self.error = error
        self._run_id = re.compile(rf"^(?P<owner>{owner_pattern}){re.escape(RUN_SEPARATOR)}[0-9a-f]{{8}}$")
        self._report_path = report_path

    # -- where --------------------------------------------------------------------------------

    def owner_dir(self, owner_id: str) -> Path:
        return self.root / owner_id

    def owner_of(self, run_id: str) -> str:
        """The owner (cluster or attachment) id a run id starts with."""
        match = self._run_id.match(run_id)
        if not match:
            raise self.error(f"{run_id!r} is not a run id of this backend (<owner id>{RUN_SEPARATOR}<8 hex>)")
        return match["owner"]

    def run_dir(self, run_id: str) -> Path:
        return self.owner_dir(self.owner_of(run_id)) / "runs" / run_id

    def report_path(self, run_id: str) -> Path:
        return self._report_path(run_id) if self._report_path else self.run_dir(run_id) / REPORT_FILE

    # -- submit -------------------------------------------------------------------------------

    def start(
        self,
        owner_id: str,
        idempotency_token: str,
        build_command: CommandBuilder,
        check_usable: Callable[[], None] = lambda: None,
        secret_names: Collection[str] = (),
    ) -> str:
        """Start one run for ``idempotency_token``; the same token returns the run it started before.

        ``check_usable`` runs under the owner's submit lock, before anything is written; whatever it
        raises (the backend's ``ClusterError``) propagates. The values of ``secret_names`` in the
        built environment are never written: ``command.json`` names them, the supervisor is started
        with them in its environment and hands them to the command.
        """
        owner_dir = self.owner_dir(owner_id)
        with file_lock(owner_dir / ".runs.lock"):
            existing = self.run_for_token(owner_id, idempotency_token)
            if existing:
                self.log.info("Run %s exists for token %r: not submitting again", existing, idempotency_token)
                return existing
            check_usable()
            run_id = f"{owner_id}{RUN_SEPARATOR}{secrets.token_hex(4)}"
            run_dir = self.run_dir(run_id)
            (run_dir / "local").mkdir(parents=True)
            argv, env, script = build_command(run_id, run_dir)
            secret = {name: env.pop(name) for name in sorted(secret_names) if name in env}
            run = {
                "run_id": run_id,
                "owner_id": owner_id,
                "idempotency_token": idempotency_token,
                "host": this_host(),
                "script": script,
                "created_at": now_iso(),
                "created_epoch": time.time(),
            }
            write_json_atomic(run_dir / RUN_FILE, run)
            write_json_atomic(
                run_dir / COMMAND_FILE,
                {"run_id": run_id, "argv": argv, "env": env, "script": script, SECRET_ENV_KEY: list(secret)},
            )
            status_record(run_dir).update(run_id=run_id, state=RunLifecycle.PENDING.value)
            supervisor = procs.start_detached(
                [sys.executable, "-m", SUPERVISOR_MODULE, "--run-dir", str(run_dir)],
                # Never the task's own environment (it holds the worker's secrets); the run's own
                # secret variables only, for the supervisor to hand to the command.
                env=run_environment(secret),
                log_path=run_dir / "supervisor.log",
                cwd=run_dir,
            )
            write_json_atomic(run_dir / RUN_FILE, {**run, "supervisor": supervisor.to_dict()})
        self.log.info("Submitted run %s (supervisor pid %s); driver log %s", run_id, supervisor.pid,
                      run_dir / DRIVER_LOG)  # fmt: skip
        return run_id

    # -- lookup -------------------------------------------------------------------------------

    def run_for_token(self, owner_id: str, token: str) -> str | None:
        for _, run in iter_runs(self.owner_dir(owner_id)):
            if run.get("idempotency_token") == token:
                return run["run_id"]
        return None

    def active(self, owner_id: str) -> list[str]:
        """Runs not recorded as finished, including those whose supervisor died: cancel settles
        each one. (The reaper's idle clock counts only live ones: :func:`run_activity`.)"""
        active = []
        for run_dir, run in iter_runs(self.owner_dir(owner_id)):
            if not run_state(read_json(run_dir / STATUS_FILE) or {}).is_terminal:
                active.append(run["run_id"])
        return active

    def _load(self, run_id: str) -> tuple[Path, dict[str, Any], dict[str, Any]]:
        run_dir = self.run_dir(run_id)
        run = read_json(run_dir / RUN_FILE)
        if run is None:
            raise self.error(f"unknown run {run_id} (no {run_dir / RUN_FILE})")
        return run_dir, run, read_json(run_dir / STATUS_FILE) or {"state": RunLifecycle.PENDING.value}

    # -- status -------------------------------------------------------------------------------

    def status(self, run_id: str) -> RunOutcome:
        """The recorded state; an unfinished run whose supervisor is gone is settled as FAILED. One of
        another host keeps its recorded state, with a message saying this host cannot check it."""
        run_dir, run, status = self._load(run_id)
        elsewhere = foreign_host(run)
        if elsewhere and not run_state(status).is_terminal:
            status = {**status, "message": unchecked_message(elsewhere)}
        elif not run_state(status).is_terminal:
            lost = supervisor_lost(run, status)
            if lost:
                # Guarded: if the supervisor wrote its outcome just before exiting, that one stands.
                record = status_record(run_dir)
                failed = record.transition(
                    RunLifecycle.FAILED, allowed_from=UNFINISHED_STATES, message=lost, finished_at=now_iso()
                )
                status = failed or record.read() or status
        return self._outcome(run_id, status)

    def recorded(self, run_id: str) -> tuple[dict[str, Any], RunOutcome]:
        """The run's record (``run.json``) and its state as recorded, settling nothing: for readers
        on other machines (the Airflow UI), which cannot tell whether a supervisor is alive."""
        _, run, status = self._load(run_id)
        return run, self._outcome(run_id, status)

    def _outcome(self, run_id: str, status: dict[str, Any]) -> RunOutcome:
        return RunOutcome(
            run_id, run_state(status), status.get("message", ""), self.driver_log(run_id).as_uri()
        )

    # -- cancel -------------------------------------------------------------------------------

    def cancel(self, run_id: str) -> None:
        """SIGTERM the supervisor (it stops the driver gracefully) and wait until both are gone.

        Works without the supervisor too: a supervisor killed with -9 leaves spark-submit running,
        and the run may already be recorded FAILED for it; its driver is then stopped by record.
        An unfinished run of another host cannot be stopped from here: that raises, naming both hosts.
        """
        run_dir, run, status = self._load(run_id)
        elsewhere = foreign_host(run)
        if elsewhere and not run_state(status).is_terminal:
            raise self.error(f"cannot cancel: {elsewhere_message(f'run {run_id}', elsewhere)}")
        if run_state(status).is_terminal:
            driver = None if elsewhere else process_record(status.get("driver"))
            if driver is not None and procs.group_members(driver):
                self.log.warning(
                    "Run %s is %s but its driver (pid %s) still runs: its supervisor died. Stopping it",
                    run_id, status["state"], driver.pid,
                )  # fmt: skip
                procs.stop_groups([driver], grace_s=STOP_GRACE_S)
                return
            self.log.info("Run %s already finished (%s): nothing to cancel", run_id, status["state"])
            return
        supervisor = process_record(status.get("supervisor")) or process_record(run.get("supervisor"))
        if supervisor is not None and procs.is_alive(supervisor):
            self.log.info("Canceling run %s: SIGTERM to supervisor pid %s", run_id, supervisor.pid)
            with contextlib.suppress(psutil.NoSuchProcess):  # exited meanwhile: nothing to signal
                psutil.Process(supervisor.pid).terminate()
            if not procs.wait_until(lambda: not procs.is_alive(supervisor), CANCEL_TIMEOUT_S):
                self.log.warning(
                    "Supervisor of %s did not exit in %.0fs: killing it", run_id, CANCEL_TIMEOUT_S
                )
                procs.stop_groups([supervisor], grace_s=0)
        _, _, status = self._load(run_id)
        driver = process_record(status.get("driver"))
        if driver is not None and procs.group_members(driver):
            self.log.warning("Driver of %s outlived its supervisor: stopping it", run_id)
            procs.stop_groups([driver], grace_s=STOP_GRACE_S)
        status_record(run_dir).transition(
            RunLifecycle.CANCELED,
            allowed_from=UNFINISHED_STATES,
            message="canceled; the supervisor recorded no outcome",
            finished_at=now_iso(),
        )
        self.log.info("Run %s canceled", run_id)

    def stop_leftover_drivers(self, owner_id: str) -> list[str]:
        """Stop every recorded driver of ``owner_id`` whose process group still has members,
        whatever its run's recorded state; returns those that could not be stopped."""
        left = leftover_drivers(self.owner_dir(owner_id))
        if not left:
            return []
        self.log.warning(
            "Stopping %d driver(s) that outlived their supervisor: %s",
            len(left), ", ".join(f"{run_id} (pid {driver.pid})" for run_id, driver in left),
        )  # fmt: skip
        procs.stop_groups([driver for _, driver in left], grace_s=STOP_GRACE_S)
        for run_id, _ in left:
            status_record(self.run_dir(run_id)).transition(
                RunLifecycle.CANCELED,
                allowed_from=UNFINISHED_STATES,
                message="canceled: its driver was stopped on delete",
                finished_at=now_iso(),
            )
        return [f"driver of {run_id} pid {d.pid}" for run_id, d in left if procs.group_members(d)]

    # -- what the job wrote -------------------------------------------------------------------

    def report(self, run_id: str) -> RunReport:
        path = self.report_path(run_id)
        try:
            return RunReport.from_json(path.read_text())
        except FileNotFoundError as exc:
            raise self.error(f"run {run_id} wrote no report: {path} does not exist") from exc
        except ReportError as exc:
            raise self.error(f"run {run_id} wrote an unreadable report {path}: {exc}") from exc

    def progress(self, run_id: str) -> dict[str, Any] | None:
        """The job's latest ``report.progress.json`` (rows done/total, rows/s), or None before it writes one."""
        return read_json(progress_path(self.report_path(run_id)))

    def summary_uri(self, run_id: str) -> str:
        """Where the job writes the Markdown summary of its report (exists once the run ends)."""
        return summary_path(self.report_path(run_id)).as_uri()

    def driver_log(self, run_id: str) -> Path:
        """The driver's output (spark-submit's stdout and stderr)."""
        return self.run_dir(run_id) / DRIVER_LOG

    def driver_log_tail(self, run_id: str, lines: int = 50) -> str:
        """The end of the driver's output, for operators to show in the task log on failure."""
        return procs.log_tail(self.driver_log(run_id), lines)
