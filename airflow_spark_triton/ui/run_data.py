"""What the run pages show for one task instance: its run's state, progress, report and driver log.

Read-only, and only through the backends' own readers: the run is found from the task's
``spark_triton_run`` XCom (its backend run id and connection), the connection picks the backend,
and the backend validates the run id and knows where the run's files are. For the local and
spark-submit backends those are files of a run directory under the provider's state dir
(``<home>/<clusters|attachments>/<owner>/runs/<run id>/``, fixed names): a run id that is not one of
the backend's is refused, and a run whose ``run.json`` was not submitted by this task instance (its
idempotency token) is refused too, so an XCom edited to name another DAG's run shows nothing.
Nothing here settles a run's state: the API server may run on another machine than the run's
supervisor, so it shows what is recorded.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_spark_triton.backends.base import BackendError, GpuSparkBackend
from airflow_spark_triton.backends.registry import backend_for_type, connection_type
from airflow_spark_triton.backends.supervised import SupervisedRunsBackend
from airflow_spark_triton.runs.states import RunLifecycle
from spark_jobs.contract import ReportError, RunReport

DRIVER_LOG_LINES = 400


class RunRefused(Exception):
    """The task's XCom names a run this page must not show; ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class TaskInstanceRef:
    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1


@dataclass
class RunView:
    """One task instance's run as the pages show it. ``note`` says why something is missing."""

    ti: TaskInstanceRef
    ti_state: str | None
    try_number: int
    run_id: str | None = None
    backend: str | None = None  # "local", "spark-submit", "databricks"
    state: str | None = None  # the run's RunLifecycle value
    message: str = ""
    platform_url: str | None = None  # the platform's own run page (Databricks)
    progress: dict[str, Any] | None = None
    report: RunReport | None = None  # the job's final report
    driver_log: Path | None = field(default=None, repr=False)
    note: str | None = None

    @property
    def finished(self) -> bool:
        return self.state is not None and RunLifecycle(self.state).is_terminal

    @property
    def live(self) -> bool:
        """Whether the page should keep polling: the run or the task may still change."""
        if self.run_id is None:
            return self.ti_state in (None, "scheduled", "queued", "running", "deferred", "up_for_retry")
        return not self.finished

    def report_so_far(self) -> RunReport | None:
        """The final report, else the report as far as the job has filled it in (its progress file)."""
        if self.report is not None:
            return self.report
        so_far = (self.progress or {}).get("report")
        try:
            return RunReport.from_dict(so_far) if so_far else None
        except ReportError:  # a progress file of another version of the job: counts only
            return None

    def validated(self) -> bool:
        """Whether the date was read and validated (its reject reasons are known)."""
        report = self.report_so_far()
        return report is not None and report.rows_to_score is not None

    def counts(self) -> dict[str, Any]:
        """Rows read / scored / rejected and progress, from the report once there is one."""
        progress = self.progress or {}
        report, final = self.report_so_far(), self.report
        scored = rejected = rate = read = to_score = None
        if final is not None:
            scored, rejected, rate = final.rows_scored, final.rows_rejected, final.rows_per_s
        if report is not None:
            read, to_score = report.rows_read, report.rows_to_score
            if rejected is None and to_score is not None:  # validated: its reject reasons are known
                rejected = sum(report.reject_reasons.values())
        return {
            "rows_read": read,
            "rows_scored": _known(scored, progress.get("rows_done")),
            "rows_rejected": rejected,
            "rows_total": _known(progress.get("rows_total"), to_score),
            "rows_per_s": _known(rate, progress.get("rows_per_s")),
            "phase": progress.get("phase") or (self.state or "").lower() or None,
        }

    def percent(self) -> float:
        """Rows scored of rows to score, as the page's bar shows it (the page's script: the same)."""
        counts = self.counts()
        total, done = counts["rows_total"], counts["rows_scored"] or 0
        if total:
            return min(100.0, 100.0 * done / total)
        return 100.0 if self.finished else 0.0

    def sections_seen(self) -> str:
        """What the page's server-rendered sections show (servers, rejects, tables, state): when the
        polled value differs from the page's own, the page reloads to show the new sections."""
        report = self.report_so_far()
        known: list[Any] = [self.state, self.run_id, self.validated()]
        if report is not None:
            known += [len(report.servers), report.output_table, report.output_version, report.servers_stopped]
        return json.dumps(known, default=str)

    def to_json(self) -> dict[str, Any]:
        """What the page's script polls (``progress.json``)."""
        progress = self.progress or {}
        return {
            "sections": self.sections_seen(),
            "task_instance_state": self.ti_state,
            "run_id": self.run_id,
            "state": self.state,
            "message": self.message,
            "finished": self.finished,
            "live": self.live,
            "note": self.note,
            "history": progress.get("history") or [],
            "updated_at": progress.get("updated_at"),
            **self.counts(),
        }


def _known(*values: Any) -> Any:
    """The first value that is not None (a report's field is None until its step ran)."""
    return next((value for value in values if value is not None), None)


def backend_of(conn_id: str) -> GpuSparkBackend:
    """The connection's backend, looked up quietly (a page poll is no task to warn)."""
    return backend_for_type(connection_type(conn_id, warn=False), conn_id)


def backend_name(backend: GpuSparkBackend) -> str:
    from airflow_spark_triton.backends.local.backend import LocalSparkBackend

    if isinstance(backend, SupervisedRunsBackend):
        return "local" if isinstance(backend, LocalSparkBackend) else "spark-submit"
    return "databricks"


def read_run(view: RunView, locator: Any, tokens: set[str]) -> RunView:
    """Fill ``view`` from the run the task's XCom names; ``tokens``: the task instance's tries'
    idempotency tokens (a supervised run must carry one of them)."""
    if not isinstance(locator, dict) or not locator.get("run_id") or not locator.get("conn_id"):
        raise RunRefused("the task's run record (XCom spark_triton_run) is malformed", 400)
    run_id, conn_id = str(locator["run_id"]), str(locator["conn_id"])
    view.run_id = run_id
    try:
        backend = backend_of(conn_id)
    except Exception as exc:
        view.note = f"Connection {conn_id!r} of this run cannot be used here: {exc}"
        return view
    view.backend = backend_name(backend)
    if isinstance(backend, SupervisedRunsBackend):
        return _read_supervised(view, backend, run_id, tokens)
    return _read_platform(view, backend, run_id)


def _read_supervised(view: RunView, backend: SupervisedRunsBackend, run_id: str, tokens: set[str]) -> RunView:
    runs = backend.runs
    try:
        runs.owner_of(run_id)  # a run id of this backend, or nothing is read
    except BackendError as exc:
        raise RunRefused(f"refused: {exc}", 400) from exc
    try:
        record, outcome = runs.recorded(run_id)
    except BackendError:
        view.note = (
            f"Run {run_id} is not in the state directory this API server sees ({backend.home}). "
            "The local and spark-submit backends keep runs on the machine that ran the task: the API "
            "server shows them when it shares that directory (same machine or a shared volume)."
        )
        return view
    if record.get("idempotency_token") not in tokens:
        raise RunRefused(f"refused: run {run_id} was not submitted by this task instance", 403)
    view.state, view.message = outcome.state.value, outcome.message
    with contextlib.suppress(BackendError, OSError, ValueError):
        view.progress = runs.progress(run_id)
    if outcome.state.is_terminal:
        with contextlib.suppress(BackendError):
            view.report = runs.report(run_id)
    log = runs.driver_log(run_id)
    view.driver_log = log if log.is_file() else None
    return view


def _read_platform(view: RunView, backend: GpuSparkBackend, run_id: str) -> RunView:
    """A backend whose runs live on a platform (Databricks): its API, through the contract."""
    try:
        status = backend.get_run_status(run_id)
    except Exception as exc:
        view.note = f"Could not read run {run_id} from {view.backend}: {type(exc).__name__}: {exc}"
        return view
    view.state, view.message, view.platform_url = status.state.value, status.message, status.url
    with contextlib.suppress(Exception):  # progress is a courtesy: a missing file is no error
        view.progress = backend.get_run_progress(run_id)
    if status.state.is_terminal:
        try:
            view.report = backend.get_run_report(run_id)
        except Exception as exc:
            view.note = f"The run's report could not be read: {type(exc).__name__}: {exc}"
    return view


def driver_log_tail(view: RunView, lines: int = DRIVER_LOG_LINES) -> str:
    from airflow_spark_triton.runs.processes import log_tail

    return log_tail(view.driver_log, lines) if view.driver_log is not None else ""
