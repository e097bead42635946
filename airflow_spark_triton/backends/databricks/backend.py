"""The Databricks backend: GPU cluster lifecycle and inference runs, composed from the provider's hook.

HTTP, auth and retries are :class:`DatabricksGpuHook`'s (the provider's ``DatabricksHook`` plus
``Retry-After`` and the Files API); request bodies are the SDK's typed classes
(``databricks.sdk.service.compute`` and ``jobs``) so a misspelt field fails in the worker, not as a
400 from the workspace. What is left here is what the calls mean for a cluster or a run.

Idempotency: a retried ``clusters/create`` first looks for the cluster by its tag (the create
endpoint has no idempotency token), and ``runs/submit`` carries the operator's idempotency token.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from airflow.providers.common.compat.sdk import AirflowException
from airflow.providers.databricks.exceptions import DatabricksApiError
from airflow.providers.databricks.hooks.databricks import GET_CLUSTER_ENDPOINT, RunState
from databricks.sdk.service import compute, jobs

from airflow_spark_triton.backends.base import (
    BackendConfigError,
    ClusterError,
    GpuSparkBackend,
    RunError,
    RunLifecycle,
    RunStatus,
)
from airflow_spark_triton.backends.databricks.artifacts import JOB_FILE, artifact_set
from airflow_spark_triton.backends.databricks.cluster_spec import (
    KEY_TAG,
    WHEEL_ENV,
    cluster_create_body,
    tag_key,
)
from airflow_spark_triton.cluster_spec import GpuClusterSpec
from airflow_spark_triton.hooks.databricks_gpu import (
    DatabricksGpuHook,
    gave_up_retryable,
    is_missing,
    last_http_error,
)
from spark_jobs.batch_inference import ERROR_PREFIX  # what the job prints on failure
from spark_jobs.job_config import InferenceJobConfig

CREATE_CLUSTER_ENDPOINT = ("POST", "2.1/clusters/create")
LIST_CLUSTERS_ENDPOINT = ("GET", "2.1/clusters/list")
CLUSTER_EVENTS_ENDPOINT = ("POST", "2.1/clusters/events")
PERMANENT_DELETE_ENDPOINT = ("POST", "2.1/clusters/permanent-delete")

LIVE_STATES = ("PENDING", "RUNNING", "RESTARTING", "RESIZING")
READY_STATES = ("RUNNING", "RESIZING")
DEAD_STATES = ("TERMINATING", "TERMINATED", "ERROR")
TASK_KEY = "batch_inference"
DEFAULT_RUN_ID = "manual"

log = logging.getLogger(__name__)


def _safe_name(token: str) -> str:
    return (
        token
        if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", token)
        else hashlib.sha256(token.encode()).hexdigest()[:32]
    )


class DatabricksBackend(GpuSparkBackend):
    """:class:`GpuSparkBackend` on Databricks: all-purpose GPU clusters and one-time ``runs/submit`` runs.

    Progress is not exposed (the job's progress file lives on the cluster; the run page shows it),
    so :meth:`get_run_progress` keeps the contract's "not available".

    :param databricks_conn_id: an Airflow connection of type ``databricks`` (any auth it supports).
    :param poll_interval_s: seconds between state checks while waiting for a cluster or a cancel.
    :param cancel_timeout_s: how long :meth:`cancel_run` waits for the run to end.
    :param hook_kwargs: passed to :class:`DatabricksGpuHook` (``artifact_root``, ``wheel``,
        ``single_user_name``, ``timeout_seconds``, ``retry_limit``, ``retry_delay``, ``retry_args``).
    """

    conn_name_attr = "databricks_conn_id"  # where the connection id is, as on Airflow hooks

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

    def cluster_body(self, spec: GpuClusterSpec, tags: dict[str, str]) -> dict[str, Any]:
        paths = self.ensure_artifacts()
        return cluster_create_body(
            spec,
            tags,
            wheel_path=paths["wheel"],
            init_script_path=paths["init_script"],
            user_init_script_path=self._user_init_script(spec),
            single_user_name=self.hook.single_user_name(),
        )

    def create_cluster(self, spec: GpuClusterSpec, tags: dict[str, str]) -> str:
        """``clusters/create`` is not idempotent: before each re-send, look for the cluster by tag.

        The hook's retry policy decides when to re-send; a timed-out create the workspace did
        accept is found instead of paid for twice.
        """
        body = self.cluster_body(spec, tags)

        def went_through() -> dict[str, Any] | None:
            existing = self.find_cluster(tags)
            if existing:
                log.info("An earlier clusters/create went through; using cluster %s", existing)
                return {"cluster_id": existing}
            return None

        try:
            answer = self.hook.post_checked(CREATE_CLUSTER_ENDPOINT, body, went_through)
        except AirflowException as exc:
            if gave_up_retryable(exc):
                raise ClusterError(
                    f"clusters/create failed on every attempt; last: {last_http_error(exc)}"
                ) from exc
            raise
        cluster_id = str(answer["cluster_id"])
        log.info("Creating cluster %s (%s)", cluster_id, body["cluster_name"])
        return cluster_id

    def find_cluster(self, tags: dict[str, str]) -> str | None:
        key = tag_key(tags)
        params: dict[str, Any] = {"filter_by.cluster_states": list(LIVE_STATES), "page_size": 100}
        matches: list[dict[str, Any]] = []
        while True:
            page = self.hook._do_api_call(LIST_CLUSTERS_ENDPOINT, params)
            matches += [
                c
                for c in page.get("clusters", [])
                if (c.get("custom_tags") or {}).get(KEY_TAG) == key and c.get("state") in LIVE_STATES
            ]
            if not page.get("next_page_token"):
                break
            params = {**params, "page_token": page["next_page_token"]}
        if not matches:
            return None
        matches.sort(key=lambda c: c.get("start_time", 0))
        if len(matches) > 1:
            ids = ", ".join(c["cluster_id"] for c in matches)
            log.warning("Several live clusters carry these tags (%s); using the oldest", ids)
        return str(matches[0]["cluster_id"])

    def wait_for_cluster(self, cluster_id: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last = None
        while True:
            try:
                info = self.hook._do_api_call(GET_CLUSTER_ENDPOINT, {"cluster_id": cluster_id})
            except DatabricksApiError as exc:
                if is_missing(exc):
                    raise ClusterError(f"cluster {cluster_id} does not exist (deleted?)") from exc
                raise
            state, message = info.get("state", "UNKNOWN"), info.get("state_message", "")
            if state in READY_STATES:
                return
            if state in DEAD_STATES:
                raise ClusterError(self._describe_failure(cluster_id, info))
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"cluster {cluster_id} is not RUNNING after {timeout_s:.0f}s; "
                    f"last state {state}: {message}"
                )
            if (state, message) != last:
                log.info("Cluster %s is %s: %s", cluster_id, state, message)
                last = (state, message)
            time.sleep(max(0.0, min(self.poll_interval_s, deadline - time.monotonic())))

    def _describe_failure(self, cluster_id: str, info: dict[str, Any]) -> str:
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
        parts.append(f"recent events:\n{self._events_excerpt(cluster_id)}")
        return "; ".join(parts)

    def _events_excerpt(self, cluster_id: str, limit: int = 10) -> str:
        """The cluster's own account of what went wrong; never masks the error it explains."""
        try:
            body = {"cluster_id": cluster_id, "order": "DESC", "page_size": limit}
            events = self.hook._do_api_call(CLUSTER_EVENTS_ENDPOINT, body).get("events", [])
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
                    if s.stderr:
                        line += f"\n      stderr: {s.stderr[-800:]}"
            elif details and details.reason and details.reason.code:
                line += f": {details.reason.code.value} {details.reason.parameters or ''}".rstrip()
            lines.append(line)
        return "\n".join(lines) or "  (no events)"

    def delete_cluster(self, cluster_id: str) -> None:
        try:
            self.hook._do_api_call(PERMANENT_DELETE_ENDPOINT, {"cluster_id": cluster_id})
        except DatabricksApiError as exc:
            if not is_missing(exc):
                raise
            log.info("Cluster %s is already gone", cluster_id)
            return
        log.info("Cluster %s permanently deleted", cluster_id)

    # -- runs --------------------------------------------------------------------------------------

    def submit_job(self, cluster_id: str, job: InferenceJobConfig, idempotency_token: str) -> str:
        """One ``runs/submit`` on the cluster; the job file comes from the cluster's own artifact set."""
        if not idempotency_token or len(idempotency_token) > 64:
            raise BackendConfigError("idempotency_token must be 1 to 64 characters (a Databricks limit)")
        name = _safe_name(idempotency_token)
        cluster = self.hook._do_api_call(GET_CLUSTER_ENDPOINT, {"cluster_id": cluster_id})
        installed = (cluster.get("spark_env_vars") or {}).get(WHEEL_ENV)
        libraries = None
        if installed:
            job_file = f"{installed.rsplit('/', 1)[0]}/{JOB_FILE.name}"
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
        changes: dict[str, Any] = {"report_path": f"{self.hook.artifact_root}/reports/{name}.json"}
        if job.expected_executors is None and cluster.get("num_workers"):
            changes["expected_executors"] = int(cluster["num_workers"])  # one Triton server per worker node
        if job.run_id == DEFAULT_RUN_ID:
            changes["run_id"] = name  # per try: a retry never adopts a server of an earlier try
        job = job.replace(**changes)
        task = jobs.SubmitTask(
            task_key=TASK_KEY,
            existing_cluster_id=cluster_id,
            spark_python_task=jobs.SparkPythonTask(python_file=job_file, parameters=["--job", job.to_json()]),
            libraries=libraries,
        )
        body = {
            "run_name": f"spark-triton {job.output_table} {job.logical_date}"[:4000],
            "idempotency_token": idempotency_token,
            "tasks": [task.as_dict()],
        }
        run_id = str(self.hook.submit_run(body))
        log.info("Submitted run %s on cluster %s (report: %s)", run_id, cluster_id, job.report_path)
        return run_id

    def get_run_status(self, run_id: str) -> RunStatus:
        run = self.hook.get_run(int(run_id))
        state = RunState(**run["state"])
        message = state.state_message or ""
        if not state.is_terminal:
            queued = state.life_cycle_state in ("PENDING", "QUEUED", "BLOCKED", "WAITING_FOR_RETRY")
            lifecycle = RunLifecycle.PENDING if queued else RunLifecycle.RUNNING
        elif state.life_cycle_state == "TERMINATED" and state.result_state == "SUCCESS":
            lifecycle = RunLifecycle.SUCCESS
        elif state.result_state in ("CANCELED", "UPSTREAM_CANCELED"):
            lifecycle = RunLifecycle.CANCELED
        else:
            lifecycle = RunLifecycle.FAILED
            message = self._failure_message(run, state)
        return RunStatus(run_id=str(run_id), state=lifecycle, message=message, url=run.get("run_page_url"))

    def _failure_message(self, run: dict[str, Any], state: RunState) -> str:
        """The job's own ``SPARK_TRITON_ERROR:`` line beats Databricks' generic state message."""
        summary = f"{state.life_cycle_state}/{state.result_state or '-'}: {state.state_message}".rstrip(": ")
        for task in run.get("tasks", []):
            try:
                output = self.hook.get_run_output(int(task["run_id"]))
            except Exception as exc:
                return f"{summary} (run output unavailable: {exc})"
            errors = [
                line for line in (output.get("logs") or "").splitlines() if line.startswith(ERROR_PREFIX)
            ]
            detail = errors[-1] if errors else output.get("error")
            if detail:
                return f"{detail} ({summary})"
        return summary

    def cancel_run(self, run_id: str) -> None:
        """``runs/cancel`` is asynchronous: wait until the run (and its driver) has ended."""
        status = self.get_run_status(run_id)
        if status.state.is_terminal:
            return
        self.hook.cancel_run(int(run_id))
        log.info("Canceling run %s", run_id)
        deadline = time.monotonic() + self.cancel_timeout_s
        while not status.state.is_terminal:
            if time.monotonic() >= deadline:
                raise RunError(
                    f"run {run_id} is still {status.state.value} {self.cancel_timeout_s:.0f}s after cancel"
                )
            time.sleep(self.poll_interval_s)
            status = self.get_run_status(run_id)
        log.info("Run %s ended: %s", run_id, status.state.value)

    @staticmethod
    def report_path_of(run: dict[str, Any]) -> str | None:
        for task in run.get("tasks", []):
            params = (task.get("spark_python_task") or {}).get("parameters") or []
            if "--job" in params[:-1]:
                return InferenceJobConfig.from_json(params[params.index("--job") + 1]).report_path
        return None

    def get_run_report(self, run_id: str) -> dict[str, Any]:
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
        return json.loads(content)
