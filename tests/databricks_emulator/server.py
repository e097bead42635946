"""A local Databricks REST emulator for the subset the GPU backend calls, with fault injection.

Every request is authenticated (``Authorization: Bearer``), recorded with the credential redacted,
validated against the databricks-sdk (see :mod:`validation`), and may be answered by an injected
fault first: an HTTP error with ``Retry-After``, or a delay longer than the client's timeout, per
request (:meth:`DatabricksEmulator.inject`), in bursts by count (:meth:`DatabricksEmulator.start_storm`)
or for a stretch of wall time (:meth:`DatabricksEmulator.start_outage`: an API incident).

A GET takes its parameters from the query string or, as the Databricks API also accepts and the
provider's async calls send them, from a JSON body.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from databricks.sdk.service import catalog, compute, files, jobs

from tests.databricks_emulator import validation
from tests.databricks_emulator.errors import ApiError
from tests.databricks_emulator.registry import MLFLOW_ENDPOINTS, UC_MODELS, Registries
from tests.databricks_emulator.state import Settings, Workspace

log = logging.getLogger(__name__)
REDACTED = "Bearer <redacted>"
UC_TABLES = "2.1/unity-catalog/tables/"


@dataclass(frozen=True)
class Fault:
    """An injected answer. ``process=True`` does the work first, then answers late (a lost response)."""

    status: int = 503
    error_code: str = "TEMPORARILY_UNAVAILABLE"
    message: str = "The service is temporarily unavailable (injected fault)"
    retry_after: str | None = None
    delay_s: float = 0.0
    process: bool = False

    @classmethod
    def rate_limited(cls, retry_after: str | None = "1") -> Fault:
        return cls(429, "REQUEST_LIMIT_EXCEEDED", "Too many requests (injected fault)", retry_after)

    @classmethod
    def slow(cls, delay_s: float) -> Fault:
        return cls(200, "", "", None, delay_s, process=True)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    headers: dict[str, str]
    status: int = 0

    @property
    def endpoint(self) -> str:
        return self.path.removeprefix("/api/")


@dataclass
class _Route:
    handler: Any
    sdk_method: Any = None


def _redact(headers: dict[str, str]) -> dict[str, str]:
    return {k: (REDACTED if k.lower() == "authorization" else v) for k, v in headers.items()}


class DatabricksEmulator:
    """Start with :meth:`start`, always :meth:`stop` (it also deletes any local Spark clusters)."""

    def __init__(
        self,
        token: str,
        *,
        local_spark: bool = False,
        home: Path | None = None,
        settings: Settings | None = None,
        user_name: str = "emulator-user@example.com",
    ) -> None:
        self.token = token
        self.user_name = user_name
        self._own_home = home is None
        self.home = Path(home or tempfile.mkdtemp(prefix="databricks-emulator-"))
        self.settings = settings or Settings()
        self.local_spark = local_spark
        self.requests: list[RecordedRequest] = []
        self._faults: dict[tuple[str, str], deque[Fault]] = defaultdict(deque)
        self._storm: tuple[int, tuple[Fault, ...]] | None = None
        self._storm_counts: dict[tuple[str, str], int] = defaultdict(int)
        self._outage: tuple[float, tuple[Fault, ...]] | None = None  # (until, faults answered in turn)
        self._outage_count = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.workspace: Workspace | None = None
        self._local: Any = None
        self.registries = Registries(self.home / "registries")

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> DatabricksEmulator:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.emulator = self  # type: ignore[attr-defined]
        if self.local_spark:
            from tests.databricks_emulator.local_backend import LocalBackend

            self._local = LocalBackend(self.home / "local_spark")
        self.workspace = Workspace(self.home, self.url, self.settings, self._local)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="databricks-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)
        if self.workspace is not None:
            for thread in list(self.workspace.cleanup_threads):  # job clusters and timed-out runs
                thread.join(300)
        if self._local is not None and self.workspace is not None:
            self._local.close(self.workspace)
        if self._own_home:
            shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> DatabricksEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the emulator first"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connection(self) -> dict[str, Any]:
        """The Airflow connection (``AIRFLOW_CONN_<ID>`` JSON) that reaches this emulator."""
        return {
            "conn_type": "databricks",
            "host": "127.0.0.1",
            "port": self.port,
            "schema": "http",
            "password": self.token,
        }

    # -- test controls ---------------------------------------------------------------------------

    def inject(self, method: str, endpoint: str, *faults: Fault) -> None:
        """Answer the next requests to ``endpoint`` (``2.1/clusters/create``...) with ``faults``, in order."""
        with self._lock:
            self._faults[(method, endpoint.strip("/"))].extend(faults)

    def start_storm(
        self, period: int = 4, burst: tuple[Fault, ...] = (Fault.rate_limited("0"), Fault(503))
    ) -> None:
        """From now on every endpoint answers in bursts of errors: of each ``period`` requests to one
        method and path, the first ``len(burst)`` get the burst's faults, in order (after any
        :meth:`inject` ed ones). Keep bursts shorter than the client's attempts per call."""
        if len(burst) >= period:
            raise ValueError("a storm needs at least one answered request per period")
        with self._lock:
            self._storm = (period, tuple(burst))
            self._storm_counts.clear()

    def stop_storm(self) -> None:
        with self._lock:
            self._storm = None

    def start_outage(
        self,
        duration_s: float,
        faults: tuple[Fault, ...] = (Fault.rate_limited("3"), Fault(503, retry_after="2")),
    ) -> float:
        """An API incident: for ``duration_s`` of wall time every request (any method and path) is
        answered with ``faults`` in turn, after any :meth:`inject` ed ones. Returns when it ends
        (``time.monotonic()``)."""
        until = time.monotonic() + duration_s
        with self._lock:
            self._outage = (until, tuple(faults))
            self._outage_count = 0
        return until

    def in_outage(self) -> bool:
        with self._lock:
            return self._outage is not None and time.monotonic() < self._outage[0]

    def create_volume(self, full_name: str) -> None:
        """``CREATE VOLUME catalog.schema.volume``: the Files API serves paths under it from now on."""
        with self.workspace.lock:  # type: ignore[union-attr]
            self.workspace.files.create_volume(full_name)  # type: ignore[union-attr]

    def add_policy(self, policy_id: str, definition: dict[str, Any], name: str | None = None) -> None:
        """Seed a cluster policy (see :meth:`Workspace.add_policy` for the rules it understands)."""
        self.workspace.add_policy(policy_id, definition, name)  # type: ignore[union-attr]

    def add_instance_pool(self, pool_id: str, node_type_id: str, name: str | None = None) -> None:
        """Seed an instance pool whose nodes are ``node_type_id``."""
        self.workspace.add_instance_pool(pool_id, node_type_id, name)  # type: ignore[union-attr]

    def add_table(self, full_name: str, columns: list[tuple[str, str]]) -> None:
        """Seed a Unity Catalog table: ``columns`` are ``(name, Spark type JSON)``, e.g. ``("id", '"long"')``."""
        self.workspace.add_table(full_name, columns)  # type: ignore[union-attr]

    def add_model_version(
        self, registry: str, name: str, version: int, model_files: dict[str, bytes]
    ) -> None:
        """Seed a model version's files (``MLmodel``, ``requirements.txt`` ...) in ``registry``
        (``databricks-uc``: ``catalog.schema.model``; ``databricks``: the workspace registry)."""
        self.registries.add_version(registry, name, version, model_files)

    def set_model_alias(self, registry: str, name: str, alias: str, version: int) -> None:
        self.registries.set_alias(registry, name, alias, version)

    def add_run_model(self, run_id: str, path: str, model_files: dict[str, bytes]) -> None:
        """Seed an MLflow run whose artifacts hold a model at ``path`` (in DBFS)."""
        self.registries.add_run(run_id, path, model_files)

    def fail_next_init_script(self, stderr: str = "SPARK_TRITON_INIT_ERROR: injected failure") -> None:
        with self.workspace.lock:  # type: ignore[union-attr]
            self.workspace.init_failures.append(stderr)  # type: ignore[union-attr]

    def fail_next_run(self, error: str = "RuntimeError: injected job failure") -> None:
        with self.workspace.lock:  # type: ignore[union-attr]
            self.workspace.run_failures.append(error)  # type: ignore[union-attr]

    def calls(self, method: str | None = None, endpoint: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method)
                and (endpoint is None or r.endpoint.startswith(endpoint))
            ]

    def _next_fault(self, method: str, endpoint: str) -> Fault | None:
        with self._lock:
            for (m, prefix), queue in self._faults.items():
                if m == method and queue and (endpoint == prefix or endpoint.startswith(prefix + "/")):
                    return queue.popleft()
            if self._outage is not None and time.monotonic() < self._outage[0]:
                faults = self._outage[1]
                self._outage_count += 1
                return faults[(self._outage_count - 1) % len(faults)]
            if self._storm is not None:
                period, burst = self._storm
                n = self._storm_counts[(method, endpoint)] % period
                self._storm_counts[(method, endpoint)] += 1
                if n < len(burst):
                    return burst[n]
        return None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    # -- routing ---------------------------------------------------------------------------------

    def routes(self) -> dict[tuple[str, str], _Route]:
        ws = self.workspace
        assert ws is not None
        return {
            ("POST", "2.1/clusters/create"): _Route(self._create_cluster, compute.ClustersAPI.create),
            ("GET", "2.1/clusters/get"): _Route(
                lambda b: ws.cluster(b["cluster_id"]).details(), compute.ClustersAPI.get
            ),
            ("GET", "2.1/clusters/list"): _Route(self._list_clusters, compute.ClustersAPI.list),
            ("POST", "2.1/clusters/events"): _Route(self._events, compute.ClustersAPI.events),
            ("POST", "2.1/clusters/permanent-delete"): _Route(
                lambda b: ws.permanent_delete(b["cluster_id"]) or {}, compute.ClustersAPI.permanent_delete
            ),
            ("POST", "2.2/jobs/runs/submit"): _Route(lambda b: {"run_id": ws.submit(b)}, jobs.JobsAPI.submit),
            ("GET", "2.2/jobs/runs/list"): _Route(ws.list_runs, jobs.JobsAPI.list_runs),
            ("GET", "2.0/policies/clusters/get"): _Route(
                lambda b: ws.policy(b["policy_id"]), compute.ClusterPoliciesAPI.get
            ),
            ("GET", "2.0/instance-pools/get"): _Route(
                lambda b: ws.pool(b["instance_pool_id"]), compute.InstancePoolsAPI.get
            ),
            ("GET", "2.2/jobs/runs/get"): _Route(
                lambda b: ws.run(b["run_id"]).as_run(self.url), jobs.JobsAPI.get_run
            ),
            ("GET", "2.2/jobs/runs/get-output"): _Route(
                lambda b: ws.output(b["run_id"]), jobs.JobsAPI.get_run_output
            ),
            ("POST", "2.2/jobs/runs/cancel"): _Route(
                lambda b: ws.cancel(b["run_id"]) or {}, jobs.JobsAPI.cancel_run
            ),
            ("POST", "2.0/libraries/install"): _Route(
                lambda b: ws.install_libraries(b["cluster_id"], b["libraries"]) or {},
                compute.LibrariesAPI.install,
            ),
            ("GET", "2.0/libraries/cluster-status"): _Route(
                lambda b: ws.cluster_libraries(b["cluster_id"]), compute.LibrariesAPI.cluster_status
            ),
            ("GET", "2.0/preview/scim/v2/Me"): _Route(
                lambda b: {"id": "1", "userName": self.user_name, "active": True}
            ),
        }

    def _create_cluster(self, body: dict[str, Any]) -> dict[str, Any]:
        # The brief's check too: the body must also be a ClusterSpec (what the hook builds it from).
        validation.check_object(
            {k: v for k, v in body.items() if k != "clone_from"}, compute.ClusterSpec, "body"
        )
        return {"cluster_id": self.workspace.create_cluster(body)}  # type: ignore[union-attr]

    def _list_clusters(self, body: dict[str, Any]) -> dict[str, Any]:
        states = set((body.get("filter_by") or {}).get("cluster_states") or [])
        clusters = [c.details() for c in self.workspace.list_clusters() if not states or c.state in states]  # type: ignore[union-attr]
        size = min(body.get("page_size") or 20, self.settings.max_page_size)
        start = int(body.get("page_token") or 0)
        page = clusters[start : start + size]
        out: dict[str, Any] = {"clusters": page}
        if start + size < len(clusters):
            out["next_page_token"] = str(start + size)
        if start:
            out["prev_page_token"] = str(max(0, start - size))
        return out

    def _events(self, body: dict[str, Any]) -> dict[str, Any]:
        ws = self.workspace
        assert ws is not None
        with ws.lock:
            cluster = ws.clusters.get(body["cluster_id"]) or ws.deleted.get(body["cluster_id"])
            if cluster is None:
                raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Cluster {body['cluster_id']} does not exist")
            events = list(cluster.events)
        if body.get("order", "DESC") == "DESC":
            events.reverse()
        limit = body.get("page_size") or body.get("limit") or 50
        return {"events": events[:limit], "total_count": len(events)}

    def _files(self, method: str, endpoint: str, query: dict[str, Any], raw: bytes) -> tuple[int, Any]:
        ws = self.workspace
        assert ws is not None
        kind, _, remote = endpoint.removeprefix("2.0/fs/").partition("/")
        remote = "/" + remote
        if kind == "directories" and method == "PUT":
            validation.check_call(files.FilesAPI.create_directory, {"directory_path": remote})
            ws.files.mkdir(remote)
            return 204, None
        if kind == "directories" and method == "HEAD":
            validation.check_call(files.FilesAPI.get_directory_metadata, {"directory_path": remote})
            if not ws.files.is_dir(remote):
                raise ApiError(404, "NOT_FOUND", f"The directory being accessed is not found: {remote}")
            return 200, None
        if kind == "directories" and method == "GET":
            body = validation.query_to_body(files.FilesAPI.list_directory_contents, query)
            entries = ws.files.list(remote)
            size = min(body.get("page_size") or 1000, 1000)
            start = int(body.get("page_token") or 0)
            page: dict[str, Any] = {"contents": entries[start : start + size]}
            if start + size < len(entries):
                page["next_page_token"] = str(start + size)
            return 200, page
        if kind == "directories" and method == "DELETE":
            validation.check_call(files.FilesAPI.delete_directory, {"directory_path": remote})
            ws.files.rmdir(remote)
            return 204, None
        if kind != "files":
            raise ApiError(404, "ENDPOINT_NOT_FOUND", f"No API found for '{method} /api/{endpoint}'")
        if method == "PUT":
            body = validation.query_to_body(files.FilesAPI.upload, query)
            ws.files.write(remote, raw, overwrite=body.get("overwrite", True))
            return 204, None
        if method in ("GET", "HEAD"):
            validation.query_to_body(files.FilesAPI.download, query)
            if remote.startswith("/Models/"):  # a Unity Catalog model version's files (read only)
                return 200, self.registries.model_file(remote)
            return 200, ws.files.read(remote)
        if method == "DELETE":
            validation.check_call(files.FilesAPI.delete, {"file_path": remote})
            ws.files.delete(remote)
            return 204, None
        raise ApiError(405, "METHOD_NOT_ALLOWED", f"{method} is not supported on /api/{endpoint}")

    def dispatch(
        self, method: str, endpoint: str, query: dict[str, list[str]], raw: bytes
    ) -> tuple[int, Any]:
        if endpoint.startswith("2.0/fs/"):
            return self._files(method, endpoint, query, raw)
        if endpoint.startswith(UC_MODELS) and method == "GET":
            return 200, self.registries.uc_call(endpoint, query)
        if endpoint == "2.0/dbfs/read" and method == "GET":
            return 200, self.registries.dbfs_read(query)
        if (method, endpoint) in MLFLOW_ENDPOINTS:
            body = {} if method == "GET" else json.loads(raw or b"{}")
            return 200, self.registries.mlflow_call(method, endpoint, query, body)
        if endpoint.startswith(UC_TABLES) and method == "GET":
            full_name = unquote(endpoint.removeprefix(UC_TABLES))
            body = {"full_name": full_name, **validation.query_to_body(catalog.TablesAPI.get, query)}
            validation.check_call(catalog.TablesAPI.get, body)
            return 200, self.workspace.table(full_name)  # type: ignore[union-attr]
        route = self.routes().get((method, endpoint))
        if route is None:
            raise ApiError(404, "ENDPOINT_NOT_FOUND", f"No API found for '{method} /api/{endpoint}'")
        if method == "GET" and not raw:
            body = validation.query_to_body(route.sdk_method, query) if route.sdk_method else {}
        else:
            if method == "GET" and query:
                raise ApiError(
                    400, "INVALID_PARAMETER_VALUE", "A GET takes query parameters or a JSON body, not both"
                )
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                raise ApiError(
                    400, "MALFORMED_REQUEST", "Invalid JSON given in the body of the request"
                ) from None
        if route.sdk_method is not None:
            validation.check_call(route.sdk_method, body)
        return 200, route.handler(body)


class _Handler(BaseHTTPRequestHandler):
    server_version = "DatabricksEmulator/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        emulator: DatabricksEmulator = self.server.emulator  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        is_json = "json" in (self.headers.get("Content-Type") or "") or (raw[:1] in (b"{", b"["))
        try:
            shown: Any = json.loads(raw) if raw and is_json and not path.startswith("/api/2.0/fs/") else None
        except ValueError:
            shown = None
        if shown is None and raw:
            shown = f"<{len(raw)} bytes>"
        status, payload, headers = self._answer(emulator, method, path, query, raw)
        emulator._record(RecordedRequest(method, path, query, shown, _redact(dict(self.headers)), status))
        self._send(method, status, payload, headers)

    def _answer(
        self, emulator: DatabricksEmulator, method: str, path: str, query: dict[str, list[str]], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        if self.headers.get("Authorization") != f"Bearer {emulator.token}":
            error = ApiError(
                401, "UNAUTHENTICATED", "Credential was not sent or was of an unsupported type for this API."
            )
            return error.status, error.body(), {}
        if not path.startswith("/api/"):
            return (
                404,
                {"error_code": "ENDPOINT_NOT_FOUND", "message": f"No API found for '{method} {path}'"},
                {},
            )
        endpoint = path.removeprefix("/api/")
        fault = emulator._next_fault(method, re.sub(r"/+$", "", endpoint))
        if fault is not None and not fault.process:
            time.sleep(fault.delay_s)
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            return fault.status, {"error_code": fault.error_code, "message": fault.message}, headers
        try:
            status, payload = emulator.dispatch(method, endpoint, query, raw)
            headers: dict[str, str] = {}
        except ApiError as exc:
            status, payload, headers = exc.status, exc.body(), exc.headers
        except validation.InvalidRequest as exc:
            status, payload, headers = 400, {"error_code": "INVALID_PARAMETER_VALUE", "message": str(exc)}, {}
        except Exception as exc:  # an emulator bug must look like a 500, not hang the client
            log.exception("emulator failure on %s %s", method, path)
            status, payload, headers = (
                500,
                {"error_code": "INTERNAL_ERROR", "message": f"{type(exc).__name__}: {exc}"},
                {},
            )
        if fault is not None:
            time.sleep(fault.delay_s)  # the work is done; the answer arrives after the client gave up
        return status, payload, headers

    def _send(self, method: str, status: int, payload: Any, headers: dict[str, str]) -> None:
        if isinstance(payload, bytes):
            data, content_type = payload, "application/octet-stream"
        elif payload is None:
            data, content_type = b"", "application/json"
        else:
            data, content_type = json.dumps(payload).encode(), "application/json"
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if method != "HEAD" and status != 204:
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and left; the work above is done all the same
