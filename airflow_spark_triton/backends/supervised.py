"""The half of the contract the local and spark-submit backends share: runs under a detached supervisor.

Both launch spark-submit on this machine under :class:`~airflow_spark_triton.runs.supervised.SupervisedRuns`
(the Airflow-free run component) and keep their state under a home directory; they differ in what
owns the runs (a local cluster, an attachment to someone else's cluster). This base holds the
component and answers the run half of :class:`GpuSparkBackend` through it, once for both.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, ClassVar

from airflow_spark_triton.backends.base import GpuSparkBackend, RunStatus
from airflow_spark_triton.errors import RunError
from airflow_spark_triton.runs.records import JsonRecord, file_lock, private_home, state_home
from airflow_spark_triton.runs.supervised import SupervisedRuns, iter_runs
from spark_jobs.contract import REPORT_FILE, RunReport

log = logging.getLogger(__name__)


def last_change(*paths: Path) -> float:
    """The newest modification time of the files under ``paths`` (0 if none): records, logs,
    reports. Lock files are left out: taking a lock (retention's own check too) creates them."""
    newest = 0.0
    for path in paths:
        for root, _dirs, files in os.walk(path):
            for name in files:
                if name.endswith(".lock"):
                    continue
                try:
                    newest = max(newest, os.stat(os.path.join(root, name)).st_mtime)
                except OSError:  # removed meanwhile
                    continue
    return newest


class SupervisedRunsBackend(GpuSparkBackend):
    """A backend whose runs are supervised processes on this machine, its state under ``home``.

    Subclasses set ``owners_subdir`` (the directory of the run owners under ``home``),
    ``owner_pattern`` (a valid owner id) and ``finished_state`` (the state of an owner record once
    nothing of it runs: DELETED, DETACHED), give the owner's record (``_record``) and the hook whose
    connection says where ``home`` is.
    """

    owners_subdir: ClassVar[str]
    owner_pattern: ClassVar[str]
    finished_state: ClassVar[str]

    def __init__(self, hook: Any, home: str | None) -> None:
        self.hook = hook  # looks its connection up lazily: building a backend does no I/O
        self._home_arg = home

    @functools.cached_property
    def home(self) -> Path:
        """The state directory, mode 0700 (:func:`~airflow_spark_triton.runs.records.private_home`)."""
        return private_home(state_home(self._home_arg) if self._home_arg else self.hook.home)

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

    # -- retention ----------------------------------------------------------------------------

    def _record(self, owner_id: str) -> JsonRecord:
        """The owner's record (``cluster.json``, ``attachment.json``) and its lock."""
        raise NotImplementedError

    def remove_expired(self, older_than: dt.timedelta) -> list[str]:
        """Remove each owner directory (its record, logs, runs and their reports) whose record is
        finished, whose runs are all finished, and in which nothing changed for ``older_than``;
        with it, the reports its runs wrote outside it (a spark-submit connection's ``report_dir``).

        Decided and removed under the owner's lock, the one every state change takes: a record that
        is not finished (a live cluster, a delete under way), or any unfinished run, keeps it all.
        """
        cutoff = time.time() - older_than.total_seconds()
        removed: list[str] = []
        if not self.owners_dir.is_dir():
            return removed
        for owner_dir in sorted(self.owners_dir.iterdir()):
            if re.fullmatch(self.owner_pattern, owner_dir.name):
                removed += self._remove_if_expired(owner_dir.name, cutoff)
        return removed

    def _remove_if_expired(self, owner_id: str, cutoff: float) -> list[str]:
        record = self._record(owner_id)
        with file_lock(record.lock):
            owner = record.read() or {}
            if owner.get("state") != self.finished_state or self.runs.active(owner_id):
                return []
            owner_dir = record.path.parent
            reports = [self.report_path(run["run_id"]).parent for _, run in iter_runs(owner_dir)]
            outside = [path for path in reports if not path.is_relative_to(owner_dir) and path.is_dir()]
            if last_change(owner_dir, *outside) >= cutoff:
                return []
            for path in [*outside, owner_dir]:  # the owner last: its record says the rest is done
                shutil.rmtree(path)
        log.info(
            "Removed %s (%s, unchanged since before the retention cutoff)", owner_dir, self.finished_state
        )
        return [str(path) for path in [*outside, owner_dir]]
