"""One call for the whole pattern: create the GPU cluster → run inference → delete the cluster.

``gpu_batch_inference`` returns a TaskGroup whose create task is the setup and whose delete task is
the teardown, so the cluster is deleted whatever happens to the inference task, and the group can
be chained like a single task (``upstream >> group >> downstream``).

The compute mode is the spec's ``compute`` setting, not an argument of the group: the operators read
it from the spec, so a DAG built from the three operators directly (like ``dags/nightly_embeddings``)
switches the same way, and a templated spec can switch it per run. With ``compute="job"`` (the
default) on Databricks the create task makes no cluster: the infer task's run gets its own jobs
compute cluster, which Databricks terminates after it, and the delete task cancels that run if it is
still active (the infer task was killed or timed out). ``"all_purpose"`` keeps one cluster from the
create task to the delete task, for several inference tasks sharing it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_spark_triton.backends.registry import DEFAULT_CONN_ID
from airflow_spark_triton.operators.cluster import CreateGpuClusterOperator, DeleteClusterOperator
from airflow_spark_triton.operators.inference import TritonInferenceOperator

if TYPE_CHECKING:
    from airflow.sdk import TaskGroup

    from airflow_spark_triton.cluster_spec import GpuClusterSpec


def gpu_batch_inference(
    group_id: str,
    *,
    cluster_spec: GpuClusterSpec | dict[str, Any],
    conn_id: str = DEFAULT_CONN_ID,
    cluster_tags: dict[str, str] | None = None,
    create_kwargs: dict[str, Any] | None = None,
    delete_kwargs: dict[str, Any] | None = None,
    tooltip: str = "",
    **inference_kwargs: Any,
) -> TaskGroup:
    """Build ``<group_id>.create_cluster`` → ``<group_id>.infer`` → ``<group_id>.delete_cluster``.

    :param group_id: the TaskGroup id (task ids are prefixed with it).
    :param cluster_spec: passed to :class:`CreateGpuClusterOperator` (templated there); its
        ``compute`` (``"job"`` or ``"all_purpose"``) picks the compute mode. Its ``model`` defaults
        to the inference ``model``, so the create task checks (Databricks all-purpose: installs)
        that model's declared requirements; a spec given as one template string must name it itself.
    :param conn_id: the backend connection, used by all three tasks (templated).
    :param cluster_tags: extra cluster tags; the group id is always added as ``pipeline``.
    :param create_kwargs: extra BaseOperator arguments of the create task (e.g. ``execution_timeout``).
    :param delete_kwargs: extra BaseOperator arguments of the delete task (default ``retries=3``).
    :param tooltip: the group's tooltip in the UI.
    :param inference_kwargs: every argument of :class:`TritonInferenceOperator` except
        ``cluster_id`` and ``conn_id`` (``input_table``, ``output_table``, ``model``, ``outlets`` ...);
        ``task_id`` defaults to ``infer``.
    """
    from airflow.sdk import TaskGroup

    task_id = inference_kwargs.pop("task_id", "infer")
    cluster_spec = _with_model(cluster_spec, inference_kwargs.get("model"))
    with TaskGroup(group_id=group_id, tooltip=tooltip) as group:
        create = CreateGpuClusterOperator(
            task_id="create_cluster",
            conn_id=conn_id,
            cluster_spec=cluster_spec,
            tags={"pipeline": group_id, **(cluster_tags or {})},
            **(create_kwargs or {}),
        )
        infer = TritonInferenceOperator(
            task_id=task_id, conn_id=conn_id, cluster_id=create.output, **inference_kwargs
        )
        delete = DeleteClusterOperator(
            task_id="delete_cluster",
            conn_id=conn_id,
            cluster_id=create.output,
            **{"retries": 3, **(delete_kwargs or {})},
        )
        create >> infer >> delete.as_teardown(setups=create)
    return group


def _with_model(cluster_spec: GpuClusterSpec | dict[str, Any], model: Any) -> GpuClusterSpec | dict[str, Any]:
    """The spec with the inference model as its ``model`` unless it names one (even ``None``) itself.

    A templated ``model`` stays a template string: the create operator renders ``cluster_spec``.
    """
    import dataclasses

    from airflow_spark_triton.cluster_spec import GpuClusterSpec

    if not model:
        return cluster_spec
    if isinstance(cluster_spec, GpuClusterSpec):
        return cluster_spec if cluster_spec.model else dataclasses.replace(cluster_spec, model=model)
    if isinstance(cluster_spec, dict):
        return {"model": model, **cluster_spec}
    return cluster_spec
