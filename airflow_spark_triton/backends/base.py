"""The one contract every backend implements, so operators, the trigger and DAGs never know which runs them.

Operators and the trigger call these methods and nothing else: no ``getattr`` probing. The optional
capabilities (progress, a summary link, a driver log) have defaults here that say "not available", so
a backend that cannot show them needs no code, and one that can overrides them.

Every error a backend raises on purpose is a :class:`BackendError`, an ``AirflowException``, so a task
fails with the backend's own reason and a DAG author can catch one type for all backends. They are
defined in :mod:`airflow_spark_triton.errors` (which hooks import too) and are public names here.
"""

from __future__ import annotations

import abc
import asyncio
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_spark_triton.errors import BackendConfigError, BackendError, ClusterError, RunError
from airflow_spark_triton.runs.states import RunLifecycle

if TYPE_CHECKING:
    from airflow_spark_triton.cluster_spec import GpuClusterSpec
    from spark_jobs.contract import InferenceJobConfig, RunReport
    from spark_jobs.models.mlflow_registry import ModelRegistry

__all__ = [
    "BackendConfigError",
    "BackendError",
    "ClusterError",
    "GpuSparkBackend",
    "RunError",
    "RunLifecycle",
    "RunStatus",
]


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


class GpuSparkBackend(abc.ABC):
    """Cluster lifecycle and job runs. Every method is safe to call again after a retry or crash.

    ``cluster_id`` is what :meth:`create_cluster` returned: a Databricks cluster id, a local cluster id,
    or, for spark-submit to a cluster this package does not own, the id of an *attachment* (create
    checks the master and records the settings; delete stops this package's drivers, never the cluster),
    or a *jobs compute* id from :meth:`prepare_job_compute`.
    """

    #: Whether this backend has jobs compute: a cluster per run that the platform itself creates with
    #: the run and always terminates after it (Databricks ``runs/submit`` with ``new_cluster``). The
    #: create operator uses :meth:`prepare_job_compute` for a spec with ``compute="job"`` only where
    #: this is true. Where it is false (the local and spark-submit backends), ``"job"`` and
    #: ``"all_purpose"`` both go through :meth:`create_cluster`: those clusters live exactly from the
    #: group's create task to its delete task already, which is what jobs compute guarantees.
    has_job_compute: ClassVar[bool] = False

    # -- clusters ----------------------------------------------------------------------------------

    @abc.abstractmethod
    def find_cluster(self, tags: dict[str, str]) -> str | None:
        """A live cluster carrying all ``tags``, so a retried create reuses it instead of making another."""

    @abc.abstractmethod
    def create_cluster(self, spec: GpuClusterSpec, tags: dict[str, str]) -> str:
        """Start creating; return the cluster id as soon as the backend has one (before it is ready)."""

    @abc.abstractmethod
    def wait_for_cluster(self, cluster_id: str, timeout_s: float) -> None:
        """Block until usable; raise :class:`ClusterError` with the backend's reason if it never will be."""

    @abc.abstractmethod
    def delete_cluster(self, cluster_id: str) -> None:
        """Stop everything the cluster runs and delete it; deleting a deleted cluster succeeds."""

    def prepare_job_compute(self, spec: GpuClusterSpec, tags: dict[str, str]) -> str:
        """Jobs compute: check ``spec`` and stage what a run needs without starting any compute.

        Returns a compute id that stands for a cluster id: :meth:`submit_job` on it starts the run on a
        new cluster built from ``spec`` and ``tags``, and :meth:`delete_cluster` on it cancels that
        run (the platform then terminates its cluster). The same ``tags`` give the same id, so a
        retried create is idempotent. Only called where :attr:`has_job_compute` is true.
        """
        raise BackendError(
            f"{type(self).__name__} has no jobs compute (has_job_compute is False); "
            "its create_cluster makes the group's cluster for either 'compute' setting"
        )

    # -- runs --------------------------------------------------------------------------------------

    @abc.abstractmethod
    def submit_job(
        self,
        cluster_id: str,
        job: InferenceJobConfig,
        idempotency_token: str,
        *,
        time_limit_s: float | None = None,
    ) -> str:
        """Start the run; the same token returns the same run instead of starting a second one.

        ``time_limit_s``: the task's limit, in seconds. A backend whose platform can end a run by
        itself (Databricks' ``timeout_seconds``) applies it there, so a run whose Airflow worker died
        still ends. The local and spark-submit backends have no such platform and ignore it: their
        runs are bounded by the job's own ``job_timeout_s``, the operator's cancel on
        ``execution_timeout``, and the delete task, which stops every driver on the cluster.
        """

    @abc.abstractmethod
    def get_run_status(self, run_id: str) -> RunStatus:
        """Where the run is now; a lost driver or supervisor is a terminal state with the reason."""

    def poll_run_status(self, run_id: str, until: float | None) -> RunStatus:
        """:meth:`get_run_status` for a wait loop: a backend whose calls can meet an API incident
        (429, 5xx, connection errors, timeouts) rides it out, with back-off, until ``until`` (epoch
        seconds: the waiting task's deadline; None: none) instead of failing the wait. Default: one
        :meth:`get_run_status` (state files have no incidents)."""
        return self.get_run_status(run_id)

    async def apoll_run_status(self, run_id: str, until: float | None) -> RunStatus:
        """:meth:`poll_run_status` for the triggerer's event loop. Default: in a worker thread; a
        backend with async I/O overrides it, so a trigger canceled mid-incident stops at once."""
        return await asyncio.to_thread(self.poll_run_status, run_id, until)

    @abc.abstractmethod
    def cancel_run(self, run_id: str) -> None:
        """Cancel and wait until the run's driver is gone; canceling a finished run is a no-op."""

    @abc.abstractmethod
    def get_run_report(self, run_id: str) -> RunReport:
        """The report the job wrote (counts, Delta versions, servers, timings); :class:`RunError` if none."""

    # -- optional capabilities: the defaults say "not available" -----------------------------------

    def get_run_progress(self, run_id: str) -> dict[str, Any] | None:
        """Latest ``{"rows_done", "rows_total", "rows_per_s", ...}`` of a running job, or None if unknown."""
        return None

    def run_summary_uri(self, run_id: str) -> str | None:
        """Where a person reads the run's summary (a file or page), for the task's extra link; None if none."""
        return None

    def describe_table(self, table: str) -> dict[str, Any] | None:
        """The input table's columns as ``{name: Spark JSON type}``, read without a cluster, for the
        pre-flight check (:mod:`airflow_spark_triton.preflight`); raises
        :class:`~airflow_spark_triton.backends.table_schema.TableNotFound` for a table that does
        not exist. None: this backend cannot tell before a cluster exists (the job checks then)."""
        return None

    def node_file_reader(self, directory: str) -> Callable[[str], bytes | None] | None:
        """``read(name)`` of the files in ``directory`` as the cluster's nodes see it (the file's
        bytes, None if missing), for the pre-flight check of an ``hf:`` model directory; None:
        this backend cannot look there before a cluster exists (the nodes check when they load it)."""
        return None

    def model_registry(self) -> ModelRegistry:
        """Where MLflow ``models:/`` references are pinned (an alias resolved once per DAG run) and a
        model's files read before a cluster exists: by default the MLflow client, with MLflow's own
        ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI`` (the ``[mlflow]`` extra)."""
        from spark_jobs.models.mlflow_registry import MlflowClientRegistry

        return MlflowClientRegistry()

    def workspace_host(self) -> str | None:
        """The workspace that serves ``catalog.schema.table`` names (their asset and lineage namespace); None if none."""
        return None

    def remove_expired(self, older_than: dt.timedelta) -> list[str]:
        """Remove what this backend keeps of finished clusters and runs (state directories, logs,
        reports, uploaded artifacts) that was last changed more than ``older_than`` ago, and never
        anything of a live cluster or an unfinished run; return what was removed (paths or URIs).
        Retention (``[spark_triton] retention_days``, ``dags/spark_triton_retention.py``) calls it.
        Default: this backend keeps nothing of its own."""
        return []
