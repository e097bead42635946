"""The Databricks backend: GPU cluster lifecycle and inference runs, composed from the provider's hook.

HTTP, auth, retries and endpoints are :class:`DatabricksGpuHook`'s (the provider's
``DatabricksHook`` plus ``Retry-After``, the Files API and one method per endpoint); request bodies
are the SDK's typed classes (``databricks.sdk.service.compute`` and ``jobs``) so a misspelt field
fails in the worker, not as a 400 from the workspace. What is left here is what the calls mean for a
cluster or a run.

Idempotency: a retried ``clusters/create`` first looks for the cluster by its tag (the create
endpoint has no idempotency token), and ``runs/submit`` carries the operator's idempotency token.

API incidents: every wait (a cluster becoming ready, a run's status, a cancel) and every call that
must not be given up (delete, the tag lookups around a create, a submit with its token) goes through
the hook's :meth:`~DatabricksGpuHook.riding_out`: 429, 5xx, connection errors and timeouts are
retried with back-off, honouring ``Retry-After``, until the wait's own deadline (the task's).

Two compute modes (``GpuClusterSpec.compute``). All-purpose: ``clusters/create``, then runs with
``existing_cluster_id``, then ``clusters/permanent-delete``. Jobs compute: the create task stores the
checked cluster definition next to the artifacts and returns a compute id (``jobcompute-<tag key>``);
each run's ``runs/submit`` carries that definition as ``new_cluster``, so Databricks creates the
cluster with the run and terminates it after; the delete task cancels the run still active on it,
found by the tag key its cluster carries.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import math
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airflow.providers.common.compat.sdk import AirflowException
from airflow.providers.databricks.exceptions import DatabricksApiError
from airflow.providers.databricks.hooks.databricks import RunState
from databricks.sdk.service import compute, jobs

from airflow_spark_triton import assets, secret_env
from airflow_spark_triton.backends.base import GpuSparkBackend, RunLifecycle, RunStatus
from airflow_spark_triton.backends.databricks import retention
from airflow_spark_triton.backends.databricks.artifacts import artifact_set
from airflow_spark_triton.backends.databricks.cluster_spec import (
    KEY_TAG,
    WHEEL_ENV,
    build_cluster_spec,
    check_databricks_spec,
    tag_key,
    worker_count,
)
from airflow_spark_triton.backends.databricks.libraries import (
    install_body,
    library_failures,
    model_libraries,
)
from airflow_spark_triton.backends.databricks.model_registry import DatabricksModelRegistry
from airflow_spark_triton.backends.table_schema import TableNotFound, unity_catalog_columns
from airflow_spark_triton.cluster_spec import ClusterSpecError, GpuClusterSpec
from airflow_spark_triton.errors import BackendConfigError, ClusterError, RunError
from airflow_spark_triton.hooks.databricks_gpu import DatabricksGpuHook, is_missing, volume_of
from spark_jobs.contract import (
    DEFAULT_RUN_ID,
    ERROR_PREFIX,
    JOB_SCRIPT,
    InferenceJobConfig,
    ReportError,
    RunReport,
    progress_path,
)
from spark_jobs.models.mlflow_pyfunc import MODELS_SCHEME
from spark_jobs.table_names import table_name_parts

JOB_COMPUTE_PREFIX = "jobcompute-"  # Databricks cluster ids are MMDD-HHMMSS-xxxxxxxx: never this

LIVE_STATES = ("PENDING", "RUNNING", "RESTARTING", "RESIZING")
READY_STATES = ("RUNNING", "RESIZING")
DEAD_STATES = ("TERMINATING", "TERMINATED", "ERROR")
TASK_KEY = "batch_inference"

log = logging.getLogger(__name__)


def is_job_compute(cluster_id: str) -> bool:
    """Whether ``cluster_id`` is a jobs compute id from :meth:`DatabricksBackend.prepare_job_compute`."""
    return cluster_id.startswith(JOB_COMPUTE_PREFIX)


def _safe_name(token: str) -> str:
    return (
        token
        if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", token)
        else hashlib.sha256(token.encode()).hexdigest()[:32]
    )


def _lifecycle_of(run: dict[str, Any]) -> tuple[RunLifecycle, str]:
    """A ``runs/get`` answer's state as the contract's, with Databricks' state message."""
    state = RunState(**run["state"])
    if not state.is_terminal:
        queued = state.life_cycle_state in ("PENDING", "QUEUED", "BLOCKED", "WAITING_FOR_RETRY")
        lifecycle = RunLifecycle.PENDING if queued else RunLifecycle.RUNNING
    elif state.life_cycle_state == "TERMINATED" and state.result_state == "SUCCESS":
        lifecycle = RunLifecycle.SUCCESS
    elif state.result_state in ("CANCELED", "UPSTREAM_CANCELED"):
        lifecycle = RunLifecycle.CANCELED
    else:
        lifecycle = RunLifecycle.FAILED
    return lifecycle, state.state_message or ""


class DatabricksBackend(GpuSparkBackend):
    """:class:`GpuSparkBackend` on Databricks: all-purpose GPU clusters and one-time ``runs/submit`` runs.

    Progress: the job writes ``<report>.progress.json`` next to its report on the volume, and
    :meth:`get_run_progress` reads it through the Files API at each poll. The report link
    (:meth:`run_summary_uri`) is the run's page in the workspace.

    :param databricks_conn_id: an Airflow connection of type ``databricks`` (any auth it supports).
    :param poll_interval_s: seconds between state checks while waiting for a cluster or a cancel.
    :param cancel_timeout_s: how long :meth:`cancel_run` waits for the run to end.
    :param hook_kwargs: passed to :class:`DatabricksGpuHook` (``artifact_root``, ``wheel``,
        ``single_user_name``, ``incident_timeout_s``, ``timeout_seconds``, ``retry_limit``,
        ``retry_delay``, ``retry_args``).
    """

    conn_name_attr = "databricks_conn_id"  # where the connection id is, as on Airflow hooks
    has_job_compute = True

    def __init__(
        self,
        databricks_conn_id: str = DatabricksGpuHook.default_conn_name,
        *,
        poll_interval_s: float = 10.0,
        cancel_timeout_s: float = 600.0,
        **hook_kwargs: Any,
    ) -> None:
        self.databricks_conn_id = databricks_conn_id
        self.hook = DatabricksGpuHook(databricks_conn_id, **hook_kwargs)
        self.poll_interval_s = poll_interval_s
        self.cancel_timeout_s = cancel_timeout_s
        self._uploaded: dict[str, str] | None = None
        self._progress_paths: dict[str, str] = {}  # run id -> its progress file, found once per run

    # -- artifacts ---------------------------------------------------------------------------------

    def ensure_artifacts(self) -> dict[str, str]:
        """Upload the wheel, job file and init script of this code version once; their remote paths."""
        if self._uploaded is None:
            root = self.hook.artifact_root
            artifacts = artifact_set(self.hook.wheel)
            for local, remote in artifacts.files(root):
                self.hook.upload_file(local, remote)
            self._uploaded = artifacts.remote_paths(root)
        return self._uploaded

    def _user_init_script(self, spec: GpuClusterSpec) -> str | None:
        """A local init script is uploaded under its content hash; remote paths pass through."""
        path = spec.init_script
        if not path or not Path(path).is_file():
            return path
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
        remote = f"{self.hook.artifact_root}/artifacts/user/{digest}/{Path(path).name}"
        self.hook.upload_file(path, remote)
        return remote

    # -- clusters ----------------------------------------------------------------------------------

    def cluster_body(
        self, spec: GpuClusterSpec, tags: dict[str, str], *, job_compute: bool = False
    ) -> dict[str, Any]:
        """The checked cluster definition: every setting is checked before the artifacts it points
        at are uploaded, and the policy and pools before anything else is asked of the workspace.
        A secret ``spark_env_vars`` value must be a secret reference (:mod:`~airflow_spark_triton.secret_env`):
        the definition is stored on the volume (jobs compute) and shown in the cluster's configuration."""
        check_databricks_spec(spec)
        secret_env.refuse_plain_secrets(spec.spark_env_vars)
        self._check_governance_ids(spec)
        paths = self.ensure_artifacts()
        return build_cluster_spec(
            spec,
            tags,
            wheel_path=paths["wheel"],
            init_script_path=paths["init_script"],
            user_init_script_path=self._user_init_script(spec),
            single_user_name=self.hook.single_user_name(),
            job_compute=job_compute,
        ).as_dict()

    def _check_governance_ids(self, spec: GpuClusterSpec) -> None:
        """The policy and pools must exist: fail naming the setting before any compute is asked for
        (in jobs mode a bad one would otherwise surface only when the run's cluster fails to start)."""
        checks = [
            ("policy_id", spec.policy_id, self.hook.get_policy),
            ("instance_pool_id", spec.instance_pool_id, self.hook.get_instance_pool),
            ("driver_instance_pool_id", spec.driver_instance_pool_id, self.hook.get_instance_pool),
        ]
        for setting, value, get in checks:
            if not value:
                continue
            try:
                get(value)
            except DatabricksApiError as exc:
                if exc.http_status_code not in (400, 403, 404):
                    raise
                raise ClusterSpecError(
                    f"cluster setting {setting!r}: {value!r} cannot be used "
                    f"(the workspace answered {exc.http_status_code}: {exc})"
                ) from exc

    # -- jobs compute ------------------------------------------------------------------------------

    def _job_compute_path(self, compute_id: str) -> str:
        return f"{self.hook.artifact_root}/compute/{compute_id.removeprefix(JOB_COMPUTE_PREFIX)}.json"

    def prepare_job_compute(self, spec: GpuClusterSpec, tags: dict[str, str]) -> str:
        """Check the spec, upload the artifacts and store the ``new_cluster`` definition: no compute yet.

        The definition is overwritten on every call, so a create task cleared after its spec was fixed
        gives the runs the fixed one; the id depends only on ``tags``.

        ``spec.model``'s declaration is checked (PEP 508, wheels exist; local wheels uploaded): no
        cluster exists before the run, so a requirement the index cannot install fails the run at
        its start, named in Databricks' message, not here.
        """
        body = self.cluster_body(spec, tags, job_compute=True)
        if spec.model:
            model_libraries(self.hook, spec.model)
        compute_id = f"{JOB_COMPUTE_PREFIX}{tag_key(tags)}"
        path = self._job_compute_path(compute_id)
        with tempfile.TemporaryDirectory(prefix="spark-triton-") as tmp:
            local = Path(tmp) / path.rsplit("/", 1)[-1]
            local.write_text(json.dumps(body, sort_keys=True))
            self.hook.upload_file(local, path, overwrite=True)
        log.info("Jobs compute %s: each run gets a new cluster defined in %s", compute_id, path)
        return compute_id

    def _job_cluster(self, compute_id: str) -> dict[str, Any]:
        path = self._job_compute_path(compute_id)
        content = self.hook.read_file(path)
        if content is None:
            raise ClusterError(
                f"jobs compute {compute_id} has no cluster definition at {path}: run its create task "
                "(with the same artifact_root) first"
            )
        return json.loads(content)

    def _active_job_compute_runs(self, compute_id: str, hook: DatabricksGpuHook) -> list[str]:
        """Active one-time runs whose new cluster carries this compute id's tag key."""
        key = compute_id.removeprefix(JOB_COMPUTE_PREFIX)
        found: list[str] = []
        for run in hook.list_runs(active_only=True, run_type="SUBMIT_RUN"):
            tags = [((t.get("new_cluster") or {}).get("custom_tags") or {}) for t in run.get("tasks", [])]
            if any(t.get(KEY_TAG) == key for t in tags):
                found.append(str(run["run_id"]))
        return found

    def create_cluster(self, spec: GpuClusterSpec, tags: dict[str, str]) -> str:
        """``clusters/create`` is not idempotent: before each re-send, look for the cluster by tag.

        The hook's retry policy decides when to re-send; a timed-out create the workspace did
        accept is found instead of paid for twice.

        ``spec.model``'s requirements and wheels are checked before the cluster is asked for, then
        installed on it as cluster libraries (``libraries/install``; Databricks installs them on
        every node once it runs), and :meth:`wait_for_cluster` waits for them: a requirement that
        cannot be installed fails the create task naming it, not the first inference run.
        """
        body = self.cluster_body(spec, tags)
        libraries = model_libraries(self.hook, spec.model) if spec.model else []
        # One incident deadline for every lookup of this create: each rides out an outage, together
        # no longer than one incident_timeout_s.
        lookups = self.hook.riding_out(self.hook.incident_deadline())

        def went_through() -> str | None:
            existing = self._find_cluster(tags, lookups)
            if existing:
                log.info("An earlier clusters/create went through; using cluster %s", existing)
            return existing

        cluster_id = self.hook.create_cluster(body, went_through)
        log.info("Creating cluster %s (%s)", cluster_id, body["cluster_name"])
        if libraries:
            self._install_model_libraries(cluster_id, spec.model or "", libraries)
        return cluster_id

    def _install_model_libraries(self, cluster_id: str, model: str, libraries: list[compute.Library]) -> None:
        """Idempotent (Databricks skips a library the cluster already has). Failing, it deletes the
        cluster: the create operator cleans up only after a cluster id was returned."""
        try:
            self.hook.install(install_body(cluster_id, libraries))
        except Exception as exc:
            log.error("Could not install model %s's libraries on %s; deleting it", model, cluster_id)
            try:
                self.delete_cluster(cluster_id)
            except Exception:
                log.exception("Could not delete cluster %s; delete it by hand", cluster_id)
            raise ClusterError(
                f"libraries/install of model {model!r}'s requirements on cluster {cluster_id} failed: {exc}"
            ) from exc
        names = ", ".join(lib.pypi.package if lib.pypi else str(lib.whl) for lib in libraries)
        log.info("Installing model %s's libraries on cluster %s: %s", model, cluster_id, names)

    def find_cluster(self, tags: dict[str, str]) -> str | None:
        """The live cluster carrying ``tags``' key; the lookup rides out an API incident."""
        return self._find_cluster(tags, self.hook.riding_out(self.hook.incident_deadline()))

    def _find_cluster(self, tags: dict[str, str], hook: DatabricksGpuHook) -> str | None:
        key = tag_key(tags)
        matches = [
            c
            for c in hook.list_clusters(LIVE_STATES)
            if (c.get("custom_tags") or {}).get(KEY_TAG) == key
            and c.get("state") in LIVE_STATES
            and c.get("cluster_source") != "JOB"  # a jobs compute run's cluster is the run's own
        ]
        if not matches:
            return None
        matches.sort(key=lambda c: c.get("start_time", 0))
        if len(matches) > 1:
            ids = ", ".join(c["cluster_id"] for c in matches)
            log.warning("Several live clusters carry these tags (%s); using the oldest", ids)
        return str(matches[0]["cluster_id"])

    def wait_for_cluster(self, cluster_id: str, timeout_s: float) -> None:
        """Until the cluster is RUNNING and its libraries (the model's, from :meth:`create_cluster`)
        are installed, within one ``timeout_s``. A retried create that reuses the cluster an earlier
        try made waits for what that try installed; a try killed between ``clusters/create`` and
        ``libraries/install`` leaves the model's libraries to the run's task libraries.

        An API incident (429, 5xx, connection errors, timeouts) is ridden out until ``timeout_s``:
        only the cluster's own state, or the time running out, ends the wait."""
        deadline = time.monotonic() + timeout_s
        hook = self.hook.riding_out(time.time() + timeout_s)
        last = None
        while True:
            try:
                info = hook.get_cluster(cluster_id)
            except DatabricksApiError as exc:
                if is_missing(exc):
                    raise ClusterError(f"cluster {cluster_id} does not exist (deleted?)") from exc
                raise
            state, message = info.get("state", "UNKNOWN"), info.get("state_message", "")
            waiting_for = "RUNNING"
            if state in READY_STATES:
                unsettled = self._unsettled_libraries(cluster_id, hook)
                if not unsettled:
                    return
                waiting_for = "done installing its libraries"
                state, message = f"{state}, libraries installing", ", ".join(unsettled)
            if state in DEAD_STATES:
                raise ClusterError(self._describe_failure(cluster_id, info, hook))
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"cluster {cluster_id} is not {waiting_for} after {timeout_s:.0f}s; "
                    f"last state {state}: {message}"
                )
            if (state, message) != last:
                log.info("Cluster %s is %s: %s", cluster_id, state, message)
                last = (state, message)
            time.sleep(max(0.0, min(self.poll_interval_s, deadline - time.monotonic())))

    def _unsettled_libraries(self, cluster_id: str, hook: DatabricksGpuHook) -> list[str]:
        """Libraries of the cluster still installing; a FAILED one raises :class:`ClusterError`
        naming it with Databricks' message (the model's requirement that cannot be installed)."""
        unsettled, failed = library_failures(hook.get_library_statuses(cluster_id))
        if failed:
            raise ClusterError(
                f"cluster {cluster_id}: a model requirement could not be installed: " + "; ".join(failed)
            )
        return unsettled

    def _describe_failure(self, cluster_id: str, info: dict[str, Any], hook: DatabricksGpuHook) -> str:
        """Why the cluster died: its termination reason, state message and latest events, whose
        init-script entries carry the script's last stderr lines."""
        parts = [f"cluster {cluster_id} is {info.get('state')}"]
        reason = info.get("termination_reason") or {}
        if reason:
            params = ", ".join(f"{k}={v}" for k, v in sorted((reason.get("parameters") or {}).items()))
            parts.append(
                f"termination reason {reason.get('code')} ({reason.get('type')})"
                + (f": {params}" if params else "")
            )
        if info.get("state_message"):
            parts.append(f"state message: {info['state_message']}")
        parts.append(f"recent events:\n{self._events_excerpt(cluster_id, hook)}")
        return "; ".join(parts)

    def _events_excerpt(self, cluster_id: str, hook: DatabricksGpuHook, limit: int = 10) -> str:
        """The cluster's own account of what went wrong; never masks the error it explains."""
        try:
            events = hook.get_cluster_events(cluster_id, limit)
        except Exception as exc:
            return f"  (cluster events unavailable: {exc})"
        lines = []
        for event in reversed(events):
            parsed = compute.ClusterEvent.from_dict(event)
            line = f"  {event.get('type')}"
            details = parsed.details
            if details and details.init_scripts:
                scripts = (details.init_scripts.cluster or []) + (details.init_scripts.global_ or [])
                for s in scripts:
                    where = next(
                        (v.destination for v in (s.volumes, s.workspace, s.s3, s.gcs, s.abfss) if v), "?"
                    )
                    status = s.status.value if s.status else "?"
                    line += f"\n    {where}: {status} {s.error_message or ''}".rstrip()
                    if s.stderr:  # its last lines, which name what failed
                        tail = s.stderr[-800:].rstrip().replace("\n", "\n        ")
                        line += f"\n      stderr: {tail}"
            elif details and details.reason and details.reason.code:
                line += f": {details.reason.code.value} {details.reason.parameters or ''}".rstrip()
            lines.append(line)
        return "\n".join(lines) or "  (no events)"

    def delete_cluster(self, cluster_id: str) -> None:
        """All-purpose: permanently delete. Jobs compute: cancel the runs still active on it (and wait);
        Databricks then terminates their clusters, so there is nothing to delete. Every call rides
        out an API incident for ``incident_timeout_s``: a teardown must not leak a cluster for one."""
        hook = self.hook.riding_out(self.hook.incident_deadline())
        if is_job_compute(cluster_id):
            runs = self._active_job_compute_runs(cluster_id, hook)
            for run_id in runs:
                log.info("Canceling run %s, still active on jobs compute %s", run_id, cluster_id)
                self.cancel_run(run_id)
            if not runs:
                log.info("No run is active on jobs compute %s; Databricks has ended its clusters", cluster_id)
            return
        try:
            hook.permanent_delete_cluster(cluster_id)
        except DatabricksApiError as exc:
            if not is_missing(exc):
                raise
            log.info("Cluster %s is already gone", cluster_id)
            return
        log.info("Cluster %s permanently deleted", cluster_id)

    # -- runs --------------------------------------------------------------------------------------

    def submit_job(
        self,
        cluster_id: str,
        job: InferenceJobConfig,
        idempotency_token: str,
        *,
        time_limit_s: float | None = None,
    ) -> str:
        """One ``runs/submit``: on the all-purpose cluster, or for a jobs compute id on a new cluster
        of the stored definition. The job file comes from the cluster's own artifact set.

        ``time_limit_s`` becomes the run's ``timeout_seconds`` (rounded up): Databricks ends the run
        (and a jobs compute run's cluster) after it even when no Airflow worker is left to cancel it.
        """
        if not idempotency_token or len(idempotency_token) > 64:
            raise BackendConfigError("idempotency_token must be 1 to 64 characters (a Databricks limit)")
        name = _safe_name(idempotency_token)
        if is_job_compute(cluster_id):
            cluster = self._job_cluster(cluster_id)
            where: dict[str, Any] = {"new_cluster": compute.ClusterSpec.from_dict(cluster)}
        else:
            cluster = self.hook.get_cluster(cluster_id)
            where = {"existing_cluster_id": cluster_id}
        installed = (cluster.get("spark_env_vars") or {}).get(WHEEL_ENV)
        libraries = None
        if installed:
            job_file = f"{installed.rsplit('/', 1)[0]}/{JOB_SCRIPT.name}"
        else:
            paths = self.ensure_artifacts()
            job_file = paths["job_file"]
            libraries = [compute.Library(whl=paths["wheel"])]
            log.warning(
                "Cluster %s was not created by this backend: installing %s as a cluster library, "
                "which also installs the wheel's dependencies",
                cluster_id,
                paths["wheel"],
            )
        # The model's declared requirements and wheels, on every node of the run's cluster; checked
        # (PEP 508, wheels exist) before anything is submitted.
        libraries = [*(libraries or []), *model_libraries(self.hook, job.model, job.model_version)] or None
        if job.model.startswith(MODELS_SCHEME):  # the registry the driver loads the pinned version from
            job = job.replace(model_registry_uri=self.model_registry().registry_uri)
        job = job.for_run(
            # per try: a retry never adopts a server of an earlier try
            run_id=name if job.run_id == DEFAULT_RUN_ID else job.run_id,
            report_path=f"{self.hook.artifact_root}/reports/{name}.json",
            workers=worker_count(cluster),
        )
        task = jobs.SubmitTask(
            task_key=TASK_KEY,
            **where,
            spark_python_task=jobs.SparkPythonTask(python_file=job_file, parameters=job.to_args()),
            libraries=libraries,
        )
        body = {
            "run_name": f"spark-triton {job.output_table} {job.logical_date}"[:4000],
            "idempotency_token": idempotency_token,
            "tasks": [task.as_dict()],
        }
        if time_limit_s is not None:
            body["timeout_seconds"] = max(1, math.ceil(time_limit_s))
        # The idempotency token makes a re-send safe: an incident is ridden out, and a submit whose
        # answer was lost returns the run it started instead of starting a second one.
        run_id = str(self.hook.riding_out(self.hook.incident_deadline()).submit_run(body))
        log.info("Submitted run %s on cluster %s (report: %s)", run_id, cluster_id, job.report_path)
        return run_id

    def get_run_status(self, run_id: str) -> RunStatus:
        return self._run_status(run_id, self.hook)

    def poll_run_status(self, run_id: str, until: float | None) -> RunStatus:
        """:meth:`get_run_status` riding out an API incident until ``until`` (the task's deadline)."""
        return self._run_status(run_id, self.hook.riding_out(until))

    async def apoll_run_status(self, run_id: str, until: float | None) -> RunStatus:
        """:meth:`poll_run_status` on the triggerer's event loop: the provider's async ``runs/get``
        (aiohttp, with the same retry policy and ``Retry-After``); the connection is looked up
        asynchronously by the provider's hook. Only a failed run's explanation (its output and, when
        its cluster died, the cluster's events) is read once, in a worker thread."""
        hook = self.hook.riding_out(until)
        async with hook:
            run = await hook.a_get_run(int(run_id))
        lifecycle, message = _lifecycle_of(run)
        if lifecycle is RunLifecycle.FAILED:
            message = await asyncio.to_thread(self._failure_message, run, hook)
        return RunStatus(run_id=str(run_id), state=lifecycle, message=message, url=run.get("run_page_url"))

    def _run_status(self, run_id: str, hook: DatabricksGpuHook) -> RunStatus:
        run = hook.get_run(int(run_id))
        lifecycle, message = _lifecycle_of(run)
        if lifecycle is RunLifecycle.FAILED:
            message = self._failure_message(run, hook)
        return RunStatus(run_id=str(run_id), state=lifecycle, message=message, url=run.get("run_page_url"))

    def _failure_message(self, run: dict[str, Any], hook: DatabricksGpuHook) -> str:
        """The job's own ``SPARK_TRITON_ERROR:`` line beats Databricks' generic state message; a run
        whose cluster died before the job could say anything (a jobs compute cluster whose init
        script failed) gets the cluster's account, with the script's last stderr lines."""
        state = RunState(**run["state"])
        summary = f"{state.life_cycle_state}/{state.result_state or '-'}: {state.state_message}".rstrip(": ")
        for task in run.get("tasks", []):
            try:
                output = hook.get_run_output(int(task["run_id"]))
            except Exception as exc:
                return f"{summary} (run output unavailable: {exc})"
            errors = [
                line for line in (output.get("logs") or "").splitlines() if line.startswith(ERROR_PREFIX)
            ]
            detail = errors[-1] if errors else output.get("error")
            if detail:
                return f"{detail} ({summary})"
            cluster = self._dead_cluster_of(task, hook)
            if cluster:
                return f"{summary}; {cluster}"
        return summary

    def _dead_cluster_of(self, task: dict[str, Any], hook: DatabricksGpuHook) -> str | None:
        """How the task's cluster failed (:meth:`_describe_failure`), or None if it did not: it still
        runs, or ended as clusters end (a job's cluster after its run, a user's terminate)."""
        cluster_id = (task.get("cluster_instance") or {}).get("cluster_id")
        if not cluster_id:
            return None
        try:
            info = hook.get_cluster(cluster_id)
        except Exception as exc:
            log.debug("Cluster %s of a failed run is not readable: %s", cluster_id, exc)
            return None
        reason = info.get("termination_reason") or {}
        if info.get("state") not in DEAD_STATES or reason.get("type", "SUCCESS") == "SUCCESS":
            return None
        return self._describe_failure(cluster_id, info, hook)

    def cancel_run(self, run_id: str) -> None:
        """``runs/cancel`` is asynchronous: wait until the run (and its driver) has ended. Every call
        rides out an API incident within ``cancel_timeout_s``."""
        deadline = time.monotonic() + self.cancel_timeout_s
        hook = self.hook.riding_out(time.time() + self.cancel_timeout_s)
        status = self._run_status(run_id, hook)
        if status.state.is_terminal:
            return
        hook.cancel_run(int(run_id))
        log.info("Canceling run %s", run_id)
        while not status.state.is_terminal:
            if time.monotonic() >= deadline:
                raise RunError(
                    f"run {run_id} is still {status.state.value} {self.cancel_timeout_s:.0f}s after cancel"
                )
            time.sleep(self.poll_interval_s)
            status = self._run_status(run_id, hook)
        log.info("Run %s ended: %s", run_id, status.state.value)

    @staticmethod
    def report_path_of(run: dict[str, Any]) -> str | None:
        for task in run.get("tasks", []):
            job = InferenceJobConfig.from_args((task.get("spark_python_task") or {}).get("parameters") or [])
            if job is not None:
                return job.report_path
        return None

    def get_run_report(self, run_id: str) -> RunReport:
        """Read the report back from the volume; the path is in the run's own parameters."""
        run = self.hook.get_run(int(run_id))
        path = self.report_path_of(run)
        if not path:
            raise RunError(f"run {run_id} is not a spark-triton inference run (no --job parameter)")
        content = self.hook.read_file(path)
        if content is None:
            state = run.get("state", {})
            raise RunError(
                f"run {run_id} wrote no report at {path} "
                f"({state.get('life_cycle_state')}/{state.get('result_state')}: "
                f"{state.get('state_message', '')})"
            )
        try:
            return RunReport.from_json(content)
        except ReportError as exc:
            raise RunError(f"run {run_id} wrote an unreadable report at {path}: {exc}") from exc

    def get_run_progress(self, run_id: str) -> dict[str, Any] | None:
        """The job's latest progress (rows done/total, rows/s, tasks), read from the volume; None until
        the job has written its first one. The file's path follows from the run's own report path."""
        path = self._progress_paths.get(run_id)
        if path is None:
            report = self.report_path_of(self.hook.get_run(int(run_id)))
            if not report:
                return None
            path = self._progress_paths[run_id] = progress_path(report).as_posix()
        content = self.hook.read_file(path)
        if content is None:
            return None
        try:
            progress = json.loads(content)
        except ValueError:  # the Files API serves whole files; a torn read would be a server bug
            log.debug("Progress file %s of run %s is not JSON", path, run_id)
            return None
        return progress if isinstance(progress, dict) else None

    def workspace_host(self) -> str | None:
        """The host of the connection's workspace: Unity Catalog names are that workspace's tables."""
        host = self.hook.databricks_conn.host
        return assets.workspace_host(host) if host else None

    def remove_expired(self, older_than: dt.timedelta) -> list[str]:
        """Reports, job cluster definitions and code versions under ``artifact_root`` that nothing
        live refers to (:mod:`.retention`); the clusters and runs themselves are Databricks'."""
        cutoff_ms = int((time.time() - older_than.total_seconds()) * 1000)
        return retention.remove_expired(self.hook, self.hook.artifact_root, cutoff_ms, self._live_references)

    def _live_references(self) -> str:
        """Every cluster the workspace lists that may still start (a terminated all-purpose cluster
        can; a run's terminated job cluster never does) and every active run, as one JSON text."""
        clusters = [
            cluster
            for cluster in self.hook.list_clusters()
            if not (
                cluster.get("cluster_source") == "JOB"
                and cluster.get("state") in ("TERMINATING", "TERMINATED")
            )
        ]
        return json.dumps([*clusters, *self.hook.list_runs(active_only=True)])

    def run_summary_uri(self, run_id: str) -> str | None:
        """The run's page in the workspace: its output, Spark UI and driver logs, where the job's own
        summary and error lines are (the Markdown summary on the volume needs workspace login too)."""
        return self.hook.get_run(int(run_id)).get("run_page_url")

    # -- pre-flight --------------------------------------------------------------------------------

    def describe_table(self, table: str) -> dict[str, Any] | None:
        """A ``catalog.schema.table`` from Unity Catalog's table info; a path (a volume, cloud storage)
        is left to the job, which reads it with Spark. An API failure the hook's retries did not get
        past is logged and left to the job too: a pre-flight check must not fail a healthy run."""
        parts = table_name_parts(table)
        if parts is None:
            return None
        full_name = ".".join(part.strip("`") for part in parts)
        try:
            info = self.hook.get_table(full_name)
        except AirflowException as exc:
            log.warning(
                "Could not read Unity Catalog table %s before the run (%s); the job checks it", table, exc
            )
            return None
        if info is None:
            raise TableNotFound(
                f"input table {table} does not exist in Unity Catalog, or this connection's identity "
                "cannot see it (it needs SELECT on the table and USE on its catalog and schema)"
            )
        return unity_catalog_columns(info)

    def model_registry(self) -> DatabricksModelRegistry:
        """The workspace's Unity Catalog (default) or MLflow registry, through this connection's hook
        (connection extra ``mlflow_registry_uri``): no MLflow needed on the Airflow side."""
        try:
            return DatabricksModelRegistry(self.hook, self.hook.mlflow_registry_uri)
        except ValueError as exc:
            raise BackendConfigError(str(exc)) from exc

    def node_file_reader(self, directory: str) -> Callable[[str], bytes | None] | None:
        """Files of a ``/Volumes/...`` directory through the Files API; other paths (DBFS, the
        workspace, a node's disk) are checked by the nodes when they load the model."""
        if volume_of(directory) is None:
            return None
        root = directory.rstrip("/")
        return lambda name: self.hook.read_file(f"{root}/{name}")
