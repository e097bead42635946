"""The emulated workspace: clusters, one-time runs and a UC-volume file store, behind one lock.

Two modes. Fast (``local_spark=False``): clusters and runs advance on a clock (PENDING -> RUNNING ->
TERMINATED) and a successful run writes a stub report, for unit-speed tests. Local Spark
(``local_spark=True``): a Databricks cluster is backed by a real local Spark cluster and a run by
a real ``spark_jobs.batch_inference`` run, through :mod:`tests.databricks_emulator.local_backend`.
"""

from __future__ import annotations

import json
import random
import string
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_spark_triton.backends.databricks.cluster_spec import WHEEL_ENV
from tests.databricks_emulator.errors import ApiError

CREATOR = "emulator-user@example.com"
PENDING_MESSAGE = "Finding instances for new nodes, acquiring more instances if necessary"


def now_ms() -> int:
    return int(time.time() * 1000)


def new_cluster_id() -> str:
    suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=8))
    return time.strftime("%m%d-%H%M%S-", time.gmtime()) + suffix


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
            "cluster_source": "API",
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

    @property
    def task(self) -> dict[str, Any]:
        return self.body["tasks"][0]

    @property
    def is_terminal(self) -> bool:
        return self.life_cycle_state in ("TERMINATED", "SKIPPED", "INTERNAL_ERROR")

    def finish(self, life_cycle: str, result: str | None, message: str = "") -> None:
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
                if k in ("task_key", "existing_cluster_id", "spark_python_task", "libraries")
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
    """UC volume paths (``/Volumes/c/s/v/...``) mapped into a temporary directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def local(self, remote: str) -> Path:
        parts = [p for p in remote.split("/") if p]
        if len(parts) < 4 or parts[0] != "Volumes" or ".." in parts:
            raise ApiError(
                400,
                "INVALID_PARAMETER_VALUE",
                f"Invalid path {remote!r}: expected /Volumes/<catalog>/<schema>/<volume>/...",
            )
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

    def exists(self, remote: str) -> bool:
        try:
            return self.local(remote).is_file()
        except ApiError:
            return False

    def mkdir(self, remote: str) -> None:
        self.local(remote + "/x").parent.mkdir(parents=True, exist_ok=True)


@dataclass
class Settings:
    cluster_start_s: float = 0.2
    run_duration_s: float = 0.2
    cancel_s: float = 0.1
    max_page_size: int = 100  # clusters/list answers at most this many per page


class Workspace:
    """All emulated state; every public method takes the lock, so handler threads see one history."""

    def __init__(self, root: Path, base_url: str, settings: Settings, local: Any = None) -> None:
        self.lock = threading.RLock()
        self.files = FileStore(root / "files")
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
        self._next_id = 1000

    # -- clusters --------------------------------------------------------------------------------

    def create_cluster(self, body: dict[str, Any]) -> str:
        with self.lock:
            cluster = Cluster(new_cluster_id(), body)
            cluster.event("CREATING", user=CREATOR)
            if self.init_failures:
                cluster.init_failure = self.init_failures.popleft()
            else:
                cluster.init_failure = self._init_problem(body)
            self.clusters[cluster.cluster_id] = cluster
        if self.local is not None and cluster.init_failure is None:
            self.local.start_cluster(self, cluster)
        return cluster.cluster_id

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
            n = cluster.spec.get("num_workers", 0)
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
        with self.lock:
            token = body.get("idempotency_token")
            if token and token in self.tokens:
                return self.tokens[token]
            tasks = body.get("tasks") or []
            if len(tasks) != 1 or not tasks[0].get("existing_cluster_id"):
                raise ApiError(
                    400,
                    "INVALID_PARAMETER_VALUE",
                    "The emulator runs exactly one task on an existing cluster",
                )
            run = Run(self._new_id(), self._new_id(), body, tasks[0]["existing_cluster_id"])
            if self.run_failures:
                run.failure = self.run_failures.popleft()
            self.runs[run.run_id] = run
            self.task_runs[run.task_run_id] = run.run_id
            if token:
                self.tokens[token] = run.run_id
            missing = self._missing_files(tasks[0])
            if missing:
                run.finish("INTERNAL_ERROR", "FAILED", f"File {missing[0]} does not exist.")
                return run.run_id
        if self.local is not None:
            self.local.start_run(self, run)
        return run.run_id

    def _advance_run(self, run: Run) -> None:
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
                run.finish(
                    "INTERNAL_ERROR",
                    "FAILED",
                    f"Cluster {run.cluster_id} is terminated: {cluster.state_message}",
                )
            return
        run.life_cycle_state, run.state_message = "RUNNING", "In run"
        if now - run.started < self.settings.run_duration_s:
            return
        if run.failure is not None:
            run.logs = f"INFO starting\nSPARK_TRITON_ERROR: {run.failure}\n"
            run.error = "SystemExit: 1"
            run.finish("TERMINATED", "FAILED", "Workload failed, see run output for details")
        else:
            self._write_stub_report(run)
            run.logs = "INFO run report written\n"
            run.finish("TERMINATED", "SUCCESS", "")

    def _write_stub_report(self, run: Run) -> None:
        params = run.task["spark_python_task"].get("parameters", [])
        job = json.loads(params[params.index("--job") + 1]) if "--job" in params else {}
        if job.get("report_path"):
            report = {
                "status": "SUCCESS",
                "run_id": job.get("run_id"),
                "logical_date": job.get("logical_date"),
                "emulated": True,
            }
            self.files.write(job["report_path"], json.dumps(report).encode(), overwrite=True)

    def run(self, run_id: int, *, task_run_ok: bool = False) -> Run:
        with self.lock:
            if run_id not in self.runs and task_run_ok and run_id in self.task_runs:
                run_id = self.task_runs[run_id]
            run = self.runs.get(run_id)
            if run is None:
                raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Run {run_id} does not exist.")
            self._advance_run(run)
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
