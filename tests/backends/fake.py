"""An in-memory backend that implements the whole contract, for operator and trigger tests.

It is a real :class:`GpuSparkBackend` subclass, so a contract method the operators start calling
that the ABC does not declare fails here first (the fake cannot be instantiated without it).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from airflow_spark_triton.backends.base import (
    ClusterError,
    GpuSparkBackend,
    RunError,
    RunLifecycle,
    RunStatus,
)
from spark_jobs.contract import RunReport


@dataclass
class FakeBackend(GpuSparkBackend):
    """Clusters and runs as dicts; every call is recorded in ``calls``.

    ``rows_read``: what each run's report says it read. ``run_states``: the states a run passes
    through, one per status call, the last repeated (an exception instance is raised instead). ``progress``: what ``get_run_progress`` returns
    (an exception instance is raised instead). ``cluster_error``: raised by ``wait_for_cluster``.
    ``has_job_compute``: behave like Databricks jobs compute (``prepare_job_compute`` ids whose runs
    ``delete_cluster`` cancels) instead of like the local backends. ``time_limits``: the limit each
    ``submit_job`` call passed, by run id.
    """

    rows_read: int = 5
    run_states: tuple[RunLifecycle, ...] = (RunLifecycle.SUCCESS,)
    progress: Any = None
    cluster_error: str | None = None
    has_job_compute: bool = False  # type: ignore[misc]  # the contract's ClassVar, per fake instance
    time_limits: dict[str, float | None] = field(default_factory=dict)
    clusters: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[str, Any]] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    # -- clusters --
    def find_cluster(self, tags: dict[str, str]) -> str | None:
        self.calls.append(("find_cluster", tags))
        for cluster_id, cluster in self.clusters.items():
            if cluster["state"] != "DELETED" and tags.items() <= cluster["tags"].items():
                return cluster_id
        return None

    def create_cluster(self, spec: Any, tags: dict[str, str]) -> str:
        cluster_id = f"cluster-{next(self._ids)}"
        self.calls.append(("create_cluster", cluster_id))
        self.clusters[cluster_id] = {"spec": spec, "tags": dict(tags), "state": "PENDING"}
        return cluster_id

    def wait_for_cluster(self, cluster_id: str, timeout_s: float) -> None:
        self.calls.append(("wait_for_cluster", cluster_id))
        if self.cluster_error:
            raise ClusterError(self.cluster_error)
        self.clusters[cluster_id]["state"] = "RUNNING"

    def delete_cluster(self, cluster_id: str) -> None:
        self.calls.append(("delete_cluster", cluster_id))
        if cluster_id in self.clusters:
            self.clusters[cluster_id]["state"] = "DELETED"
        if cluster_id.startswith("jobcompute-"):
            for run_id, run in self.runs.items():
                if run.get("cluster_id") == cluster_id and not run["states"][-1].is_terminal:
                    self.cancel_run(run_id)

    def prepare_job_compute(self, spec: Any, tags: dict[str, str]) -> str:
        if not self.has_job_compute:
            return super().prepare_job_compute(spec, tags)
        compute_id = "jobcompute-" + "-".join(f"{k}={v}" for k, v in sorted(tags.items()))
        self.calls.append(("prepare_job_compute", compute_id))
        self.clusters[compute_id] = {"spec": spec, "tags": dict(tags), "state": "JOB_COMPUTE"}
        return compute_id

    # -- runs --
    def submit_job(
        self, cluster_id: str, job: Any, idempotency_token: str, *, time_limit_s: float | None = None
    ) -> str:
        for run_id, run in self.runs.items():
            if run["token"] == idempotency_token:
                return run_id
        run_id = f"run-{len(self.runs) + 1}"
        self.calls.append(("submit_job", run_id))
        self.runs[run_id] = {
            "job": job, "token": idempotency_token, "states": self.run_states, "polls": 0,
            "cluster_id": cluster_id,
        }  # fmt: skip
        self.time_limits[run_id] = time_limit_s
        return run_id

    def add_run(self, run_id: str, *states: RunLifecycle) -> None:
        """A run an earlier try left (its id in the task state store), passing through ``states``."""
        self.runs[run_id] = {"job": None, "token": None, "states": states, "polls": 0}

    @property
    def submitted(self) -> list[str]:
        """Runs started by ``submit_job`` (not those an earlier try left)."""
        return [run_id for call, run_id in self.calls if call == "submit_job"]

    def get_run_status(self, run_id: str) -> RunStatus:
        run = self.runs[run_id]
        state = run["states"][min(run["polls"], len(run["states"]) - 1)]
        run["polls"] += 1
        if isinstance(state, BaseException):  # a poll that fails (an API error, the task's timeout)
            raise state
        return RunStatus(run_id, state, "" if state is not RunLifecycle.FAILED else "the job failed")

    def cancel_run(self, run_id: str) -> None:
        self.calls.append(("cancel_run", run_id))
        run = self.runs[run_id]
        if not run["states"][-1].is_terminal or run["polls"] < len(run["states"]):
            run["states"], run["polls"] = (RunLifecycle.CANCELED,), 0

    def get_run_report(self, run_id: str) -> RunReport:
        if run_id not in self.runs:
            raise RunError(f"unknown run {run_id}")
        job = self.runs[run_id]["job"]
        if job is None:  # a run an earlier try left: its report names what that try was given
            return RunReport(
                run_id, "2026-11-26", "m:M", "in", "out", "out_rejects", rows_read=self.rows_read
            )
        return RunReport.for_job(job.replace(run_id=run_id), rows_read=self.rows_read)

    def get_run_progress(self, run_id: str) -> dict[str, Any] | None:
        if isinstance(self.progress, BaseException):
            raise self.progress
        return self.progress
