"""Create and delete the GPU cluster: the setup and teardown around every inference task.

Create is resumable: its cluster id is kept in the task state store, and the cluster is tagged
with the DAG run, so a retried or restarted create reuses the cluster it made instead of paying
for a second one. If create fails after the backend accepted the cluster, it deletes it itself,
because Airflow skips a teardown whose setup failed. The wait for the cluster rides out API
incidents (the backend retries 429, 5xx, connection errors and timeouts until ``ready_timeout_s``),
so only the cluster's own failure, the time running out or a kill deletes it; a create that was
killed or failed before it learnt the cluster's id looks the cluster up by its tags first.

With ``compute="job"`` on a backend that has jobs compute (Databricks), create makes no cluster: it
checks the spec, uploads the artifacts and returns a jobs compute id; each inference run gets its
own cluster, which the platform creates with the run and terminates after it, and delete cancels a
run still active on that id. The tasks, the group and the setup/teardown shape stay the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.bases.resumablejobmixin import ResumableJobMixin

from airflow_spark_triton.backends.registry import DEFAULT_CONN_ID
from airflow_spark_triton.cluster_spec import JOB, GpuClusterSpec
from airflow_spark_triton.operators.backend_cache import CachedBackend
from airflow_spark_triton.operators.trigger_params import TriggerParamsGuard

if TYPE_CHECKING:
    from airflow.sdk import Context

ACTIVE = "ACTIVE"
GONE = "GONE"


def run_tags(context: Context) -> dict[str, str]:
    """Tags that tie a cluster to the task that made it: for idempotent create and cost attribution."""
    ti = context["ti"]
    return {"airflow_dag_id": ti.dag_id, "airflow_run_id": ti.run_id, "airflow_task_id": ti.task_id}


class CreateGpuClusterOperator(CachedBackend, TriggerParamsGuard, ResumableJobMixin, BaseOperator):
    """Create a GPU Spark cluster for batch inference, wait until usable, return its ``cluster_id``.

    For ``compute="job"`` (the spec's default) on a backend with jobs compute, return a jobs compute
    id instead, after checking the spec and uploading the artifacts: no compute exists yet, so a bad
    setting fails here, and the inference task's run gets its own cluster.

    :param cluster_spec: a :class:`GpuClusterSpec` or its fields as a dict (templated).
    :param conn_id: the backend's connection: type ``databricks`` or ``spark_triton_local``; a
        missing connection means the local Spark backend.
    :param tags: extra cluster tags (templated), on top of the DAG/run/task tags.

    Settings that a run's conf changed (``conn_id``; ``cluster_spec``'s ``model``, ``init_script``,
    ``spark_conf``, ``spark_env_vars`` and other fields) must pass the deployment's ``[spark_triton]``
    allow-lists (:mod:`airflow_spark_triton.trigger_policy`); what the DAG sets is not restricted.
    """

    template_fields: Sequence[str] = ("cluster_spec", "tags", "conn_id")
    trigger_checked_fields = {"conn_id": "conn_id", "cluster_spec": "cluster_spec"}
    template_fields_renderers = {"cluster_spec": "json", "tags": "json"}
    ui_color = "#d9f2e6"
    external_id_key = "cluster_id"

    def __init__(
        self,
        *,
        cluster_spec: GpuClusterSpec | dict[str, Any] | None = None,
        conn_id: str = DEFAULT_CONN_ID,
        tags: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.cluster_spec = (
            cluster_spec.to_dict() if isinstance(cluster_spec, GpuClusterSpec) else (cluster_spec or {})
        )
        self.conn_id = conn_id
        self.tags = tags or {}
        self._cluster_id: str | None = None
        self._tags: dict[str, str] | None = None  # the tags of the cluster this try asked for

    def _spec(self) -> GpuClusterSpec:
        return GpuClusterSpec.from_dict(self.cluster_spec)

    def execute(self, context: Context) -> str:
        spec = self._spec()
        self._check_inference_tasks(context)
        backend = self.backend
        if spec.compute == JOB:
            if backend.has_job_compute:
                # Idempotent by the tags (same run, same id): nothing for the state store to resume.
                compute_id = backend.prepare_job_compute(spec, {**self.tags, **run_tags(context)})
                self.log.info("Jobs compute %s: the inference run creates its own cluster", compute_id)
                return compute_id
            self.log.info(
                "compute='job': %s has no separate jobs compute; creating the group's cluster, which "
                "exists only until the delete task either way",
                type(backend).__name__,
            )
        return self.execute_resumable(context)

    def _check_inference_tasks(self, context: Context) -> None:
        """The pre-flight checks of every inference task this one sets up (its direct downstream
        :class:`TritonInferenceOperator` tasks), before a cluster is paid for: a wrong column, model
        or batch size fails here, naming it, and no cluster is created."""
        from airflow_spark_triton.operators.inference import TritonInferenceOperator

        if not self.has_dag():  # an operator used on its own has no inference tasks to check
            return
        for task in self.get_direct_relatives(upstream=False):
            if isinstance(task, TritonInferenceOperator):
                task.check_before_cluster(context, self.backend_for)

    def submit_job(self, context: Context) -> str:
        spec = self._spec()
        tags = {**self.tags, **run_tags(context)}
        backend = self.backend
        self._tags = tags
        existing = backend.find_cluster(tags)
        if existing:
            self.log.info("Reusing cluster %s made by an earlier try of this task", existing)
            self._cluster_id = existing
            return existing
        try:
            self._cluster_id = backend.create_cluster(spec, tags)
        except BaseException as exc:
            # The request may have gone through without an answer: a cluster with these tags is
            # this try's, and nothing else would delete it (the teardown of a failed setup is skipped).
            # A setting refused before any request (a ValueError: BackendConfigError, ClusterSpecError)
            # made nothing.
            if not isinstance(exc, ValueError):
                self._delete_quietly()
            raise
        self.log.info("Creating cluster %s", self._cluster_id)
        return self._cluster_id

    def get_job_status(self, external_id: Any, context: Context) -> str:
        return (
            ACTIVE if self.backend.find_cluster({**self.tags, **run_tags(context)}) == external_id else GONE
        )

    def is_job_active(self, status: str) -> bool:
        return status == ACTIVE

    def is_job_succeeded(self, status: str) -> bool:
        return False  # an existing cluster still has to be waited for: reconnect, never skip

    def poll_until_complete(self, external_id: Any, context: Context) -> str:
        self._cluster_id = str(external_id)
        try:
            self.backend.wait_for_cluster(self._cluster_id, self._spec().ready_timeout_s)
        except BaseException as exc:
            self.log.error("Cluster %s is not usable (%s); deleting it", self._cluster_id, exc)
            self._delete_quietly()
            raise
        self.log.info("Cluster %s is ready", self._cluster_id)
        return self._cluster_id

    def get_job_result(self, external_id: Any, context: Context) -> str:
        return str(external_id)

    def on_kill(self) -> None:
        self._delete_quietly()

    def _delete_quietly(self) -> None:
        """Delete this try's cluster; before its id is known (a create that did not answer, a kill
        during the create call), the cluster is the one carrying this try's tags, if any."""
        try:
            if not self._cluster_id and self._tags:
                self._cluster_id = self.backend.find_cluster(self._tags)
                if self._cluster_id:
                    self.log.warning("Cluster %s was created without an answer", self._cluster_id)
            if self._cluster_id:
                self.backend.delete_cluster(self._cluster_id)
        except Exception:
            self.log.exception(
                "Could not delete cluster %s (tags %s); delete it by hand", self._cluster_id, self._tags
            )


class DeleteClusterOperator(CachedBackend, TriggerParamsGuard, BaseOperator):
    """Delete the cluster and everything on it. Use as the teardown of the create task.

    Deleting a cluster that is already gone succeeds, so the teardown is safe after a failed,
    retried or killed run. For a jobs compute id it cancels the run still active there (found by
    the tag its cluster carries, so a killed inference task's run is found too); the platform then
    terminates that run's cluster.
    """

    template_fields: Sequence[str] = ("cluster_id", "conn_id")
    trigger_checked_fields = {"conn_id": "conn_id"}
    ui_color = "#f2d9d9"

    def __init__(self, *, cluster_id: str, conn_id: str = DEFAULT_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cluster_id = cluster_id
        self.conn_id = conn_id

    def execute(self, context: Context) -> None:
        if not self.cluster_id or self.cluster_id == "None":
            self.log.info("No cluster was created; nothing to delete")
            return
        self.backend.delete_cluster(self.cluster_id)
        self.log.info("Teardown of %s done: deleted, or for jobs compute no run left active", self.cluster_id)
