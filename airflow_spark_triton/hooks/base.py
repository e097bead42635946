"""The one interface both backends implement, so operators and DAGs never know which runs them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from airflow_spark_triton.cluster_spec import GpuClusterSpec
from spark_jobs.job_config import InferenceJobConfig


class RunLifecycle(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    @property
    def is_terminal(self) -> bool:
        return self in (RunLifecycle.SUCCESS, RunLifecycle.FAILED, RunLifecycle.CANCELED)


@dataclass(frozen=True)
class RunStatus:
    run_id: str
    state: RunLifecycle
    message: str = ""
    url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "state": self.state.value, "message": self.message, "url": self.url}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunStatus:
        return cls(data["run_id"], RunLifecycle(data["state"]), data.get("message", ""), data.get("url"))


class ClusterError(RuntimeError):
    """The cluster could not be created or became unusable; the message carries the backend's reason."""


class RunError(RuntimeError):
    """The inference run failed or was canceled; the message carries the job's own error."""


@runtime_checkable
class GpuSparkBackend(Protocol):
    """Cluster lifecycle and job runs. Every method is safe to call again after a retry or crash."""

    def find_cluster(self, tags: dict[str, str]) -> str | None:
        """A live cluster carrying all ``tags``, so a retried create reuses it instead of making another."""

    def create_cluster(self, spec: GpuClusterSpec, tags: dict[str, str]) -> str:
        """Start creating; return the cluster id as soon as the backend has one (before it is ready)."""

    def wait_for_cluster(self, cluster_id: str, timeout_s: float) -> None:
        """Block until usable; raise :class:`ClusterError` with the backend's reason if it never will be."""

    def delete_cluster(self, cluster_id: str) -> None:
        """Stop everything the cluster runs and delete it; deleting a deleted cluster succeeds."""

    def submit_job(self, cluster_id: str, job: InferenceJobConfig, idempotency_token: str) -> str:
        """Start the run; the same token returns the same run instead of starting a second one."""

    def get_run_status(self, run_id: str) -> RunStatus: ...

    def cancel_run(self, run_id: str) -> None:
        """Cancel and wait until the run's driver is gone; canceling a finished run is a no-op."""

    def get_run_report(self, run_id: str) -> dict[str, Any]:
        """The JSON report the job wrote (counts, Delta versions, servers, timings)."""


@runtime_checkable
class SupportsRunProgress(Protocol):
    """Optional: backends that can show a run's progress while it runs (the local one can)."""

    def get_run_progress(self, run_id: str) -> dict[str, Any] | None:
        """Latest ``{"rows_done", "rows_total", "rows_per_s", ...}`` of the run, or None if unknown."""
