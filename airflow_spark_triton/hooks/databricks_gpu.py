"""The Databricks backend: GPU cluster lifecycle and inference runs through the Databricks provider's hook.

Every JSON call goes through the provider's ``_do_api_call``, so authentication (PAT, OAuth service
principal, Azure AD, federation), proxies, the user agent and the retry policy are the provider's,
configured on the Airflow connection as for any Databricks task. ``_do_api_call`` can only send
JSON and only parse JSON back, so the Files API (raw bytes in and out of a Unity Catalog volume) is
the one place that issues its own ``requests`` call, composed from the provider's own URL, header,
token and retry helpers rather than a second auth implementation.

Idempotency: a retried ``clusters/create`` first looks for the cluster by its tag (the create
endpoint has no idempotency token), and ``runs/submit`` carries the operator's idempotency token.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from airflow.providers.common.compat.sdk import AirflowException
from airflow.providers.databricks.exceptions import DatabricksApiError
from airflow.providers.databricks.hooks.databricks import GET_CLUSTER_ENDPOINT, DatabricksHook, RunState
from airflow.providers.databricks.hooks.databricks_base import _TokenAuth
from databricks.sdk.service import compute, jobs
from requests import exceptions as requests_exceptions
from requests.auth import AuthBase, HTTPBasicAuth
from tenacity import RetryError, Retrying, retry_if_exception, stop_after_attempt, wait_none
from tenacity.wait import wait_base

from airflow_spark_triton.cluster_spec import GpuClusterSpec
from airflow_spark_triton.databricks_cluster_spec import KEY_TAG, WHEEL_ENV, cluster_create_body, tag_key
from airflow_spark_triton.hooks.base import ClusterError, RunError, RunLifecycle, RunStatus
from airflow_spark_triton.hooks.databricks_artifacts import JOB_FILE, artifact_set
from spark_jobs.job_config import InferenceJobConfig

CREATE_CLUSTER_ENDPOINT = ("POST", "2.1/clusters/create")
LIST_CLUSTERS_ENDPOINT = ("GET", "2.1/clusters/list")
CLUSTER_EVENTS_ENDPOINT = ("POST", "2.1/clusters/events")
PERMANENT_DELETE_ENDPOINT = ("POST", "2.1/clusters/permanent-delete")
SCIM_ME_ENDPOINT = ("GET", "2.0/preview/scim/v2/Me")
FILES_API = "api/2.0/fs/files"
DIRECTORIES_API = "api/2.0/fs/directories"

LIVE_STATES = ("PENDING", "RUNNING", "RESTARTING", "RESIZING")
READY_STATES = ("RUNNING", "RESIZING")
DEAD_STATES = ("TERMINATING", "TERMINATED", "ERROR")
MAX_RETRY_AFTER_S = 120.0
ERROR_PREFIX = "SPARK_TRITON_ERROR:"  # what spark_jobs.batch_inference prints on failure
TASK_KEY = "batch_inference"
DEFAULT_RUN_ID = "manual"


class _WaitRetryAfter(wait_base):
    """The provider's back-off, stretched to the server's ``Retry-After`` when a 429/503 sends one."""

    def __init__(self, fallback: wait_base) -> None:
        self.fallback = fallback

    def __call__(self, retry_state: Any) -> float:
        base = self.fallback(retry_state)
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if _gave_up_retryable(exc):  # create_cluster's outer loop: the HTTP error is one level down
            exc = exc.__cause__.last_attempt.exception()
        response = getattr(exc, "response", None)
        header = response.headers.get("Retry-After") if response is not None else None
        try:
            hint = min(float(header), MAX_RETRY_AFTER_S) if header else 0.0
        except ValueError:  # the HTTP-date form; the provider's back-off still applies
            hint = 0.0
        return max(base, hint)


def _error_details(exc: BaseException) -> tuple[int | None, str, str]:
    """(HTTP status, Databricks error_code, message) of a provider error, for deciding what it means."""
    status = getattr(exc, "http_status_code", None)
    code, message = "", str(exc)
    cause = exc.__cause__
    if isinstance(cause, requests_exceptions.HTTPError) and cause.response is not None:
        status = cause.response.status_code
        try:
            body = cause.response.json()
        except ValueError:
            body = {}
        if isinstance(body, dict):
            code, message = body.get("error_code", ""), body.get("message", message)
    return status, code, message


def _is_missing(exc: BaseException) -> bool:
    status, code, message = _error_details(exc)
    return status in (400, 404) and (
        code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "does not exist" in message.lower()
    )


def _gave_up_retryable(exc: BaseException) -> bool:
    """The provider wraps a retryable failure it stopped retrying in AirflowException from RetryError."""
    return isinstance(exc, AirflowException) and isinstance(exc.__cause__, RetryError)


def _last_http_error(exc: BaseException) -> str:
    """What the server said on the last attempt the provider gave up after."""
    last = exc.__cause__.last_attempt.exception() if isinstance(exc.__cause__, RetryError) else exc
    response = getattr(last, "response", None)
    return f"{last} {response.text[:500]}".strip() if response is not None else str(last)


def _safe_name(token: str) -> str:
    return (
        token
        if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", token)
        else hashlib.sha256(token.encode()).hexdigest()[:32]
    )


class DatabricksGpuHook(DatabricksHook):
    """:class:`GpuSparkBackend` on Databricks: all-purpose GPU clusters and one-time ``runs/submit`` runs.

    :param databricks_conn_id: an Airflow connection of type ``databricks`` (any auth it supports).
    :param artifact_root: a Unity Catalog volume directory, e.g. ``/Volumes/main/default/spark_triton``,
        for the wheel, job file, init script and run reports; default: connection extra ``artifact_root``.
    :param wheel: a prebuilt ``airflow_spark_triton-*.whl`` to ship; default: connection extra
        ``wheel``, else built from the source checkout.
    :param single_user_name: the user or service principal the dedicated cluster belongs to;
        default: connection extra ``single_user_name``, else the connection's own identity.
    :param poll_interval_s: seconds between state checks while waiting for a cluster or a cancel.
    :param cancel_timeout_s: how long :meth:`cancel_run` waits for the run to end.
    :param kwargs: passed to :class:`DatabricksHook` (``timeout_seconds``, ``retry_limit``,
        ``retry_delay``, ``retry_args``).
    """

    hook_name = "Databricks (Spark + Triton GPU inference)"

    def __init__(
        self,
        databricks_conn_id: str = DatabricksHook.default_conn_name,
        *,
        artifact_root: str | None = None,
        wheel: str | None = None,
        single_user_name: str | None = None,
        poll_interval_s: float = 10.0,
        cancel_timeout_s: float = 600.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("caller", "DatabricksGpuHook")
        super().__init__(databricks_conn_id=databricks_conn_id, **kwargs)
        self.retry_args["wait"] = _WaitRetryAfter(self.retry_args.get("wait", wait_none()))
        self._artifact_root = artifact_root
        self._wheel = wheel
        self._single_user_name = single_user_name
        self.poll_interval_s = poll_interval_s
        self.cancel_timeout_s = cancel_timeout_s
        self._uploaded: dict[str, str] | None = None
        self._directories: set[str] = set()

    # -- configuration -------------------------------------------------------------------------

    def _extra(self, name: str) -> Any:
        return self.databricks_conn.extra_dejson.get(name)

    @property
    def artifact_root(self) -> str:
        root = (self._artifact_root or self._extra("artifact_root") or "").rstrip("/")
        if not re.fullmatch(r"/Volumes/[^/]+/[^/]+/[^/]+(/.*)?", root):
            raise ValueError(
                f"Databricks connection {self.databricks_conn_id!r} needs extra 'artifact_root': a Unity "
                f"Catalog volume directory like /Volumes/main/default/spark_triton, got {root!r}"
            )
        return root

    def single_user_name(self) -> str:
        if not self._single_user_name:
            self._single_user_name = (
                self._extra("single_user_name") or self._do_api_call(SCIM_ME_ENDPOINT)["userName"]
            )
        return self._single_user_name

    # -- raw Files API -------------------------------------------------------------------------

    def _auth(self) -> AuthBase:
        token = self._get_token()
        if token:
            return _TokenAuth(token)
        return HTTPBasicAuth(self._get_connection_attr("login"), self.databricks_conn.password)

    def _raw_call(
        self, method: str, api_path: str, *, data: bytes | None = None, params: dict[str, str] | None = None
    ) -> requests.Response | None:
        """One non-JSON call with the provider's URL, auth, headers, proxies and retry policy.

        Returns ``None`` on 404, the Files API's answer for a missing file.
        """
        url = self._endpoint_url(api_path)
        headers = {**self.user_agent_header, **self._get_aad_headers()}
        if data is not None:
            headers["Content-Type"] = "application/octet-stream"
        auth = self._auth()
        try:
            for attempt in self._get_retry_object():
                with attempt:
                    response = requests.request(
                        method,
                        url,
                        data=data,
                        params=params,
                        auth=auth,
                        headers=headers,
                        timeout=self.timeout_seconds,
                        **self._get_requests_kwargs(),
                    )
                    if response.status_code == 404:
                        return None
                    response.raise_for_status()
                    return response
        except RetryError as e:
            last = e.last_attempt.exception()
            raise AirflowException(f"{method} {api_path} failed on every attempt (last error: {last})") from e
        except requests_exceptions.HTTPError as e:
            status, text = e.response.status_code, e.response.content.decode(errors="replace")
            raise DatabricksApiError(
                f"Response: {text}, Status Code: {status}", http_status_code=status
            ) from e
        raise AssertionError("unreachable: tenacity either returns or raises")

    def file_exists(self, remote_path: str) -> bool:
        return self._raw_call("HEAD", f"{FILES_API}{quote(remote_path)}") is not None

    def upload_file(self, local_path: str | Path, remote_path: str, *, overwrite: bool = False) -> bool:
        """Upload to a UC volume; ``False`` when the file was already there (content-addressed paths)."""
        if not overwrite and self.file_exists(remote_path):
            return False
        parent = remote_path.rsplit("/", 1)[0]
        if parent not in self._directories:  # idempotent, creates parents; once per directory
            self._raw_call("PUT", f"{DIRECTORIES_API}{quote(parent)}")
            self._directories.add(parent)
        try:
            self._raw_call(
                "PUT",
                f"{FILES_API}{quote(remote_path)}",
                data=Path(local_path).read_bytes(),
                params={"overwrite": str(overwrite).lower()},
            )
        except DatabricksApiError as exc:
            if exc.http_status_code != 409:  # 409: a concurrent task uploaded the same version first
                raise
            return False
        self.log.info("Uploaded %s to %s", Path(local_path).name, remote_path)
        return True

    def read_file(self, remote_path: str) -> bytes | None:
        response = self._raw_call("GET", f"{FILES_API}{quote(remote_path)}")
        return None if response is None else response.content

    def ensure_artifacts(self) -> dict[str, str]:
        """Upload the wheel, job file and init script of this code version once; their remote paths."""
        if self._uploaded is None:
            root = self.artifact_root
            artifacts = artifact_set(self._wheel or self._extra("wheel"))
            for local, remote in artifacts.files(root):
                self.upload_file(local, remote)
            self._uploaded = artifacts.remote_paths(root)
        return self._uploaded

    def _user_init_script(self, spec: GpuClusterSpec) -> str | None:
        """A local init script is uploaded under its content hash; remote paths pass through."""
        path = spec.init_script
        if not path or not Path(path).is_file():
            return path
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
        remote = f"{self.artifact_root}/artifacts/user/{digest}/{Path(path).name}"
        self.upload_file(path, remote)
        return remote

    # -- clusters ------------------------------------------------------------------------------

    def cluster_body(self, spec: GpuClusterSpec, tags: dict[str, str]) -> dict[str, Any]:
        paths = self.ensure_artifacts()
        return cluster_create_body(
            spec,
            tags,
            wheel_path=paths["wheel"],
            init_script_path=paths["init_script"],
            user_init_script_path=self._user_init_script(spec),
            single_user_name=self.single_user_name(),
        )

    def _single_attempt(self) -> DatabricksGpuHook:
        clone = copy.copy(self)
        clone.retry_args = {**self.retry_args, "stop": stop_after_attempt(1)}
        return clone

    def create_cluster(self, spec: GpuClusterSpec, tags: dict[str, str]) -> str:
        """``clusters/create`` is not idempotent: before each re-send, look for the cluster by tag.

        The provider's retry policy (stop, wait, retryable errors) decides when to re-send; a
        timed-out create the workspace did accept is found instead of paid for twice.
        """
        body = self.cluster_body(spec, tags)
        once = self._single_attempt()
        retrying = Retrying(
            **{
                **self.retry_args,
                "retry": retry_if_exception(_gave_up_retryable),
                "reraise": True,
                "after": lambda state: self.log.warning(
                    "clusters/create attempt %s failed (%s); looking for the cluster by tag first",
                    state.attempt_number,
                    _last_http_error(state.outcome.exception()),
                ),
            }
        )
        try:
            for attempt in retrying:
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        existing = self.find_cluster(tags)
                        if existing:
                            self.log.info(
                                "An earlier clusters/create went through; using cluster %s", existing
                            )
                            return existing
                    cluster_id = str(once._do_api_call(CREATE_CLUSTER_ENDPOINT, body)["cluster_id"])
                    self.log.info("Creating cluster %s (%s)", cluster_id, body["cluster_name"])
                    return cluster_id
        except AirflowException as exc:
            if _gave_up_retryable(exc):
                raise ClusterError(
                    f"clusters/create failed on every attempt; last: {_last_http_error(exc)}"
                ) from exc
            raise
        raise AssertionError("unreachable: tenacity either returns or raises")

    def find_cluster(self, tags: dict[str, str]) -> str | None:
        key = tag_key(tags)
        params: dict[str, Any] = {"filter_by.cluster_states": list(LIVE_STATES), "page_size": 100}
        matches: list[dict[str, Any]] = []
        while True:
            page = self._do_api_call(LIST_CLUSTERS_ENDPOINT, params)
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
            self.log.warning("Several live clusters carry these tags (%s); using the oldest", ids)
        return str(matches[0]["cluster_id"])

    def wait_for_cluster(self, cluster_id: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last = None
        while True:
            try:
                info = self._do_api_call(GET_CLUSTER_ENDPOINT, {"cluster_id": cluster_id})
            except DatabricksApiError as exc:
                if _is_missing(exc):
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
                self.log.info("Cluster %s is %s: %s", cluster_id, state, message)
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
            events = self._do_api_call(CLUSTER_EVENTS_ENDPOINT, body).get("events", [])
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
            self._do_api_call(PERMANENT_DELETE_ENDPOINT, {"cluster_id": cluster_id})
        except DatabricksApiError as exc:
            if not _is_missing(exc):
                raise
            self.log.info("Cluster %s is already gone", cluster_id)
            return
        self.log.info("Cluster %s permanently deleted", cluster_id)

    # -- runs ----------------------------------------------------------------------------------

    def submit_job(self, cluster_id: str, job: InferenceJobConfig, idempotency_token: str) -> str:
        """One ``runs/submit`` on the cluster; the job file comes from the cluster's own artifact set."""
        if not idempotency_token or len(idempotency_token) > 64:
            raise ValueError("idempotency_token must be 1 to 64 characters (a Databricks limit)")
        name = _safe_name(idempotency_token)
        cluster = self._do_api_call(GET_CLUSTER_ENDPOINT, {"cluster_id": cluster_id})
        installed = (cluster.get("spark_env_vars") or {}).get(WHEEL_ENV)
        libraries = None
        if installed:
            job_file = f"{installed.rsplit('/', 1)[0]}/{JOB_FILE.name}"
        else:
            paths = self.ensure_artifacts()
            job_file = paths["job_file"]
            libraries = [compute.Library(whl=paths["wheel"])]
            self.log.warning(
                "Cluster %s was not created by this backend: installing %s as a cluster library, "
                "which also installs the wheel's dependencies",
                cluster_id,
                paths["wheel"],
            )
        changes: dict[str, Any] = {"report_path": f"{self.artifact_root}/reports/{name}.json"}
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
        run_id = str(self.submit_run(body))
        self.log.info("Submitted run %s on cluster %s (report: %s)", run_id, cluster_id, job.report_path)
        return run_id

    def get_run_status(self, run_id: str) -> RunStatus:
        run = self.get_run(int(run_id))
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

    def get_run_progress(self, run_id: str) -> dict[str, Any] | None:
        """Not exposed on Databricks: the progress file lives on the cluster's volume; see the run page."""
        return None

    def _failure_message(self, run: dict[str, Any], state: RunState) -> str:
        """The job's own ``SPARK_TRITON_ERROR:`` line beats Databricks' generic state message."""
        summary = f"{state.life_cycle_state}/{state.result_state or '-'}: {state.state_message}".rstrip(": ")
        for task in run.get("tasks", []):
            try:
                output = self.get_run_output(int(task["run_id"]))
            except Exception as exc:
                return f"{summary} (run output unavailable: {exc})"
            errors = [
                line for line in (output.get("logs") or "").splitlines() if line.startswith(ERROR_PREFIX)
            ]
            detail = errors[-1] if errors else output.get("error")
            if detail:
                return f"{detail} ({summary})"
        return summary

    def cancel_run(self, run_id: str | int) -> None:  # type: ignore[override]
        """``runs/cancel`` is asynchronous: wait until the run (and its driver) has ended."""
        status = self.get_run_status(str(run_id))
        if status.state.is_terminal:
            return
        super().cancel_run(int(run_id))
        self.log.info("Canceling run %s", run_id)
        deadline = time.monotonic() + self.cancel_timeout_s
        while not status.state.is_terminal:
            if time.monotonic() >= deadline:
                raise RunError(
                    f"run {run_id} is still {status.state.value} {self.cancel_timeout_s:.0f}s after cancel"
                )
            time.sleep(self.poll_interval_s)
            status = self.get_run_status(str(run_id))
        self.log.info("Run %s ended: %s", run_id, status.state.value)

    @staticmethod
    def report_path_of(run: dict[str, Any]) -> str | None:
        for task in run.get("tasks", []):
            params = (task.get("spark_python_task") or {}).get("parameters") or []
            if "--job" in params[:-1]:
                return InferenceJobConfig.from_json(params[params.index("--job") + 1]).report_path
        return None

    def get_run_report(self, run_id: str) -> dict[str, Any]:
        """Read the report back from the volume; the path is in the run's own parameters."""
        run = self.get_run(int(run_id))
        path = self.report_path_of(run)
        if not path:
            raise RunError(f"run {run_id} is not a spark-triton inference run (no --job parameter)")
        content = self.read_file(path)
        if content is None:
            state = run.get("state", {})
            raise RunError(
                f"run {run_id} wrote no report at {path} "
                f"({state.get('life_cycle_state')}/{state.get('result_state')}: "
                f"{state.get('state_message', '')})"
            )
        return json.loads(content)
