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
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from spark_jobs.contract import ERROR_PREFIX, EXCEPTION_LINE, JOB_ARG, InferenceJobConfig, RunReport
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
    """Read the date, split rows into scored and rejected, write both tables; fills ``report``."""
    from pyspark.sql import functions as F

    from spark_jobs.columns import check_settings, input_mapping, output_names
    from spark_jobs.delta_io import delta_io_for
    from spark_jobs.inference import prediction_columns, triton_predict_udf
    from spark_jobs.model_files import prepare_model
    from spark_jobs.triton_fleet import launch_servers, server_request, start_servers
    from spark_jobs.validation import REJECT_REASON, check_schema, with_reject_reason

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
    mapping = input_mapping(job, model)
    columns = tuple(column for _, column in mapping)
    names = output_names(job, model)
    read = io.read_date(job.input_table, job.date_column, job.logical_date, [job.key_column, *columns])
    report.input_version = read.version
    check_schema(read.df, job.input_table, job, model)

    # Launch the servers now, without waiting: they load the model while Spark reads and validates
    # the date (start_servers below waits for them). Not for a date without rows: nothing to score.
    started = time.monotonic()
    if not read.df.isEmpty():
        raise_if_canceled()
        launch_servers(spark, server_job)
    report.timings_s["servers_launch"] = round(time.monotonic() - started, 3)

    validated = with_reject_reason(read.df, job.key_column, columns, model).cache()
    try:
        started = time.monotonic()
        report.rows_read = validated.count()
        if not report.rows_read:  # an empty date is news: say it where people look
            warning = f"no input rows for {job.logical_date} in {job.input_table}"
            log.warning(warning)
            report.warnings.append(warning)
        reasons = validated.where(F.col(REJECT_REASON).isNotNull()).groupBy(REJECT_REASON).count().collect()
        report.reject_reasons = {r[REJECT_REASON]: r["count"] for r in reasons}
        if reasons:
            report.reject_samples = reject_samples(validated, job.key_column)
        to_score = report.rows_read - sum(report.reject_reasons.values())
        report.rows_to_score = to_score
        report.timings_s["read_and_validate"] = round(time.monotonic() - started, 3)
        if progress is not None:
            progress.inference_started(to_score)

        if to_score:
            raise_if_canceled()
            started = time.monotonic()
            report.servers = start_servers(spark, server_job)
            report.timings_s["servers_ready"] = round(time.monotonic() - started, 3)

        counter = progress.accumulator if progress is not None else None
        sender = progress.sender if progress is not None else None
        request = server_request(spark, server_job)
        predict = triton_predict_udf(
            model, request, job.batch_size, job.inference_timeout_s, counter, progress_sender=sender
        )
        # The prediction is computed once, in its own projection, and then split into its columns.
        predicted = validated.where(F.col(REJECT_REASON).isNull()).select(
            F.col(job.key_column), predict(*[F.col(c) for c in columns]).alias(PREDICTION)
        )
        scored = predicted.select(
            F.col(job.key_column),
            *prediction_columns(model, F.col(PREDICTION), names),
            F.lit(model.name).alias("model"),
            F.lit(job.run_id).alias("run_id"),
            F.current_timestamp().alias("scored_at"),
        )
        rejects = validated.where(F.col(REJECT_REASON).isNotNull()).select(
            F.col(job.key_column).cast("string").alias(job.key_column),
            F.col(REJECT_REASON).alias("reason"),
            F.to_json(F.struct(*[_preview(F.col(c), spec).alias(c) for spec, c in mapping]))
            .substr(1, REJECT_PREVIEW_CHARS)
            .alias("input_preview"),
            F.lit(job.run_id).alias("run_id"),
            F.current_timestamp().alias("rejected_at"),
        )
        # Two tables, two commits, each tagged with the run id: the order is the record. Output first:
        # Spark scores lazily inside that write, so a run that fails while scoring commits nothing to
        # either table. Rejects last: its commit is the run's final step, so the date's rejects coming
        # from a run (``io.date_written_by``) means that run's output was committed too. A crash between
        # the two leaves this run's output with an older run's rejects, and the tables disagree on the
        # run id until the next run of the date (an Airflow retry, a rerun) replaces both.
        started = time.monotonic()
        raise_if_canceled()
        report.output_version = io.replace_date(
            scored, job.output_table, job.date_column, job.logical_date, job.run_id
        )
        report.timings_s["inference_and_write"] = round(time.monotonic() - started, 3)
        report.rejects_version = io.replace_date(
            rejects, job.rejects_table, job.date_column, job.logical_date, job.run_id
        )
    finally:
        validated.unpersist()

    def written(table: str) -> int:
        return io.read_date(table, job.date_column, job.logical_date, [job.key_column]).df.count()

    report.rows_scored, report.rows_rejected = written(job.output_table), written(job.rejects_table)
    if report.rows_scored + report.rows_rejected != report.rows_read:
        raise RuntimeError(
            f"row counts do not add up for {job.logical_date}: read {report.rows_read}, "
            f"scored {report.rows_scored}, rejected {report.rows_rejected}"
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


REJECT_SAMPLE_KEYS = 5


def reject_samples(validated, key_column: str) -> dict[str, list[str | None]]:
    """Up to :data:`REJECT_SAMPLE_KEYS` keys per reject reason (the smallest), for the run page: a
    window over the rejected rows only, so a date of many rejects never collects them all."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from spark_jobs.validation import REJECT_REASON

    key = F.col(key_column).cast("string")
    rank = F.row_number().over(Window.partitionBy(REJECT_REASON).orderBy(key))
    rows = (
        validated.where(F.col(REJECT_REASON).isNotNull())
        .select(F.col(REJECT_REASON), key.alias("key"), rank.alias("rank"))
        .where(F.col("rank") <= REJECT_SAMPLE_KEYS)
        .collect()
    )
    samples: dict[str, list[str | None]] = {}
    for row in sorted(rows, key=lambda r: (r[REJECT_REASON], r["rank"])):
        samples.setdefault(row[REJECT_REASON], []).append(row["key"])
    return samples


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
            report.servers_stopped = stop_servers(spark, job)
        finally:
            report.timings_s["servers_stop"] = round(time.monotonic() - stop_started, 3)
            if not CANCEL_REQUESTED.is_set():  # a local cluster's first run only; a cancel must be quick
                dump_started = time.monotonic()
                if dump_executor_archive(spark):
                    report.timings_s["executor_archive"] = round(time.monotonic() - dump_started, 3)
            report.timings_s["total"] = round(time.monotonic() - started, 3)
            progress.stop(report.status.lower())
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

    from pyspark.sql import SparkSession

    spark = SparkSession.builder.appName(f"spark-triton-{job.run_id}").getOrCreate()
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
