"""Entrypoint of one batch-inference run: Delta in, Triton on every node, Delta out, servers always stopped.

Submitted by the Airflow operators (``spark-submit`` locally, ``spark_python_task`` on Databricks)
with a single ``--job '<InferenceJobConfig JSON>'`` argument. On failure it prints one line starting
with ``SPARK_TRITON_ERROR:`` so the operator can show the job's own error instead of a JVM stack.
Both, and the run report it writes, are :mod:`spark_jobs.contract`'s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from spark_jobs.contract import (
    APPEND,
    ERROR_PREFIX,
    EXCEPTION_LINE,
    JOB_ARG,
    MERGE,
    InferenceJobConfig,
    RunReport,
    bound_report,
)
from spark_jobs.executor_env import executor_env_conf
from spark_jobs.json_files import READABLE_MODE, driver_path, write_json_atomic

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger("spark_jobs.batch_inference")
REJECT_PREVIEW_CHARS = 1000
ERROR_PART_CHARS = 600
# Exceptions that only carry another one across a boundary (JVM, Python worker, Triton backend).
_WRAPPER_PREFIXES = ("Py4J", "PyTritonClient")
_WRAPPERS = ("PythonException", "SparkException", "TritonModelException")
_JVM_PACKAGES = ("org.apache.", "java.", "scala.")


def error_summary(exc: BaseException) -> str:
    """One line that says what went wrong, for the ``SPARK_TRITON_ERROR:`` line operators show.

    An error raised on an executor reaches the driver wrapped (Py4JJavaError around a
    PythonException around, say, the model's RuntimeError inside a Triton backend error), with
    the real cause many lines down. The line names the first and the innermost exceptions that
    are not mere wrappers, e.g. ``RuntimeError: model failed on row 7`` or
    ``TritonStartError: ... on host h exited before ready ... <- ValueError: bad option``.
    """
    text = f"{type(exc).__name__}: {exc}"
    first = text.splitlines()[0].strip()
    found = [line.strip() for line in text.splitlines() if EXCEPTION_LINE.match(line)]
    causes = list(dict.fromkeys(line for line in found if not _is_wrapper(line)))
    if not causes:
        return _one_line(first)
    if causes == [first]:  # not a wrapped error: its whole message is the summary
        return _one_line(text)
    parts = causes[:1] + causes[-1:] if len(causes) > 1 else causes
    return " <- ".join(_one_line(_unqualified(part)) for part in parts)


def _unqualified(line: str) -> str:
    """``spark_jobs.triton_node.TritonStartError: x`` -> ``TritonStartError: x``."""
    name, sep, message = line.partition(":")
    return name.rsplit(".", 1)[-1] + sep + message


def _is_wrapper(line: str) -> bool:
    qualified = line.split(":", 1)[0]
    name = qualified.rsplit(".", 1)[-1]
    return qualified.startswith(_JVM_PACKAGES) or name.startswith(_WRAPPER_PREFIXES) or name in _WRAPPERS


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= ERROR_PART_CHARS else text[: ERROR_PART_CHARS - 3] + "..."


class RunCanceled(SystemExit):
    """The run was asked to stop (SIGTERM from the backend's cancel); cleanup still runs."""


# Set by the SIGTERM handler; checked before each step that starts servers or commits output.
CANCEL_REQUESTED = threading.Event()
# Set (under the lock) once the run's cleanup starts: its stop stage must not be canceled too.
_CLEANING_UP = threading.Event()
# Set once the run may have started a server: only then does its cleanup run the stop stage, which
# needs executors (a run refused before, e.g. by another run's date lease, may have none: the other
# run's application holds the cluster's cores, and the stop stage would wait for it to end).
SERVERS_LAUNCHED = threading.Event()
_CANCEL_LOCK = threading.Lock()


def raise_if_canceled() -> None:
    if CANCEL_REQUESTED.is_set():
        raise RunCanceled("received SIGTERM: run canceled")


def begin_cleanup() -> None:
    with _CANCEL_LOCK:
        _CLEANING_UP.set()


def cancel_on_sigterm(spark) -> None:
    """SIGTERM cancels the run's Spark jobs from another thread; the main thread's Spark call then
    fails cleanly. Raising inside the handler instead would interrupt a py4j call halfway and
    desynchronise the gateway, and the ``finally`` could no longer stop the Triton servers.

    The canceling thread repeats until cleanup begins, because a job the main thread submits just
    after one ``cancelAllJobs`` would otherwise run to the end. A second SIGTERM (the backend's
    escalation) stops at once."""

    def cancel_until_cleanup() -> None:
        while True:
            with _CANCEL_LOCK:
                if _CLEANING_UP.is_set():
                    return
                spark.sparkContext.cancelAllJobs()
            _CLEANING_UP.wait(0.5)

    def handle(signum: int, _frame: Any) -> None:
        if CANCEL_REQUESTED.is_set():
            raise RunCanceled(f"received signal {signum} again: stopping now")
        CANCEL_REQUESTED.set()
        log.warning("received signal %s: canceling the run's Spark jobs", signum)
        threading.Thread(target=cancel_until_cleanup, daemon=True).start()

    signal.signal(signal.SIGTERM, handle)


def _raise_on_sigterm(signum: int, _frame: Any) -> None:
    raise RunCanceled(f"received signal {signum}: run canceled")


def score_date(spark, job: InferenceJobConfig, report: RunReport, progress=None) -> None:
    """Score one date and write its output and rejects, holding the date's lease while it does (a
    dry run writes nothing and takes none); fills ``report``."""
    from spark_jobs.columns import check_settings
    from spark_jobs.date_lease import DateLease
    from spark_jobs.delta_io import delta_io_for
    from spark_jobs.model_files import prepare_model

    io = delta_io_for(spark)
    report.delta_engine = io.name

    def column_types(names: list[str]) -> dict[str, Any]:
        schema = io.read_date(job.input_table, job.date_column, job.logical_date, names).df.schema
        return {field.name: field.dataType.jsonValue() for field in schema.fields}

    # An MLflow model: downloaded once here (its pinned version) and shipped to every node.
    prepared = prepare_model(spark, job, column_types)
    model, server_job = prepared.model, prepared.server_job
    report.model_version = prepared.version
    if prepared.download_s is not None:
        report.timings_s["model_download"] = prepared.download_s
    check_settings(job, model)  # the Airflow side checked these too; a job submitted by hand may not be
    if job.dry_run:
        _score_date(spark, job, report, progress, model, server_job, io, lease=None)
        return
    lease = DateLease.for_job(io, job).acquire(on_wait=raise_if_canceled)
    try:
        if lease.took_over is not None:
            report.warnings.append(f"took over the stale lease of the date from {lease.took_over.describe()}")
        if job.write_mode == APPEND and io.appended(job.output_table, job.writer, job.logical_date):
            note = (
                f"the append of {job.writer} for {job.logical_date} to {job.output_table} was already "
                "committed (an earlier try of this run): nothing was scored or written again"
            )
            log.warning(note)
            report.warnings.append(note)
            return
        _note_interrupted_run(io, job, report)
        _score_date(spark, job, report, progress, model, server_job, io, lease)
    finally:
        lease.release()


def _note_interrupted_run(io, job: InferenceJobConfig, report: RunReport) -> None:
    """Say so when the date's last run committed its rejects but not its output (it stopped between
    the two commits, ``spark_jobs.write_modes``): this run writes both again."""
    if job.write_mode == APPEND:
        return  # each run's own rows; its idempotent rejects append already repairs
    output_run = io.date_written_by(job.output_table, job.logical_date)
    rejects_run = io.date_written_by(job.rejects_table, job.logical_date)
    if rejects_run is not None and rejects_run != output_run:
        note = (
            f"run {rejects_run} of {job.logical_date} committed its rejects but not its output (it stopped "
            f"between the two commits; the output still holds run {output_run}'s rows): this run writes both"
        )
        log.warning(note)
        report.warnings.append(note)


def _score_date(
    spark,
    job: InferenceJobConfig,
    report: RunReport,
    progress,
    model,
    server_job: InferenceJobConfig,
    io,
    lease,
) -> None:
    """Read the date, split rows into scored and rejected, check, then write both tables (or, in a
    dry run, score a sample and write nothing). ``server_job`` is what the Triton servers load (an
    MLflow model's pinned copy, :func:`spark_jobs.model_files.prepare_model`)."""
    from pyspark.sql import functions as F

    from spark_jobs.batch_order import length_ordered
    from spark_jobs.columns import input_mapping, output_names
    from spark_jobs.inference import prediction_columns, triton_predict_udf
    from spark_jobs.reject_summary import summarize_rejects
    from spark_jobs.row_filter import filter_rows
    from spark_jobs.triton_fleet import launch_servers, server_request, start_servers
    from spark_jobs.validation import REJECT_DETAIL, REJECT_REASON, check_schema, with_reject_reason
    from spark_jobs.write_modes import check_before_commit, write_results

    mapping = input_mapping(job, model)
    columns = tuple(column for _, column in mapping)
    names = output_names(job, model)
    required = [job.key_column, *columns, *job.keep_columns]
    read = io.read_date(job.input_table, job.date_column, job.logical_date, required)
    report.input_version = read.version
    selected = filter_rows(spark, read.df, job.where, job.input_table)
    check_schema(selected, job.input_table, job, model)

    # Launch the servers now, without waiting: they load the model while Spark reads and validates
    # the date (start_servers below waits for them). Not for a date without rows: nothing to score.
    started = time.monotonic()
    if not selected.isEmpty():
        raise_if_canceled()
        SERVERS_LAUNCHED.set()
        launch_servers(spark, server_job)
    report.timings_s["servers_launch"] = round(time.monotonic() - started, 3)

    validated = with_reject_reason(selected, job.key_column, columns, model).cache()
    try:
        started = time.monotonic()
        report.rows_read = validated.count()
        if not report.rows_read:  # an empty date is news: say it where people look
            where = f" matching where={job.where!r}" if job.where else ""
            warning = f"no input rows{where} for {job.logical_date} in {job.input_table}"
            log.warning(warning)
            report.warnings.append(warning)
        report.reject_reasons, report.reject_samples = summarize_rejects(validated, job.key_column)
        rejected = sum(report.reject_reasons.values())
        to_score = report.rows_read - rejected
        report.rows_to_score = to_score
        report.timings_s["read_and_validate"] = round(time.monotonic() - started, 3)
        check_before_commit(job, report.rows_read, rejected)
        valid = validated.where(F.col(REJECT_REASON).isNull())
        if job.dry_run:
            valid = valid.orderBy(job.key_column).limit(job.dry_run_rows or 0)
            to_score = min(to_score, job.dry_run_rows or 0)
        if progress is not None:
            progress.inference_started(to_score)

        if to_score:
            raise_if_canceled()
            started = time.monotonic()
            SERVERS_LAUNCHED.set()
            report.servers = start_servers(spark, server_job)
            report.timings_s["servers_ready"] = round(time.monotonic() - started, 3)

        counter = progress.accumulator if progress is not None else None
        sender = progress.sender if progress is not None else None
        request = server_request(spark, server_job)
        predict = triton_predict_udf(
            model, request, job.batch_size, job.inference_timeout_s, counter, progress_sender=sender
        )
        # The prediction is computed once, in its own projection, and then split into its columns.
        kept = [F.col(c) for c in job.keep_columns]
        # Shortest rows first within each partition (spark_jobs.batch_order); a dry run's sample
        # keeps its key order, which is how the report shows it.
        ordered = valid if job.dry_run else length_ordered(valid, columns)
        predicted = ordered.select(
            F.col(job.key_column), *kept, predict(*[F.col(c) for c in columns]).alias(PREDICTION)
        )
        scored = predicted.select(
            F.col(job.key_column),
            *kept,
            *prediction_columns(model, F.col(PREDICTION), names),
            F.lit(model.name).alias("model"),
            F.lit(job.run_id).alias("run_id"),
            F.current_timestamp().alias("scored_at"),
        )
        if job.dry_run:
            started = time.monotonic()
            report.samples = [row.asDict(recursive=True) for row in scored.drop("run_id").collect()]
            report.rows_scored = len(report.samples)
            report.rows_rejected = rejected
            report.timings_s["inference"] = round(time.monotonic() - started, 3)
            return
        rejects = validated.where(F.col(REJECT_REASON).isNotNull()).select(
            F.col(job.key_column).cast("string").alias(job.key_column),
            F.col(REJECT_REASON).alias("reason"),
            F.col(REJECT_DETAIL).alias("detail"),
            F.to_json(F.struct(*[_preview(F.col(c), spec).alias(c) for spec, c in mapping]))
            .substr(1, REJECT_PREVIEW_CHARS)
            .alias("input_preview"),
            F.lit(job.run_id).alias("run_id"),
            F.current_timestamp().alias("rejected_at"),
        )
        raise_if_canceled()
        started = time.monotonic()
        write_results(io, job, scored, rejects, lease, report)
        report.timings_s["inference_and_write"] = round(time.monotonic() - started, 3)
    finally:
        validated.unpersist()

    if report.output_version is None:  # an append an earlier try had committed: not this run's rows
        return

    def written(table: str) -> int:
        rows = io.read_date(table, job.date_column, job.logical_date, [job.key_column, "run_id"]).df
        return rows.where(F.col("run_id") == job.run_id).count()

    report.rows_scored, report.rows_rejected = written(job.output_table), written(job.rejects_table)
    if job.write_mode == MERGE and report.rows_scored > to_score:
        raise RuntimeError(
            f"merge into {job.output_table} updated {report.rows_scored} rows for {to_score} scored keys: "
            f"the table holds some keys ({job.key_column}) on several rows, and MERGE updated each of them; "
            "write_mode='merge' needs one row per key"
        )
    if report.rows_scored + report.rows_rejected != report.rows_read:
        raise RuntimeError(
            f"row counts do not add up for {job.logical_date}: read {report.rows_read}, "
            f"scored {report.rows_scored}, rejected {report.rows_rejected} (by run {job.run_id})"
        )
    seconds = report.timings_s.get("inference_and_write") or 0
    report.rows_per_s = round(report.rows_scored / seconds, 1) if seconds else None


# The UDF's result column before it is split into one column per output.
PREDICTION = "__prediction"


def _preview(column, spec):
    """A rejected row's input as text: binary input (an encoded image) as its size, not its bytes."""
    from pyspark.sql import functions as F

    if spec.is_binary:
        return F.concat(F.lit("<"), F.octet_length(column).cast("string"), F.lit(" bytes>"))
    return column.cast("string")


class JobTimeout(TimeoutError):
    """The whole job ran past ``job_timeout_s``; its Spark jobs were canceled."""


@contextlib.contextmanager
def job_deadline(spark, timeout_s: float | None) -> Iterator[None]:
    """Cancel every Spark job once ``timeout_s`` has passed, so a stuck stage ends in cleanup, not a hang."""
    if not timeout_s:
        yield
        return
    expired = threading.Event()

    def cancel() -> None:
        expired.set()
        log.error("job ran past job_timeout_s=%s; canceling its Spark jobs", timeout_s)
        spark.sparkContext.cancelAllJobs()

    timer = threading.Timer(timeout_s, cancel)
    timer.daemon = True
    timer.start()
    try:
        yield
    except Exception as exc:
        if expired.is_set():
            raise JobTimeout(f"job ran past job_timeout_s={timeout_s:g}s and was canceled") from exc
        raise
    finally:
        timer.cancel()
    if expired.is_set():
        raise JobTimeout(f"job ran past job_timeout_s={timeout_s:g}s and was canceled")


def run(spark, job: InferenceJobConfig) -> RunReport:
    """Score one date; whatever happens, stop every server this run started and write the report."""
    from spark_jobs.class_archive import dump_executor_archive
    from spark_jobs.progress import ProgressReporter
    from spark_jobs.triton_fleet import stop_servers

    started = time.monotonic()
    report = RunReport.for_job(job)
    SERVERS_LAUNCHED.clear()
    progress = ProgressReporter(spark, job.report_path, report=report).start()
    try:
        with job_deadline(spark, job.job_timeout_s):
            score_date(spark, job, report, progress)
        report.status = "SUCCESS"
    except BaseException as exc:
        canceled = isinstance(exc, RunCanceled) or CANCEL_REQUESTED.is_set()
        report.status = "CANCELED" if canceled else "FAILED"
        if canceled and not isinstance(exc, RunCanceled):
            # The canceled Spark job's own error is noise next to why it was canceled.
            report.error = "RunCanceled: received SIGTERM: run canceled"
            raise RunCanceled("received SIGTERM: run canceled") from exc
        report.error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        begin_cleanup()
        progress.phase = "stopping servers"
        stop_started = time.monotonic()
        try:
            if SERVERS_LAUNCHED.is_set():
                report.servers_stopped = stop_servers(spark, job)
        finally:
            report.timings_s["servers_stop"] = round(time.monotonic() - stop_started, 3)
            # A local cluster's first run only (a cancel must be quick, a run without executors can't).
            if SERVERS_LAUNCHED.is_set() and not CANCEL_REQUESTED.is_set():
                dump_started = time.monotonic()
                if dump_executor_archive(spark):
                    report.timings_s["executor_archive"] = round(time.monotonic() - dump_started, 3)
            report.timings_s["total"] = round(time.monotonic() - started, 3)
            progress.stop(report.status.lower())
            bound_report(report)
            if job.report_path:
                write_report(job.report_path, report)
    return report


def write_report(path: str, report: RunReport) -> None:
    write_json_atomic(driver_path(path), report.to_dict(), mode=READABLE_MODE)  # no secrets; read by people
    with contextlib.suppress(Exception):  # the summary is a convenience; the JSON report is the record
        from spark_jobs.progress import write_summary

        write_summary(path, report)


# The validated input is cached after a shuffle (duplicate keys are found with a window by key).
# Spark keeps a cached plan's partitioning (200 shuffle partitions) unless this is on, so a date of
# a few thousand rows ran 200 near-empty tasks per stage: measured 34.9 s vs 1.5 s for 40 rows on
# two cores. With it, adaptive execution coalesces them like any other shuffle.
COALESCE_CACHED = "spark.sql.optimizer.canChangeCachedPlanOutputPartitioning"
# Adaptive execution sizes coalesced partitions as total / default parallelism (the task slots), but
# never below this, 1 MB by default. Scoring costs CPU or GPU per row, not per byte: a 20,000-row
# date is under 2 MB after validation, so it became one partition, and one task scored it while the
# other slot idled (benchmarks.scale: 70.8 rows/s at 20k rows, 119.1 at 200k, which had 2 tasks).
COALESCE_MIN_SIZE = "spark.sql.adaptive.coalescePartitions.minPartitionSize"
COALESCE_SETTINGS = {COALESCE_CACHED: "true", COALESCE_MIN_SIZE: "1KB"}


def let_adaptive_execution_coalesce_cached_shuffles(spark: SparkSession) -> None:
    """Apply :data:`COALESCE_SETTINGS`, each unless the cluster's or the user's Spark conf sets it."""
    conf = spark.sparkContext.getConf()
    for key, value in COALESCE_SETTINGS.items():
        if not conf.contains(key):
            spark.conf.set(key, value)


def spark_session(job: InferenceJobConfig) -> SparkSession:
    """The job's session, named after its run; the executors get the variables the backend named
    in ``SPARK_TRITON_EXECUTOR_ENV`` (the spark-submit backend's ``spark_env_vars``:
    :mod:`spark_jobs.executor_env`)."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(f"spark-triton-{job.run_id}")
    for key, value in executor_env_conf(os.environ).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(description="Batch inference with one Triton server per node")
    parser.add_argument(JOB_ARG, required=True, dest="job", help="InferenceJobConfig as JSON")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        job = InferenceJobConfig.from_json(args.job)
    except Exception as exc:
        print(f"{ERROR_PREFIX} {error_summary(exc)}", file=sys.stderr, flush=True)
        return 2

    spark = spark_session(job)
    let_adaptive_execution_coalesce_cached_shuffles(spark)
    cancel_on_sigterm(spark)
    try:
        report = run(spark, job)
    except BaseException as exc:
        print(f"{ERROR_PREFIX} {error_summary(exc)}", file=sys.stderr, flush=True)
        return 1
    finally:
        with contextlib.suppress(Exception):
            spark.stop()
    counts = {
        "rows_read": report.rows_read,
        "rows_scored": report.rows_scored,
        "rows_rejected": report.rows_rejected,
    }
    log.info("run report: %s", json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
