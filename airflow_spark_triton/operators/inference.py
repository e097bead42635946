"""Run batch inference for one logical date on an existing GPU cluster.

Resumable: the run id is kept in the task state store while the run is under way, so a retry after a
worker crash (kill -9, OOM) reconnects to the run instead of starting a second one, and a retry after
a run that finished while its task was dead just collects its report. Once the task has the report,
the id is dropped from the store: a cleared or reprocessed task (``airflow tasks clear``,
``backfill create --reprocess-behavior completed``) scores its date again.

Cancel only what must be: the wait rides out API incidents (the backend retries 429, 5xx, connection
errors and timeouts with back-off until the task's deadline, ``execution_timeout``), and when the
task ends before its run (``execution_timeout``, a kill, the trigger's timeout) the run is canceled;
the job itself stops its servers. A wait that fails for another reason (an error the API keeps
answering) leaves a healthy run going: a retry of the task reconnects to it, the delete task
cancels it, and its ``timeout_seconds`` ends it.

Which date a run scores: ``logical_date`` defaults to the DAG run's logical date, and for a run that
has none (``airflow dags trigger`` without ``--logical-date``) to the day before the run was triggered.
The project's nightly DAGs use a ``CronDataIntervalTimetable``, whose run that fires at 00:00 on day D
has the logical date D-1, the last complete day; a backfill from A to B scores A..B.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR, TriggerFailureReason
from airflow.sdk.bases.resumablejobmixin import ResumableJobMixin
from airflow.sdk.bases.xcom import BaseXCom
from airflow.sdk.configuration import conf
from airflow.sdk.exceptions import AirflowSkipException

from airflow_spark_triton.assets import table_uri, unity_catalog_name
from airflow_spark_triton.backends.base import BackendConfigError, RunError, RunLifecycle, RunStatus
from airflow_spark_triton.backends.registry import DEFAULT_CONN_ID
from airflow_spark_triton.lineage import inference_lineage
from airflow_spark_triton.links import (
    REPORT_SUMMARY_XCOM_KEY,
    RUN_PAGE_XCOM_KEY,
    RUN_XCOM_KEY,
    InferenceReportLink,
    InferenceRunLink,
)
from airflow_spark_triton.operators.backend_cache import CachedBackend
from airflow_spark_triton.operators.trigger_params import TriggerParamsGuard
from airflow_spark_triton.preflight import PreflightError, preflight
from airflow_spark_triton.progress_format import format_progress
from airflow_spark_triton.settings import coerce_fields, coerce_mapping
from airflow_spark_triton.triggers.run_status import RunStatusTrigger
from airflow_spark_triton.ui.urls import REPORT_PAGE, RUN_PAGE, page_url
from spark_jobs.contract import (
    InferenceJobConfig,
    JobConfigError,
    RunReport,
    bound_report,
    default_rejects_table,
)
from spark_jobs.models.mlflow_pyfunc import MODELS_SCHEME
from spark_jobs.models.mlflow_pyfunc import parse_reference as parse_mlflow_reference

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_spark_triton.backends.base import GpuSparkBackend


def scored_date(context: Context) -> str:
    """The run's logical date; for a run without one (a manual trigger without a date, which Airflow 3
    gives neither ``ds`` nor a data interval), the last complete day before it was triggered."""
    logical_date = context.get("logical_date")
    if logical_date is not None:
        return logical_date.strftime("%Y-%m-%d")
    dag_run = context.get("dag_run")
    run_after = getattr(dag_run, "run_after", None) or dt.datetime.now(dt.UTC)
    return (run_after.date() - dt.timedelta(days=1)).isoformat()


# The operator's arguments that are the job's settings, under the same names (spark_jobs.contract).
JOB_SETTINGS = (
    "input_table", "output_table", "rejects_table", "model", "logical_date", "key_column", "input_columns",
    "date_column", "output_column", "output_columns", "model_options", "batch_size", "server_ready_timeout_s",
    "inference_timeout_s", "job_timeout_s", "min_rows", "write_mode", "keep_columns", "where",
    "max_reject_fraction", "dry_run", "limit", "lease_wait_s", "lease_ttl_s",
)  # fmt: skip


# The task state store's record of the model version this DAG run serves ({"model", "version"}).
MODEL_VERSION_KEY = "model_version"


# Margins of the limit the platform enforces on a run beyond the task's own limits: Airflow's
# execution_timeout, which cancels the run and fails with its own message, comes first while a worker
# is alive; the job's job_timeout_s gets time for a jobs compute cluster to start and for cleanup.
EXECUTION_TIMEOUT_MARGIN_S = 60.0
JOB_TIMEOUT_MARGIN_S = 900.0


def write_id(context: Context) -> str:
    """Who writes, as the job's ``write_id``: the task instance, the same for each of its tries (an
    ``append`` a retry finds committed is not repeated; a date lease names the DAG run holding it)."""
    ti = context["ti"]
    return f"{ti.dag_id}/{ti.task_id}/{ti.run_id}/{getattr(ti, 'map_index', -1)}"


def idempotency_token(context: Context) -> str:
    """Same try of the same task instance → same token, so a re-sent submit never starts a second run."""
    ti = context["ti"]
    return task_try_token(ti.dag_id, ti.task_id, ti.run_id, getattr(ti, "map_index", -1), ti.try_number)


def task_try_token(dag_id: str, task_id: str, run_id: str, map_index: int, try_number: int) -> str:
    """The token of one try of a task instance; the run pages check a run's against its task's."""
    raw = f"{dag_id}/{task_id}/{run_id}/{map_index}/{try_number}"
    return hashlib.sha256(raw.encode()).hexdigest()[:48]


class TritonInferenceOperator(CachedBackend, TriggerParamsGuard, ResumableJobMixin, BaseOperator):
    """Score one date of a Delta table with a model served by one Triton server per node.

    :param cluster_id: the cluster to run on, usually ``create_task.output`` (templated).
    :param input_table: Delta table to read; rows of ``logical_date`` in ``date_column`` (templated).
    :param output_table: Delta table whose ``logical_date`` partition is replaced atomically (templated).
    :param rejects_table: Delta table for rows that cannot be scored, with the reason; defaults to
        ``<output_table>_rejects`` (templated).
    :param model: ``hf:<task>:<directory or hub id>`` (a Hugging Face model served through its task),
        an MLflow model (``models:/<name>@<alias>``, ``models:/<name>/<version>``, ``runs:/<run
        id>/<path>`` or a model directory; an alias is pinned to its version once per DAG run), or
        ``module:attribute`` of a ``spark_jobs.models.ServedModel`` (templated); see
        ``docs/serving-models.md``.
    :param logical_date: the date to score, ``YYYY-MM-DD`` (templated); defaults to the run's logical
        date (``{{ ds }}``: the day before the fire time under the nightly DAGs'
        ``CronDataIntervalTimetable``, the named dates in a backfill), or for a run without one, the
        day before it was triggered.
    :param min_rows: fail the run, before anything is written, when the date has fewer input rows
        than this (default 0: an empty date succeeds, with a warning in the log and the report).
    :param batch_size: rows per ``predict_batch_udf`` batch sent to Triton.
    :param key_column: unique row key, carried into output and rejects.
    :param input_columns: columns fed to the model's inputs, in order, or ``{model input: column}``;
        by default each input reads the column of its own name (``text`` for the text models, an
        MLflow signature's column names).
    :param date_column: the date column of the input, DATE, TIMESTAMP (the UTC day) or ``YYYY-MM-DD``
        string (and the partition column of the outputs).
    :param output_column: the output column of a single-output model (default: the output's name).
    :param output_columns: ``{model output: column}`` renames outputs; each output lands in a column of
        its own, named after the output unless renamed.
    :param model_options: passed to the model's loader on each node (templated); an ``hf:`` model
        takes its task's options (``max_new_tokens``, ``num_beams`` ...), checked before any cluster.
    :param server_ready_timeout_s: how long the job waits for every node's Triton server to be ready.
    :param inference_timeout_s: Triton client timeout per request (and for the client to connect).
    :param job_timeout_s: the job cancels its own Spark jobs and cleans up after this many seconds;
        set it below ``execution_timeout`` so the job's report says what timed out.
    :param write_mode: ``replace_date`` (the date's partition holds this run's rows), ``append`` (one
        commit, idempotent per task instance: a retry does not duplicate rows) or ``merge`` (Delta MERGE
        on ``key_column``: update scored keys, insert new ones) (templated).
    :param keep_columns: input columns copied to the output next to the key (templated).
    :param where: a Spark SQL predicate over the input's columns selecting the rows to score, e.g.
        ``"lang = 'en'"`` (templated); checked by the job to be data: built-in functions only, no
        subqueries (:mod:`spark_jobs.row_filter`).
    :param max_reject_fraction: fail the run, before anything is written, when more than this share
        of the date's rows is rejected (templated; None: no limit).
    :param dry_run: score ``limit`` rows (default 100), write nothing, and return the report with up
        to 10 sample rows in ``samples``; the task then ends skipped, so no asset event announces a
        write that did not happen (templated).
    :param limit: rows a dry run scores (only with ``dry_run``; templated).
    :param lease_wait_s: another run holding the date's lease (same output table and date) fails this
        one at once (0, default), or after waiting this many seconds for it.
    :param lease_ttl_s: a lease its run stopped renewing (a dead driver on another host) is taken
        over after this many seconds.
    :param conn_id: the backend's connection (type ``databricks`` or ``spark_triton_local``; templated).
    :param deferrable: wait in the triggerer instead of holding a worker slot.
    :param poll_interval_s: seconds between status checks; progress is logged at each one.

    Trigger params: ``model``, ``model_options`` and ``conn_id`` values that a run's conf changed
    from what the DAG sets must pass the deployment's ``[spark_triton]`` allow-lists
    (:mod:`airflow_spark_triton.trigger_policy`); a refusal fails the task before anything starts.

    Assets: pass ``outlets=[delta_table_asset(...)]`` (see :mod:`airflow_spark_triton.assets`); on
    success every ``Asset`` outlet's event gets ``extra`` = the table actually written, the date, the
    Delta versions and the counts. Extra links: the run page and the report summary.
    """

    template_fields: Sequence[str] = (
        "cluster_id",
        "input_table",
        "output_table",
        "rejects_table",
        "model",
        "logical_date",
        "min_rows",
        "model_options",
        "batch_size",
        "write_mode",
        "keep_columns",
        "where",
        "max_reject_fraction",
        "dry_run",
        "limit",
        "conn_id",
    )
    template_fields_renderers = {"model_options": "json"}
    trigger_checked_fields = {"model": "model", "model_options": "model_options", "conn_id": "conn_id"}
    ui_color = "#e6e6fa"
    external_id_key = "inference_run_id"
    operator_extra_links = (InferenceRunLink(), InferenceReportLink())

    def __init__(
        self,
        *,
        cluster_id: str,
        input_table: str,
        output_table: str,
        model: str,
        rejects_table: str | None = None,
        logical_date: str | None = None,
        min_rows: int = 0,
        batch_size: int = 64,
        key_column: str = "id",
        input_columns: Sequence[str] | Mapping[str, str] = (),
        date_column: str = "date",
        output_column: str | None = None,
        output_columns: Mapping[str, str] | None = None,
        model_options: dict[str, Any] | None = None,
        server_ready_timeout_s: float = 180.0,
        inference_timeout_s: float = 300.0,
        job_timeout_s: float | None = None,
        write_mode: str = "replace_date",
        keep_columns: Sequence[str] = (),
        where: str | None = None,
        max_reject_fraction: float | None = None,
        dry_run: bool = False,
        limit: int | None = None,
        lease_wait_s: float = 0.0,
        lease_ttl_s: float = 300.0,
        conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval_s: float = 5.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.cluster_id, self.conn_id = cluster_id, conn_id
        self.deferrable, self.poll_interval_s, self.min_rows = deferrable, poll_interval_s, min_rows
        # The job's settings (JOB_SETTINGS), kept as given: templates render them to text and
        # job_config() coerces each to its type at execute time.
        self.input_table, self.output_table, self.rejects_table = input_table, output_table, rejects_table
        self.model, self.model_options, self.batch_size = model, model_options or {}, batch_size
        self.logical_date, self.date_column, self.key_column = logical_date, date_column, key_column
        self.input_columns = (
            dict(input_columns) if isinstance(input_columns, Mapping) else tuple(input_columns)
        )
        self.output_column, self.output_columns = output_column, dict(output_columns or {})
        self.server_ready_timeout_s, self.inference_timeout_s = server_ready_timeout_s, inference_timeout_s
        self.job_timeout_s = job_timeout_s
        self.write_mode, self.keep_columns, self.where = write_mode, keep_columns, where
        self.max_reject_fraction, self.dry_run, self.limit = max_reject_fraction, dry_run, limit
        self.lease_wait_s, self.lease_ttl_s = lease_wait_s, lease_ttl_s
        self._run_id: str | None = None
        self._model_version: str | None = None  # a models:/ reference's version, pinned per DAG run

    def job_config(self, settings: Mapping[str, Any] | None = None) -> InferenceJobConfig:
        """The job's settings (this task's, or ``settings`` by the same names), each coerced to its
        declared type (a rendered template is text)."""
        values = (
            dict(settings) if settings is not None else {name: getattr(self, name) for name in JOB_SETTINGS}
        )
        values["rejects_table"] = values.get("rejects_table") or None
        values["model_options"] = coerce_mapping(
            "model_options", values.get("model_options"), label="job setting"
        )
        if settings is None:
            values["model_version"] = self._model_version
        return InferenceJobConfig(
            **coerce_fields(InferenceJobConfig, values, label="job setting", error=JobConfigError)
        )

    def check_before_cluster(self, context: Context, backend_for: Callable[[str], GpuSparkBackend]) -> None:
        """The pre-flight checks of this task's job, run by the create task that sets up its cluster
        (``backend_for``: that task's backend of a connection id).

        This task's templates are rendered here with the create task's context (the same DAG run and
        params), and what the run's conf set is held to the trigger-param allow-lists first, as this
        task's own rendering would: a refused ``model`` is never resolved (imported) nor its
        directory read. A setting that cannot be rendered yet (one reading an XCom this run has not
        pushed) leaves the checks to this task, which runs them again before it submits.
        """
        env = self.get_template_env()
        templates = {name: getattr(self, name) for name in self.trigger_checked_fields}
        try:
            rendered = {
                name: self.render_template(getattr(self, name), context, env) if name in self.template_fields
                else getattr(self, name)
                for name in (*JOB_SETTINGS, "conn_id")
            }  # fmt: skip
        except Exception as exc:
            self.log.info(
                "Pre-flight of %s left to that task: its settings do not render yet (%s)", self.task_id, exc
            )
            return
        self.check_trigger_params(context, templates, rendered, env)
        conn_id = str(rendered.pop("conn_id"))
        rendered["logical_date"] = rendered.get("logical_date") or scored_date(context)
        preflight(self.job_config(rendered), backend_for(conn_id))

    def execute(self, context: Context) -> dict[str, Any]:
        self.logical_date = self.logical_date or scored_date(context)
        # Every setting is checked (and a rendered number coerced) before anything starts.
        self.job_config()
        self._warn_if_day_not_over(context)
        self._pin_model_version(context)
        self._push_page_links(context)
        report = self.execute_resumable(context)
        return self._complete(context, report)

    def _pin_model_version(self, context: Context) -> None:
        """Resolve a ``models:/<name>@<alias>`` reference to its version once per DAG run, kept in the
        task state store: every try of this task, a clear and a reprocess of this run serve that
        version, whatever the alias names by then; the next DAG run resolves the alias again (how
        a promotion reaches the next nightly run). An explicit version is checked and kept too."""
        reference = str(self.model)
        if not reference.startswith(MODELS_SCHEME):
            return
        store = context.get("task_state_store")
        pinned = store.get(MODEL_VERSION_KEY) if store is not None else None
        if isinstance(pinned, dict) and pinned.get("model") == reference and pinned.get("version"):
            self._model_version = str(pinned["version"])
            self.log.info(
                "Model %s: version %s, pinned at this run's first try", reference, pinned["version"]
            )
            return
        try:
            version = self.backend.model_registry().pin(parse_mlflow_reference(reference)).version
        except (ValueError, BackendConfigError) as exc:
            raise PreflightError(f"job setting 'model': {exc}") from exc
        self._model_version = version
        if store is not None:
            store.set(MODEL_VERSION_KEY, {"model": reference, "version": version})
        self.log.info("Model %s: version %s, pinned for this DAG run", reference, version)

    def _complete(self, context: Context, report: RunReport) -> dict[str, Any]:
        """The run is over and its report is in hand: check the floor, forget the run id, annotate.
        Returns the report as plain JSON values: the task's XCom, which users read."""
        store = context.get("task_state_store")
        if store is not None:
            # A later try of this task instance is a clear or a reprocess: it must score again.
            store.delete(self.external_id_key)
        self._model_version = report.model_version or self._model_version  # for lineage, after a deferral
        self._check_rows(report)
        result = bound_report(report).to_dict()
        if report.dry_run:
            # A dry run wrote nothing: a success would send the outlets' asset events (consumers would
            # read a date that did not change), so the task ends skipped, its report in XCom.
            ti = context.get("ti")
            if ti is not None:
                ti.xcom_push(key=BaseXCom.XCOM_RETURN_KEY, value=result)
            raise AirflowSkipException(
                f"dry run of {report.logical_date}: scored {report.rows_scored} row(s), wrote nothing; "
                f"{len(report.samples)} sample(s) in the task's XCom"
            )
        self._annotate_outlets(context, report)
        return result

    def _warn_if_day_not_over(self, context: Context) -> None:
        """A zero-width data interval (``CronTriggerTimetable``) makes ``logical_date`` the day that
        has just begun: say so, since such a run scores an incomplete (usually empty) day."""
        try:
            day = dt.date.fromisoformat(str(self.logical_date))
        except ValueError:
            return  # job_config() names the bad value
        if day >= dt.datetime.now(dt.UTC).date():
            self.log.warning(
                "Scoring %s, a day that has not ended yet (data interval %s - %s). A schedule whose runs "
                "fire at the start of the day they score (CronTriggerTimetable, e.g. schedule='@daily') "
                "scores an incomplete day; use CronDataIntervalTimetable or set logical_date.",
                day, context.get("data_interval_start"), context.get("data_interval_end"),
            )  # fmt: skip

    def _check_rows(self, report: RunReport) -> None:
        """An empty input date is news: a warning in the task log (the job failed the run below
        ``min_rows``, before it wrote anything), as in the report's ``warnings``."""
        date, table = report.logical_date or self.logical_date, self.input_table
        if report.rows_read == 0:
            self.log.warning("No input rows for %s in %s: nothing was scored", date, table)
        for warning in report.warnings:
            self.log.warning("Run %s: %s", report.run_id, warning)

    def run_time_limit_s(self, job: InferenceJobConfig) -> float | None:
        """The run's limit on the platform's side, from ``execution_timeout`` and ``job_timeout_s``
        (each plus its margin, the smaller wins); None when the task sets neither."""
        limits = []
        if self.execution_timeout is not None:
            limits.append(self.execution_timeout.total_seconds() + EXECUTION_TIMEOUT_MARGIN_S)
        if job.job_timeout_s:
            limits.append(float(job.job_timeout_s) + JOB_TIMEOUT_MARGIN_S)
        return min(limits) if limits else None

    def submit_job(self, context: Context) -> str:
        job = self.job_config().replace(write_id=write_id(context))
        backend = self.backend
        preflight(job, backend)  # the create task checked too; the table may have changed since
        self._run_id = backend.submit_job(
            str(self.cluster_id), job, idempotency_token(context), time_limit_s=self.run_time_limit_s(job)
        )
        self.log.info(
            "Submitted inference run %s on cluster %s for %s", self._run_id, self.cluster_id, job.logical_date
        )
        return self._run_id

    def get_job_status(self, external_id: Any, context: Context) -> str:
        return self.backend.get_run_status(str(external_id)).state.value

    def is_job_active(self, status: str) -> bool:
        return not RunLifecycle(status).is_terminal

    def is_job_succeeded(self, status: str) -> bool:
        return status == RunLifecycle.SUCCESS.value

    def poll_until_complete(self, external_id: Any, context: Context) -> RunReport:
        self._run_id = str(external_id)
        self._push_links(context, self._run_id)
        until = self._deadline(context)
        if self.deferrable:
            self.defer(
                trigger=RunStatusTrigger(self.conn_id, self._run_id, self.poll_interval_s),
                method_name="execute_complete",
                timeout=self._time_left(context),
            )
        backend = self.backend
        try:
            status = backend.poll_run_status(self._run_id, until)
            while not status.state.is_terminal:
                time.sleep(self.poll_interval_s)
                status = backend.poll_run_status(self._run_id, until)
                self._log_progress(backend, self._run_id)
        except Exception:
            # The backend rode out what it could until the deadline: at the deadline the task's time
            # is up (cancel, as execution_timeout would); before it, the run is healthy for all we know.
            if until is not None and time.time() >= until:
                self.log.warning("Run %s outlived this task's deadline; canceling it", self._run_id)
                self._cancel_quietly()
            else:
                self._leave_running(self._run_id)
            raise
        except BaseException:
            # execution_timeout (AirflowTaskTimeout), SIGTERM (AirflowTaskTerminated), an interrupt:
            # the task ends before its run, so the run must not go on on its own.
            self.log.warning("Stopped waiting for run %s; canceling it", self._run_id)
            self._cancel_quietly()
            raise
        return self._finish(status)

    def _leave_running(self, run_id: str | None) -> None:
        self.log.warning(
            "Could not follow run %s; it is left running: a retry of this task reconnects to it, the "
            "cluster's delete task cancels it, and its time limit ends it",
            run_id,
        )

    def _time_left(self, context: Context) -> dt.timedelta | None:
        """What remains of ``execution_timeout``: Airflow applies no timeout to a deferral by itself
        (measured: a deferred run outlived a 45 s execution_timeout and succeeded after 104 s)."""
        if self.execution_timeout is None:
            return None
        started = getattr(context.get("ti"), "start_date", None)
        elapsed = dt.datetime.now(dt.UTC) - started if started else dt.timedelta(0)
        return max(self.execution_timeout - elapsed, dt.timedelta(seconds=1))

    def _deadline(self, context: Context) -> float | None:
        """The task's deadline as epoch seconds (None without ``execution_timeout``): the sync wait
        rides out API incidents until then."""
        left = self._time_left(context)
        return None if left is None else time.time() + left.total_seconds()

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """A deferral that ends in failure comes back as ``__fail__`` without calling this operator.
        Its timeout (the task's ``execution_timeout``) cancels the run, which the trigger does not do
        then; a trigger error (the API kept answering an error the trigger could not ride out)
        leaves the run going, as a failed sync wait does."""
        if next_method == TRIGGER_FAIL_REPR:
            store = context.get("task_state_store")
            self._run_id = self._run_id or (store.get(self.external_id_key) if store is not None else None)
            error = (next_kwargs or {}).get("error")
            if error == TriggerFailureReason.TRIGGER_TIMEOUT:
                self.log.warning("Waiting for run %s timed out (%s): canceling it", self._run_id, error)
                self._cancel_quietly()
            else:
                self._leave_running(self._run_id)
        return super().resume_execution(next_method, next_kwargs, context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        return self._complete(context, self._finish(RunStatus.from_dict(event)))

    # -- links, progress, assets, lineage ------------------------------------------------------

    def _push_page_links(self, context: Context) -> None:
        """Both extra links, from the task's start: the run pages in the Airflow UI (the provider's
        plugin), which say what there is to see yet. Never lets a link failure fail the run."""
        ti = context.get("ti")
        if ti is None:
            return
        try:
            base_url = conf.get("api", "base_url", fallback=None)
            where = (ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", -1))
            ti.xcom_push(key=RUN_PAGE_XCOM_KEY, value=page_url(RUN_PAGE, *where, base_url=base_url))
            ti.xcom_push(key=REPORT_SUMMARY_XCOM_KEY, value=page_url(REPORT_PAGE, *where, base_url=base_url))
        except Exception:
            self.log.warning("Could not record the run page links", exc_info=True)

    def _push_links(self, context: Context, run_id: str) -> None:
        """The run the pages show; on a backend with run pages of its own (Databricks), the run link
        becomes that page. Never lets a link failure fail the run."""
        ti = context.get("ti")
        if ti is None:
            return
        try:
            ti.xcom_push(key=RUN_XCOM_KEY, value={"run_id": run_id, "conn_id": str(self.conn_id)})
            url = self.backend.get_run_status(run_id).url
            if url and url.startswith(("https://", "http://")):
                ti.xcom_push(key=RUN_PAGE_XCOM_KEY, value=url)
                self.log.info("Run page: %s", url)
        except Exception:
            self.log.warning("Could not record the links of run %s", run_id, exc_info=True)

    _last_progress: tuple[Any, ...] | None = None

    def _log_progress(self, backend: GpuSparkBackend, run_id: str) -> None:
        try:
            progress = backend.get_run_progress(run_id)
        except Exception:
            self.log.debug("Could not read the progress of run %s", run_id, exc_info=True)
            return
        if not progress:
            return
        key = (progress.get("phase"), progress.get("rows_done"), progress.get("tasks_done"))
        if key == self._last_progress:
            return
        self._last_progress = key
        self.log.info("Progress: %s", format_progress(progress))  # short: the run id is logged at submit

    def _annotate_outlets(self, context: Context, report: RunReport) -> None:
        """Attach what this run wrote to each Asset outlet's event, for consumers to read."""
        from airflow.sdk import Asset

        outlet_events = context.get("outlet_events")
        if outlet_events is None:
            return
        extra = {
            "table": str(self.output_table),
            "table_uri": table_uri(str(self.output_table), self._workspace_host()),
            "rejects_table": self._rejects_table(),
            "logical_date": report.logical_date or str(self.logical_date),
            "date_column": self.date_column,
            "output_version": report.output_version,
            "rows_scored": report.rows_scored,
            "rows_rejected": report.rows_rejected,
            "model": report.model or str(self.model),
            "model_version": report.model_version,
            "run_id": report.run_id,
        }
        for outlet in self.outlets or []:
            if isinstance(outlet, Asset):
                outlet_events[outlet].extra = extra
                if outlet.uri != extra["table_uri"]:
                    self.log.info(
                        "Asset %s (%s) updated from table %s (overridden at run time)",
                        outlet.name, outlet.uri, extra["table_uri"],
                    )  # fmt: skip

    def get_openlineage_facets_on_complete(self, task_instance: Any = None) -> Any:
        """Input table in; output and rejects tables out; the model and its registry version as the
        ``spark_triton_model`` run facet (OpenLineage's classes when installed)."""
        return inference_lineage(
            str(self.input_table),
            [str(self.output_table), self._rejects_table()],
            self._workspace_host(),
            model=str(self.model),
            model_version=self._model_version,
        )

    def _workspace_host(self) -> str | None:
        """The Databricks workspace of ``catalog.schema.table`` names: their asset and lineage namespace."""
        if not any(unity_catalog_name(str(t)) for t in (self.input_table, self.output_table)):
            return None
        try:
            return self.backend.workspace_host()
        except Exception:  # asset and lineage names never fail a run: a path namespace instead
            self.log.warning(
                "Could not read the workspace host of connection %s", self.conn_id, exc_info=True
            )
            return None

    def _rejects_table(self) -> str:
        """The rejects table as the job resolves it, without building (and validating) a job config."""
        return str(self.rejects_table or default_rejects_table(str(self.output_table)))

    def _finish(self, status: RunStatus) -> RunReport:
        if status.state is not RunLifecycle.SUCCESS:
            raise RunError(f"inference run {status.run_id} {status.state.value}: {status.message}")
        return self.get_job_result(status.run_id, {})  # type: ignore[arg-type]

    def get_job_result(self, external_id: Any, context: Context) -> RunReport:
        report = self.backend.get_run_report(str(external_id))
        self.log.info(
            "Run %s for %s: read %s, scored %s, rejected %s (input v%s -> output v%s) at %s rows/s",
            external_id,
            report.logical_date,
            report.rows_read,
            report.rows_scored,
            report.rows_rejected,
            report.input_version,
            report.output_version,
            report.rows_per_s,
        )
        return report

    def on_kill(self) -> None:
        self._cancel_quietly()

    def _cancel_quietly(self) -> None:
        if self._run_id:
            try:
                self.backend.cancel_run(self._run_id)
            except Exception:
                self.log.exception("Could not cancel run %s", self._run_id)
