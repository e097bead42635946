"""The Databricks connection: auth, transport and retries for the Databricks backend, and nothing else.

Every JSON call goes through the provider's ``_do_api_call``, so authentication (PAT, OAuth service
principal, Azure AD, federation), proxies, the user agent and the retry policy are the provider's,
configured on the Airflow connection as for any Databricks task. This hook adds what the provider
lacks: a back-off that honours ``Retry-After``, the raw Files API (``_do_api_call`` can only send and
parse JSON, so bytes in and out of a Unity Catalog volume go through one ``requests`` call composed
from the provider's own URL, header, token and retry helpers), a retried non-idempotent POST that
checks before each re-send, and the connection extras the backend reads.

Clusters and runs are :class:`~airflow_spark_triton.backends.databricks.backend.DatabricksBackend`'s,
which composes this hook.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from airflow.providers.common.compat.sdk import AirflowException
from airflow.providers.databricks.exceptions import DatabricksApiError
from airflow.providers.databricks.hooks.databricks import DatabricksHook
from airflow.providers.databricks.hooks.databricks_base import _TokenAuth
from requests import exceptions as requests_exceptions
from requests.auth import AuthBase, HTTPBasicAuth
from tenacity import RetryError, Retrying, retry_if_exception, stop_after_attempt, wait_none
from tenacity.wait import wait_base

from airflow_spark_triton.backends.base import BackendConfigError

SCIM_ME_ENDPOINT = ("GET", "2.0/preview/scim/v2/Me")
FILES_API = "api/2.0/fs/files"
DIRECTORIES_API = "api/2.0/fs/directories"
MAX_RETRY_AFTER_S = 120.0


class _WaitRetryAfter(wait_base):
    """The provider's back-off, stretched to the server's ``Retry-After`` when a 429/503 sends one."""

    def __init__(self, fallback: wait_base) -> None:
        self.fallback = fallback

    def __call__(self, retry_state: Any) -> float:
        base = self.fallback(retry_state)
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if gave_up_retryable(exc):  # post_checked's outer loop: the HTTP error is one level down
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
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("caller", "DatabricksGpuHook")
        super().__init__(databricks_conn_id=databricks_conn_id, **kwargs)
        self.retry_args["wait"] = _WaitRetryAfter(self.retry_args.get("wait", wait_none()))
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

    def single_user_name(self) -> str:
        if not self._single_user_name:
            self._single_user_name = (
                self._extra("single_user_name") or self._do_api_call(SCIM_ME_ENDPOINT)["userName"]
            )
        return self._single_user_name

    # -- retries ---------------------------------------------------------------------------------

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

    # -- raw Files API ---------------------------------------------------------------------------

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
        """The file's bytes, or ``None`` when it does not exist."""
        response = self._raw_call("GET", f"{FILES_API}{quote(remote_path)}")
        return None if response is None else response.content
