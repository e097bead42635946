"""How a run's results reach its two tables: what is checked first, the write modes, the commit order.

**Before any commit** (:func:`check_before_commit`): the date must have ``min_rows`` input rows, and
no more than ``max_reject_fraction`` of them may be rejected. Both are known once the input is
validated, before a server is started, so a truncated or broken date fails the run with nothing
written (the output keeps its previous version of the date).

**The order** (:func:`write_results`): the output is *staged* first (Spark scores the rows into
files no reader sees; delta-spark keeps them in Spark's storage), then the rejects table is
committed, then the output table: two Delta tables cannot share one transaction, so the output,
what consumers read (and the asset event announces), is the run's last step. A failure before it
leaves the output as it was; a failure between the two commits leaves the output as it was and the
rejects of the new run, which the date's next run (the task's retry, a rerun) writes again: under
``replace_date`` and ``merge`` the rejects' date is replaced, under ``append`` the rejects' append
is idempotent like the output's. No reader of the output ever sees a half-written date, and the
date lease (:mod:`spark_jobs.date_lease`) keeps a second run out meanwhile; each commit renews it
first, so a run that lost its lease commits nothing more.

**The modes** (``write_mode``; engines in :mod:`spark_jobs.delta_io`):

* ``replace_date`` (default): the date's partition holds exactly this run's rows.
* ``append``: this run's rows are added in one commit, idempotent per ``write_id`` (the Airflow task
  instance: every try of one DAG run's task has the same): a retried or re-sent run that finds its
  append committed writes nothing again; another DAG run of the date appends its own rows.
* ``merge``: Delta MERGE on the key: a scored key's row is updated in place (its date becomes this
  one), a new key inserted, a key not scored this time (rejected, filtered out) keeps its row.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from spark_jobs.contract import APPEND, REPLACE_DATE

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from spark_jobs.contract import InferenceJobConfig, RunReport
    from spark_jobs.date_lease import DateLease
    from spark_jobs.delta_io import DeltaIO

log = logging.getLogger("spark_jobs.write_modes")


class WriteRefused(RuntimeError):
    """A check before any commit failed (``min_rows``, ``max_reject_fraction``); nothing was written."""


def rejects_mode(job: InferenceJobConfig) -> str:
    """The rejects table follows the output: appended (idempotently) when the output is, else the
    date replaced (a merged output's rejects are this run's problems, not a history of them)."""
    return APPEND if job.write_mode == APPEND else REPLACE_DATE


def check_before_commit(job: InferenceJobConfig, rows_read: int, rows_rejected: int) -> None:
    """Fail the run, with nothing committed, when the date is too small or too broken to write."""
    date, table = job.logical_date, job.input_table
    if rows_read < job.min_rows:
        raise WriteRefused(
            f"input table {table} has {rows_read} row(s) for {date}, below min_rows={job.min_rows}: "
            "nothing was written"
        )
    if (
        job.max_reject_fraction is not None
        and rows_read
        and rows_rejected / rows_read > job.max_reject_fraction
    ):
        raise WriteRefused(
            f"{rows_rejected} of {rows_read} rows of {date} in {table} were rejected "
            f"({rows_rejected / rows_read:.1%}), more than max_reject_fraction={job.max_reject_fraction:g}: "
            "nothing was written (see the report's reject_reasons)"
        )


def write_results(
    io: DeltaIO,
    job: InferenceJobConfig,
    scored: DataFrame,
    rejects: DataFrame,
    lease: DateLease,
    report: RunReport,
) -> None:
    """Stage the output (Spark scores here), commit the rejects, then the output (module docstring)."""
    started = time.monotonic()
    staged = io.stage(scored, job.output_table, job.date_column, job.logical_date, job.run_id)
    report.timings_s["inference"] = round(time.monotonic() - started, 3)
    try:
        started = time.monotonic()
        lease.ensure_held()
        staged_rejects = io.stage(rejects, job.rejects_table, job.date_column, job.logical_date, job.run_id)
        report.rejects_version = io.commit(staged_rejects, rejects_mode(job), job.key_column, job.writer)
        lease.ensure_held()
        report.output_version = io.commit(staged, job.write_mode, job.key_column, job.writer)
        report.timings_s["commit"] = round(time.monotonic() - started, 3)
    except BaseException:
        io.discard(staged)
        raise
    if report.output_version is None:
        note = (
            f"the append of {job.writer} for {job.logical_date} was already committed (an earlier try): "
            "nothing was appended again"
        )
        log.warning(note)
        report.warnings.append(note)
