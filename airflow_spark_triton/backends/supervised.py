"""The half of the contract the local and spark-submit backends share: runs under a detached supervisor.

Both launch spark-submit on this machine under :class:`~airflow_spark_triton.runs.supervised.SupervisedRuns`
(the Airflow-free run component) and keep their state under a home directory; they differ in what
owns the runs (a local cluster, an attachment to someone else's cluster). This base holds the
component and answers the run half of :class:`GpuSparkBackend` through it, once for both.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, ClassVar

from airflow_spark_triton.backends.base import GpuSparkBackend, RunStatus
from airflow_spark_triton.errors import RunError
from airflow_spark_triton.runs.records import state_home
from airflow_spark_triton.runs.supervised import SupervisedRuns
from spark_jobs.contract import REPORT_FILE, RunReport


class SupervisedRunsBackend(GpuSparkBackend):
    """A backend whose runs are supervised processes on this machine, its state under ``home``.

    Subclasses set ``owners_subdir`` (the directory of the run owners under ``home``) and
    ``owner_pattern`` (a valid owner id), and give the hook whose connection says where ``home`` is.
    """

    owners_subdir: ClassVar[str]
    owner_pattern: ClassVar[str]

    def __init__(self, hook: Any, home: str | None) -> None:
        self.hook = hook  # looks its connection up lazily: building a backend does no I/O
        self._home_arg = home

    @functools.cached_property
    def home(self) -> Path:
        return state_home(self._home_arg) if self._home_arg else self.hook.home

    @property
    def owners_dir(self) -> Path:
        return self.home / self.owners_subdir

    @functools.cached_property
    def runs(self) -> SupervisedRuns:
        """The supervised runs, under each owner's directory."""
        return SupervisedRuns(
            self.owners_dir,
            logging.getLogger(type(self).__module__),
            owner_pattern=self.owner_pattern,
            error=RunError,
            report_path=self.report_path,
        )

    def run_dir(self, run_id: str) -> Path:
        return self.runs.run_dir(run_id)

    def report_path(self, run_id: str) -> Path:
        """Where the job writes the run's report: ``report.json`` in its run directory by default."""
        return self.runs.run_dir(run_id) / REPORT_FILE

    def get_run_status(self, run_id: str) -> RunStatus:
        return RunStatus.from_dict(self.runs.status(run_id).to_dict())

    def cancel_run(self, run_id: str) -> None:
        self.runs.cancel(run_id)

    def get_run_report(self, run_id: str) -> RunReport:
        return self.runs.report(run_id)

    def get_run_progress(self, run_id: str) -> dict[str, Any] | None:
        return self.runs.progress(run_id)

    def run_summary_uri(self, run_id: str) -> str | None:
        return self.runs.summary_uri(run_id)

    def driver_log_tail(self, run_id: str, lines: int = 50) -> str:
        """The end of the driver's output, for tests and the task log."""
        return self.runs.driver_log_tail(run_id, lines)
