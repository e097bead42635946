"""The Databricks connection: auth, transport and retries for the Databricks backend, and nothing else.

Every JSON call goes through the provider's ``_do_api_call``, so authentication (PAT, OAuth service
principal, Azure AD, federation), proxies, the user agent and the retry policy are the provider's,
configured on the Airflow connection as for any Databricks task. As in the provider's own
``DatabricksHook``, each endpoint the backend uses is one thin public method here (``get_cluster``,
``list_clusters``, ``create_cluster``, ``permanent_delete_cluster``, ``get_cluster_events``,
``get_library_statuses``, ``get_policy``, ``get_instance_pool``, ``list_runs``, ``get_table``; ``submit_run``,
``get_run``, ``get_run_output``, ``cancel_run`` and ``install`` are the provider's), which pages
through list answers; no caller names an endpoint. This hook adds what the provider
lacks: a back-off that honours ``Retry-After``, calls that ride out an API incident until a deadline
(:meth:`DatabricksGpuHook.riding_out`: what every wait and every call that must not be given up
uses), the raw Files API (``_do_api_call`` can only send and
parse JSON, so bytes in and out of a Unity Catalog volume go through one ``requests`` call composed
from the provider's own URL, header, token and retry helpers) whose every refusal fails naming the
path and status (a missing volume by name), a retried non-idempotent POST that checks before each
re-send, the connection extras the backend reads, and a connection test that checks ``artifact_root``.

Clusters and runs are :class:`~airflow_spark_triton.backends.databricks.backend.DatabricksBackend`'s,
which composes this hook.
"""

from __future__ import annotations

import base64
import copy
import math
import re
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
import requests
from airflow.providers.common.compat.sdk import AirflowException
from airflow.providers.databricks.exceptions import DatabricksApiError
from airflow.providers.databricks.hooks.databricks import GET_CLUSTER_ENDPOINT, DatabricksHook
from airflow.providers.databricks.hooks.databricks_base import _TokenAuth
from requests import exceptions as requests_exceptions
from requests.auth import AuthBase, HTTPBasicAuth
from tenacity import RetryError, Retrying, retry_if_exception, stop_after_attempt, wait_none
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from airflow_spark_triton.errors import BackendConfigError, BackendError, ClusterError

if TYPE_CHECKING:
    from databricks.sdk.service.catalog import TableInfo

SCIM_ME_ENDPOINT = ("GET", "2.0/preview/scim/v2/Me")
CREATE_CLUSTER_ENDPOINT = ("POST", "2.1/clusters/create")
LIST_CLUSTERS_ENDPOINT = ("GET", "2.1/clusters/list")
CLUSTER_EVENTS_ENDPOINT = ("POST", "2.1/clusters/events")
PERMANENT_DELETE_ENDPOINT = ("POST", "2.1/clusters/permanent-delete")
LIBRARY_STATUS_ENDPOINT = ("GET", "2.0/libraries/cluster-status")
GET_POLICY_ENDPOINT = ("GET", "2.0/policies/clusters/get")
GET_POOL_ENDPOINT = ("GET", "2.0/instance-pools/get")
LIST_RUNS_ENDPOINT = ("GET", "2.2/jobs/runs/list")
UNITY_CATALOG_TABLES = "2.1/unity-catalog/tables"  # GET .../{full_name}: one table's info
# Model registries: Unity Catalog's (databricks-sdk catalog.ModelVersionsAPI) and the workspace's
# MLflow registry and tracking (MLflow's REST API); a model's files through the Files API
# (/Models/<catalog>/<schema>/<model>/<version>/...) or DBFS.
UNITY_CATALOG_MODELS = "2.1/unity-catalog/models"  # .../{full_name}/aliases/{alias}, .../versions/{v}
MLFLOW_MODEL_ALIAS_ENDPOINT = ("GET", "2.0/mlflow/registered-models/alias")
MLFLOW_MODEL_VERSION_ENDPOINT = ("GET", "2.0/mlflow/model-versions/get")
MLFLOW_LATEST_VERSIONS_ENDPOINT = ("POST", "2.0/mlflow/registered-models/get-latest-versions")
MLFLOW_DOWNLOAD_URI_ENDPOINT = ("GET", "2.0/mlflow/model-versions/get-download-uri")
MLFLOW_GET_RUN_ENDPOINT = ("GET", "2.0/mlflow/runs/get")
DBFS_READ_ENDPOINT = ("GET", "2.0/dbfs/read")
DBFS_READ_CHUNK = 1024 * 1024  # the most dbfs/read returns per call
CLUSTERS_PAGE_SIZE = 100
RUNS_PAGE_SIZE = 25  # the most runs/list returns per page
FILES_API = "api/2.0/fs/files"
DIRECTORIES_API = "api/2.0/fs/directories"
MAX_RETRY_AFTER_S = 120.0
#: How long the calls that must not be given up (a cluster's delete, a run's cancel, the tag lookup
#: before a create is sent again, a submit that carries its idempotency token) ride out an API
#: incident by default: 429, 5xx, connection errors and timeouts retried with back-off until then.
INCIDENT_TIMEOUT_S = 600.0


def retry_after_s(exc: BaseException | None) -> float:
    """The server's ``Retry-After`` (seconds, capped) on a failed call, 0 when it sent none."""
    if gave_up_retryable(exc):  # post_checked's outer loop: the HTTP error is one level down
        exc = exc.__cause__.last_attempt.exception()  # type: ignore[union-attr]
    response = getattr(exc, "response", None)  # requests
    headers = response.headers if response is not None else getattr(exc, "headers", None)  # aiohttp
    header = headers.get("Retry-After") if headers else None
    try:
        return min(float(header), MAX_RETRY_AFTER_S) if header else 0.0
    except ValueError:  # the HTTP-date form; the back-off still applies
        return 0.0


class _WaitRetryAfter(wait_base):
    """The provider's back-off, stretched to the server's ``Retry-After`` when a 429/503 sends one,
    and never past ``until`` (epoch seconds) when the caller has a deadline."""

    def __init__(self, fallback: wait_base, until: float = math.inf) -> None:
        self.fallback = fallback
        self.until = until

    def __call__(self, retry_state: Any) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        wait = max(self.fallback(retry_state), retry_after_s(exc))
        return min(wait, max(0.0, self.until - time.time()))


class _StopAt(stop_base):
    """Stop retrying once the wall clock reaches ``until`` (epoch seconds: a deadline that a
    triggerer on another host reads the same way)."""

    def __init__(self, until: float) -> None:
        self.until = until

    def __call__(self, retry_state: Any) -> bool:
        return time.time() >= self.until


VOLUME_PATH = re.compile(r"^/Volumes/(?P<catalog>[^/]+)/(?P<schema>[^/]+)/(?P<volume>[^/]+)(?:/|$)")


def volume_of(remote_path: str) -> str | None:
    """``catalog.schema.volume`` of a ``/Volumes/...`` path, None for any other path."""
    m = VOLUME_PATH.match(remote_path)
    return f"{m['catalog']}.{m['schema']}.{m['volume']}" if m else None


class FilesApiError(DatabricksApiError, BackendError):
    """A Files API call the workspace refused; the message names the path and the HTTP status.

    Also a :class:`DatabricksApiError` (``http_status_code``), so callers that handle the provider's
    errors keep working, and a :class:`BackendError`, so the task fails with this reason.
    """

    def __init__(self, message: str, *, http_status_code: int | None, path: str) -> None:
        super().__init__(message, http_status_code=http_status_code)
        self.path = path


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


def is_missing(exc: BaseException) -> bool:
    """The workspace answered that the object (cluster, run) does not exist."""
    status, code, message = _error_details(exc)
    return status in (400, 404) and (
        code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "does not exist" in message.lower()
    )


def gave_up_retryable(exc: BaseException | None) -> bool:
    """The provider wraps a retryable failure it stopped retrying in AirflowException from RetryError."""
    return isinstance(exc, AirflowException) and isinstance(exc.__cause__, RetryError)


def last_http_error(exc: BaseException) -> str:
    """What the server said on the last attempt the provider gave up after."""
    last = exc.__cause__.last_attempt.exception() if isinstance(exc.__cause__, RetryError) else exc
    response = getattr(last, "response", None)
    return f"{last} {response.text[:500]}".strip() if response is not None else str(last)


class DatabricksGpuHook(DatabricksHook):
    """The Databricks provider's hook with ``Retry-After``, the Files API and this package's extras.

    :param databricks_conn_id: an Airflow connection of type ``databricks`` (any auth it supports).
    :param artifact_root: a Unity Catalog volume directory, e.g. ``/Volumes/main/default/spark_triton``,
        for the wheel, job file, init script and run reports; default: connection extra ``artifact_root``.
    :param wheel: a prebuilt ``airflow_spark_triton-*.whl`` to ship; default: connection extra
        ``wheel``, else built from the source checkout.
    :param single_user_name: the user or service principal the dedicated cluster belongs to;
        default: connection extra ``single_user_name``, else the connection's own identity.
    :param incident_timeout_s: how long the calls that must not be given up (delete, cancel, the tag
        lookup around a create, a submit with its idempotency token) ride out an API incident.
    :param kwargs: passed to :class:`DatabricksHook` (``timeout_seconds``, ``retry_limit``,
        ``retry_delay``, ``retry_args``: the policy of every other call, and the back-off of all).
    """

    hook_name = "Databricks (Spark + Triton GPU inference)"

    def __init__(
        self,
        databricks_conn_id: str = DatabricksHook.default_conn_name,
        *,
        artifact_root: str | None = None,
        wheel: str | None = None,
        single_user_name: str | None = None,
        incident_timeout_s: float = INCIDENT_TIMEOUT_S,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("caller", "DatabricksGpuHook")
        super().__init__(databricks_conn_id=databricks_conn_id, **kwargs)
        self.retry_args["wait"] = _WaitRetryAfter(self.retry_args.get("wait", wait_none()))
        self.incident_timeout_s = incident_timeout_s
        self._artifact_root = artifact_root
        self._wheel = wheel
        self._single_user_name = single_user_name
        self._directories: set[str] = set()

    # -- connection extras -----------------------------------------------------------------------

    def _extra(self, name: str) -> Any:
        return self.databricks_conn.extra_dejson.get(name)

    @property
    def artifact_root(self) -> str:
        root = (self._artifact_root or self._extra("artifact_root") or "").rstrip("/")
        if not re.fullmatch(r"/Volumes/[^/]+/[^/]+/[^/]+(/.*)?", root):
            raise BackendConfigError(
                f"Databricks connection {self.databricks_conn_id!r} needs extra 'artifact_root': a Unity "
                f"Catalog volume directory like /Volumes/main/default/spark_triton, got {root!r}"
            )
        return root

    @property
    def wheel(self) -> str | None:
        """A prebuilt wheel to ship, or None to build one from the source checkout."""
        return self._wheel or self._extra("wheel")

    @property
    def mlflow_registry_uri(self) -> str | None:
        """Which registry ``models:/`` references name (connection extra ``mlflow_registry_uri``):
        ``databricks-uc`` (default) or ``databricks``."""
        return self._extra("mlflow_registry_uri")

    def single_user_name(self) -> str:
        if not self._single_user_name:
            self._single_user_name = (
                self._extra("single_user_name") or self._do_api_call(SCIM_ME_ENDPOINT)["userName"]
            )
        return self._single_user_name

    # -- retries ---------------------------------------------------------------------------------

    @staticmethod
    def _retryable_error(exception: BaseException) -> bool:
        """The provider's retryable errors, and every aiohttp connection error (a server or load
        balancer that drops the connection) on the async calls, which the provider leaves out."""
        return DatabricksHook._retryable_error(exception) or isinstance(
            exception, aiohttp.ClientConnectionError
        )

    def incident_deadline(self) -> float:
        """``incident_timeout_s`` from now, as the epoch deadline :meth:`riding_out` takes."""
        return time.time() + self.incident_timeout_s

    def riding_out(self, until: float | None) -> DatabricksGpuHook:
        """A copy of this hook whose calls, sync and async, ride out an API incident until ``until``.

        ``until`` is a wall-clock deadline (epoch seconds; None: none, for a task without a time
        limit, which Airflow ends by killing it). A 429, a 5xx, a connection error or a timeout is
        retried with this hook's back-off (the provider's exponential wait, or ``retry_args``'
        ``wait``), stretched to the server's ``Retry-After`` and clipped at ``until``; a call still
        failing at ``until`` raises the provider's error. Other errors (4xx) raise at once. A wait
        for a run or a cluster uses this, so a minute of 503s is a minute of warnings, not a failed
        task, a canceled run or a deleted cluster.
        """
        deadline = math.inf if until is None else until
        clone = copy.copy(self)
        wait = self.retry_args["wait"]
        clone.retry_args = {
            **self.retry_args,
            "stop": _StopAt(deadline),
            "wait": _WaitRetryAfter(getattr(wait, "fallback", wait), deadline),
            "after": self._log_incident(deadline),
        }
        return clone

    def _log_incident(self, until: float) -> Callable[[Any], None]:
        def log_attempt(retry_state: Any) -> None:
            exc = retry_state.outcome.exception() if retry_state.outcome else None
            left = "no deadline" if math.isinf(until) else f"{max(0.0, until - time.time()):.0f}s left"
            self.log.warning(
                "Databricks API call failed (attempt %s, %s): %s; retrying with back-off%s",
                retry_state.attempt_number,
                left,
                f"{type(exc).__name__}: {exc}"[:300],
                f" (Retry-After {retry_after_s(exc):.0f}s)" if retry_after_s(exc) else "",
            )

        return log_attempt

    def _single_attempt(self) -> DatabricksGpuHook:
        clone = copy.copy(self)
        clone.retry_args = {**self.retry_args, "stop": stop_after_attempt(1)}
        return clone

    def post_checked(
        self,
        endpoint: tuple[str, str],
        body: dict[str, Any],
        went_through: Callable[[], dict[str, Any] | None],
    ) -> dict[str, Any]:
        """A POST with no idempotency token, retried by this hook's policy (stop, wait, retryable errors).

        Before each re-send ``went_through`` is asked whether an earlier attempt was applied after
        all (a timed-out answer); what it returns stands for the response. Raises the provider's
        ``AirflowException`` from ``RetryError`` when every attempt failed (:func:`gave_up_retryable`).
        """
        once = self._single_attempt()
        retrying = Retrying(
            **{
                **self.retry_args,
                "retry": retry_if_exception(gave_up_retryable),
                "reraise": True,
                "after": lambda state: self.log.warning(
                    "%s attempt %s failed (%s); checking whether it went through before sending it again",
                    endpoint[1],
                    state.attempt_number,
                    last_http_error(state.outcome.exception()),
                ),
            }
        )
        for attempt in retrying:
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    earlier = went_through()
                    if earlier is not None:
                        return earlier
                return once._do_api_call(endpoint, body)
        raise AssertionError("unreachable: tenacity either returns or raises")

    # -- clusters, libraries, policies, pools, runs, tables: one method per endpoint --------------

    def _all_pages(self, endpoint: tuple[str, str], params: dict[str, Any], key: str) -> list[dict[str, Any]]:
        """Every item under ``key`` of a list endpoint, following ``next_page_token``."""
        items: list[dict[str, Any]] = []
        while True:
            page = self._do_api_call(endpoint, params)
            items += page.get(key, [])
            if not page.get("next_page_token"):
                return items
            params = {**params, "page_token": page["next_page_token"]}

    def get_cluster(self, cluster_id: str) -> dict[str, Any]:
        """``clusters/get``: the cluster's whole description (state, spec, termination reason)."""
        return self._do_api_call(GET_CLUSTER_ENDPOINT, {"cluster_id": cluster_id})

    def list_clusters(self, states: Sequence[str] = ()) -> list[dict[str, Any]]:
        """``clusters/list``, every page: the clusters in one of ``states`` (every cluster if none)."""
        params: dict[str, Any] = {"page_size": CLUSTERS_PAGE_SIZE}
        if states:
            params["filter_by.cluster_states"] = list(states)
        return self._all_pages(LIST_CLUSTERS_ENDPOINT, params, "clusters")

    def create_cluster(self, json: dict[str, Any], went_through: Callable[[], str | None]) -> str:
        """``clusters/create``: the new cluster's id.

        The endpoint takes no idempotency token, so it is sent with :meth:`post_checked`: before each
        re-send ``went_through`` is asked for the cluster an earlier attempt may have created after
        all (its id, or None), and once more after the last attempt failed to answer (a timeout or
        a 5xx may still have created it): a cluster found then is the answer. Raises
        :class:`ClusterError` with the server's last answer when every attempt failed and no cluster
        was found.
        """

        def earlier() -> dict[str, Any] | None:
            cluster_id = went_through()
            return {"cluster_id": cluster_id} if cluster_id else None

        try:
            answer = self.post_checked(CREATE_CLUSTER_ENDPOINT, json, earlier)
        except AirflowException as exc:
            if not gave_up_retryable(exc):
                raise
            late = earlier()
            if late is None:
                raise ClusterError(
                    f"clusters/create failed on every attempt; last: {last_http_error(exc)}"
                ) from exc
            self.log.warning("clusters/create did not answer, but its cluster %s exists", late["cluster_id"])
            answer = late
        return str(answer["cluster_id"])

    def permanent_delete_cluster(self, cluster_id: str) -> None:
        """``clusters/permanent-delete``: terminate the cluster and remove it from the workspace."""
        self._do_api_call(PERMANENT_DELETE_ENDPOINT, {"cluster_id": cluster_id})

    def get_cluster_events(self, cluster_id: str, limit: int) -> list[dict[str, Any]]:
        """``clusters/events``: the cluster's latest ``limit`` events, newest first."""
        body = {"cluster_id": cluster_id, "order": "DESC", "page_size": limit}
        return self._do_api_call(CLUSTER_EVENTS_ENDPOINT, body).get("events", [])

    def get_library_statuses(self, cluster_id: str) -> list[dict[str, Any]]:
        """``libraries/cluster-status``: each library of the cluster with its install status."""
        answer = self._do_api_call(LIBRARY_STATUS_ENDPOINT, {"cluster_id": cluster_id})
        return answer.get("library_statuses") or []

    def get_policy(self, policy_id: str) -> dict[str, Any]:
        """``policies/clusters/get``: the cluster policy (raises the provider's error if it is not there)."""
        return self._do_api_call(GET_POLICY_ENDPOINT, {"policy_id": policy_id})

    def get_instance_pool(self, instance_pool_id: str) -> dict[str, Any]:
        """``instance-pools/get``: the pool (raises the provider's error if it is not there)."""
        return self._do_api_call(GET_POOL_ENDPOINT, {"instance_pool_id": instance_pool_id})

    def list_runs(self, *, active_only: bool = False, run_type: str | None = None) -> list[dict[str, Any]]:
        """``jobs/runs/list``, every page, with each run's tasks (their cluster specs included)."""
        params: dict[str, Any] = {"expand_tasks": "true", "limit": RUNS_PAGE_SIZE}
        if active_only:
            params["active_only"] = "true"
        if run_type:
            params["run_type"] = run_type
        return self._all_pages(LIST_RUNS_ENDPOINT, params, "runs")

    def get_table(self, full_name: str) -> TableInfo | None:
        """A Unity Catalog table's info (``GET /api/2.1/unity-catalog/tables/{full_name}``, columns
        included), or ``None`` when the table does not exist or this identity cannot see it."""
        from databricks.sdk.service.catalog import TableInfo

        try:
            body = self._do_api_call(("GET", f"{UNITY_CATALOG_TABLES}/{quote(full_name, safe='')}"))
        except AirflowException as exc:
            if is_missing(exc) or _error_details(exc)[1] in ("TABLE_DOES_NOT_EXIST", "PERMISSION_DENIED"):
                return None
            raise
        return TableInfo.from_dict(body)

    # -- model registries: Unity Catalog's and the workspace's (MLflow), and DBFS reads ----------

    def _registry_get(
        self, endpoint: tuple[str, str], params: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """A registry lookup; None when the model, version, alias or run does not exist."""
        try:
            return self._do_api_call(endpoint, params or {})
        except AirflowException as exc:
            if is_missing(exc) or _error_details(exc)[1] in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
                return None
            raise

    def get_uc_model_version(
        self, full_name: str, version: str | None = None, alias: str | None = None
    ) -> dict[str, Any] | None:
        """A Unity Catalog model version by number or alias (``ModelVersionsAPI.get`` /
        ``get_by_alias``); None when it does not exist."""
        name = quote(full_name, safe="")
        path = f"aliases/{quote(str(alias), safe='')}" if alias is not None else f"versions/{version}"
        return self._registry_get(("GET", f"{UNITY_CATALOG_MODELS}/{name}/{path}"))

    def list_uc_model_versions(self, full_name: str) -> list[dict[str, Any]]:
        """Every version of a Unity Catalog model (``ModelVersionsAPI.list``, all pages)."""
        endpoint = ("GET", f"{UNITY_CATALOG_MODELS}/{quote(full_name, safe='')}/versions")
        return self._all_pages(endpoint, {"max_results": 1000}, "model_versions")

    def get_workspace_model_version(
        self, name: str, version: str | None = None, alias: str | None = None
    ) -> dict[str, Any] | None:
        """A workspace (MLflow) registry model version by number or alias; None when it does not exist."""
        if alias is not None:
            found = self._registry_get(MLFLOW_MODEL_ALIAS_ENDPOINT, {"name": name, "alias": alias})
        else:
            found = self._registry_get(MLFLOW_MODEL_VERSION_ENDPOINT, {"name": name, "version": version})
        return None if found is None else found.get("model_version")

    def get_workspace_latest_version(self, name: str) -> dict[str, Any] | None:
        found = self._registry_get(MLFLOW_LATEST_VERSIONS_ENDPOINT, {"name": name})
        versions = (found or {}).get("model_versions") or []
        return max(versions, key=lambda v: int(v["version"]), default=None)

    def get_model_version_download_uri(self, name: str, version: str) -> str | None:
        found = self._registry_get(MLFLOW_DOWNLOAD_URI_ENDPOINT, {"name": name, "version": version})
        return None if found is None else found.get("artifact_uri")

    def get_mlflow_run(self, run_id: str) -> dict[str, Any] | None:
        found = self._registry_get(MLFLOW_GET_RUN_ENDPOINT, {"run_id": run_id})
        return None if found is None else found.get("run")

    def read_dbfs_file(self, path: str) -> bytes | None:
        """A DBFS file's bytes (``dbfs/read``, 1 MB per call), or None when it does not exist."""
        path = "/" + path.removeprefix("dbfs:").lstrip("/")
        data, offset = b"", 0
        while True:
            chunk = self._registry_get(
                DBFS_READ_ENDPOINT, {"path": path, "offset": offset, "length": DBFS_READ_CHUNK}
            )
            if chunk is None:
                return None
            read = base64.b64decode(chunk.get("data") or "")
            data, offset = data + read, offset + len(read)
            if int(chunk.get("bytes_read") or 0) < DBFS_READ_CHUNK or not read:
                return data

    # -- raw Files API ---------------------------------------------------------------------------

    def _auth(self) -> AuthBase:
        token = self._get_token()
        if token:
            return _TokenAuth(token)
        return HTTPBasicAuth(self._get_connection_attr("login"), self.databricks_conn.password)

    def _raw_call(
        self,
        method: str,
        api_path: str,
        *,
        remote_path: str,
        data: bytes | None = None,
        params: dict[str, str] | None = None,
        missing_ok: bool = False,
    ) -> requests.Response | None:
        """One non-JSON call with the provider's URL, auth, headers, proxies and retry policy.

        Every error answer raises :class:`FilesApiError` naming ``remote_path`` and the status, except a
        404 when ``missing_ok`` (a read or existence check of a file that is not there): then ``None``.
        Silence on any other error is how a wrong ``artifact_root`` used to create a cluster whose init
        script was never uploaded.
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
                    if response.status_code == 404 and missing_ok:
                        return None
                    response.raise_for_status()
                    return response
        except RetryError as e:
            last = e.last_attempt.exception()
            raise AirflowException(
                f"{method} {api_path} ({remote_path}) failed on every attempt (last error: {last})"
            ) from e
        except requests_exceptions.HTTPError as e:
            raise self._files_error(method, remote_path, e.response) from e
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _files_error(self, method: str, remote_path: str, response: requests.Response) -> FilesApiError:
        """The error a person can act on: which path, which status, and a missing volume by name."""
        status = response.status_code
        text = response.content.decode(errors="replace")[:500]
        try:
            body = response.json()
            server = f"{body.get('error_code', '')}: {body.get('message', '')}".strip(": ")
        except ValueError:
            server = text
        message = f"Files API {method} {remote_path} failed with HTTP {status}"
        volume = volume_of(remote_path)
        if status == 404 and volume and not self._volume_exists(remote_path):
            message += (
                f": the Unity Catalog volume {volume} does not exist, or this connection's identity "
                "cannot see it (USE CATALOG, USE SCHEMA and READ/WRITE VOLUME are needed)"
            )
        elif status == 403:
            message += (
                ": this connection's identity may not access this path (WRITE VOLUME is needed to upload)"
            )
        return FilesApiError(
            f"{message} (Response: {server}, Status Code: {status})",
            http_status_code=status,
            path=remote_path,
        )

    def _volume_exists(self, remote_path: str) -> bool:
        """Whether the volume of a path answers a directory metadata request: tells a missing volume
        from a missing file. Unsure answers (another error) count as existing, so no false claim is made."""
        m = VOLUME_PATH.match(remote_path)
        if m is None:
            return True
        try:
            return self.directory_exists(m.group(0).rstrip("/"))
        except Exception:
            return True

    def file_exists(self, remote_path: str) -> bool:
        head = self._raw_call(
            "HEAD", f"{FILES_API}{quote(remote_path)}", remote_path=remote_path, missing_ok=True
        )
        return head is not None

    def directory_exists(self, remote_path: str) -> bool:
        """A directory, or a volume's root, that exists and this identity can see."""
        head = self._raw_call(
            "HEAD", f"{DIRECTORIES_API}{quote(remote_path)}", remote_path=remote_path, missing_ok=True
        )
        return head is not None

    def create_directory(self, remote_path: str) -> None:
        """Idempotent, creates parents; once per directory and hook."""
        if remote_path not in self._directories:
            self._raw_call("PUT", f"{DIRECTORIES_API}{quote(remote_path)}", remote_path=remote_path)
            self._directories.add(remote_path)

    def upload_file(self, local_path: str | Path, remote_path: str, *, overwrite: bool = False) -> bool:
        """Upload to a UC volume; ``False`` when the file was already there (content-addressed paths).

        Any refusal other than "already exists" raises :class:`FilesApiError` with the path and status.
        """
        return self.upload_bytes(
            Path(local_path).read_bytes(), remote_path, overwrite=overwrite, name=Path(local_path).name
        )

    def upload_bytes(
        self, data: bytes, remote_path: str, *, overwrite: bool = False, name: str | None = None
    ) -> bool:
        """:meth:`upload_file` for bytes in memory."""
        if not overwrite and self.file_exists(remote_path):
            return False
        self.create_directory(remote_path.rsplit("/", 1)[0])
        try:
            self._raw_call(
                "PUT",
                f"{FILES_API}{quote(remote_path)}",
                remote_path=remote_path,
                data=data,
                params={"overwrite": str(overwrite).lower()},
            )
        except FilesApiError as exc:
            if exc.http_status_code != 409:  # 409: a concurrent task uploaded the same version first
                raise
            return False
        self.log.info("Uploaded %s to %s", name or remote_path.rsplit("/", 1)[-1], remote_path)
        return True

    def read_file(self, remote_path: str) -> bytes | None:
        """The file's bytes, or ``None`` when it does not exist; any other refusal raises."""
        response = self._raw_call(
            "GET", f"{FILES_API}{quote(remote_path)}", remote_path=remote_path, missing_ok=True
        )
        return None if response is None else response.content

    def delete_file(self, remote_path: str) -> None:
        """Delete a file; deleting a file that is not there succeeds."""
        self._raw_call("DELETE", f"{FILES_API}{quote(remote_path)}", remote_path=remote_path, missing_ok=True)

    def list_directory(self, remote_path: str) -> list[dict[str, Any]]:
        """Every entry of a directory, all pages (``path``, ``name``, ``is_directory``, and for files
        ``file_size`` and ``last_modified`` in epoch milliseconds); [] for a missing directory."""
        entries: list[dict[str, Any]] = []
        params: dict[str, str] | None = None
        while True:
            response = self._raw_call(
                "GET", f"{DIRECTORIES_API}{quote(remote_path)}", remote_path=remote_path, params=params,
                missing_ok=True,
            )  # fmt: skip
            page = response.json() if response is not None and response.content else {}
            entries += page.get("contents", [])
            if not page.get("next_page_token"):
                return entries
            params = {"page_token": page["next_page_token"]}

    def delete_directory(self, remote_path: str) -> None:
        """Delete an empty directory; deleting one that is not there succeeds."""
        self._raw_call(
            "DELETE", f"{DIRECTORIES_API}{quote(remote_path)}", remote_path=remote_path, missing_ok=True
        )

    # -- connection test -------------------------------------------------------------------------

    def check_artifact_root(self) -> str:
        """``artifact_root`` exists and this identity may write there: create it (idempotent), put a
        probe file, read it back, delete it. Raises naming the path; returns what was checked."""
        root = self.artifact_root
        volume = volume_of(root)
        if not self._volume_exists(root):
            raise FilesApiError(
                f"artifact_root {root}: the Unity Catalog volume {volume} does not exist, or this "
                "connection's identity cannot see it",
                http_status_code=404,
                path=root,
            )
        self.create_directory(root)
        probe = f"{root}/.spark_triton_probe_{uuid.uuid4().hex}"
        self._raw_call(
            "PUT",
            f"{FILES_API}{quote(probe)}",
            remote_path=probe,
            data=b"probe",
            params={"overwrite": "true"},
        )
        try:
            if self.read_file(probe) != b"probe":
                raise FilesApiError(
                    f"artifact_root {root}: a probe file written to {probe} did not read back",
                    http_status_code=None,
                    path=probe,
                )
        finally:
            self.delete_file(probe)
        return f"artifact_root {root} (volume {volume}) exists and is writable"

    def test_connection(self) -> tuple[bool, str]:
        """Airflow's connection-test protocol: authentication, then ``artifact_root`` exists and is writable.

        The Databricks provider's own test only lists Spark versions; a wrong ``artifact_root`` passes
        it and fails every task later, so this one also writes, reads back and deletes a probe file.
        """
        try:
            user = self._do_api_call(SCIM_ME_ENDPOINT).get("userName", "?")
            checked = self.check_artifact_root()
        except Exception as exc:
            return False, str(exc)
        return True, f"Connected as {user}; {checked}"
