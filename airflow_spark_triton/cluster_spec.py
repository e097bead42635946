"""A backend-neutral description of the GPU Spark cluster that batch inference needs.

Stage-level scheduling gives each executor all of its node's GPUs (``gpus_per_executor``, one
executor per node) and lets the job start one Triton server per node with one task per executor;
that server loads one model instance per GPU. Inference tasks share the GPUs as Triton clients
(``tasks_per_gpu`` of them per GPU). The settings that make that work are derived here once, so the
Databricks and local backends cannot disagree about them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

JOB = "job"
ALL_PURPOSE = "all_purpose"
ComputeMode = Literal["job", "all_purpose"]


class ClusterSpecError(ValueError):
    """The cluster spec is inconsistent; the message names the setting."""


@dataclass(frozen=True)
class GpuClusterSpec:
    """What to create. Fields a backend does not use (e.g. ``node_type_id`` locally) are ignored there.

    ``compute`` picks who owns the cluster's life. ``"job"`` (the default): each inference run gets
    its own cluster, which the platform creates with the run and always terminates after it
    (Databricks jobs compute, billed at the jobs rate); the create task only checks the spec and
    stages the artifacts. ``"all_purpose"``: the create task makes one cluster that every inference
    task of the group shares until the delete task. Backends without separate jobs compute (local,
    spark-submit) create the group's cluster either way; see
    :attr:`~airflow_spark_triton.backends.base.GpuSparkBackend.has_job_compute`.

    The governance settings (``policy_id`` ... ``extra_cluster_fields``) are Databricks
    ``clusters/create`` fields; the Databricks backend checks them against databricks-sdk's
    ``compute`` classes (an unknown field or a wrong type fails naming it) and other backends
    ignore them.

    ``model`` (``package.module:attribute``, like the inference task's ``model``): the served model
    whose declared ``requirements`` and ``wheels`` every node must have, checked by the create task
    so that one which cannot be installed fails there, naming it, before any inference run is paid
    for. It is a cluster setting, not a create-operator argument, because it describes what the
    cluster's nodes carry (Databricks installs it as cluster libraries, the local init script checks
    it on each node), so every backend reads it from the spec it already gets and the backend
    contract is unchanged; ``gpu_batch_inference`` fills it from its inference ``model``. ``None``:
    nothing to check.

    GPUs: one executor per node holds all the node's GPUs (``gpus_per_executor``; ``None``, the
    default, lets the Databricks backend take it from the node type), and the node's one Triton
    server loads one model instance per GPU. That keeps one server, one batching queue and one
    CUDA context per GPU whatever the number of feeding tasks; one executor per GPU would need
    either one server per GPU (a model copy and queue each, the tasks of a GPU unable to help the
    others) or executors sharing a server they do not own. ``executor_cores`` must be at least the
    GPUs, and ``tasks_per_gpu`` (default: ``executor_cores // gpus``) tasks feed each GPU.
    """

    num_workers: int = 2
    executor_cores: int = 1
    gpus_per_executor: int | None = None
    tasks_per_gpu: int | None = None
    init_script: str | None = None
    spark_conf: dict[str, str] = field(default_factory=dict)
    spark_env_vars: dict[str, str] = field(default_factory=dict)
    worker_memory: str = "2g"
    node_type_id: str | None = None
    driver_node_type_id: str | None = None
    spark_version: str | None = None
    autotermination_minutes: int = 60
    cluster_name: str | None = None
    ready_timeout_s: float = 1200.0
    compute: ComputeMode = JOB
    policy_id: str | None = None
    apply_policy_default_values: bool | None = None
    instance_pool_id: str | None = None
    driver_instance_pool_id: str | None = None
    aws_attributes: dict[str, Any] | None = None
    azure_attributes: dict[str, Any] | None = None
    gcp_attributes: dict[str, Any] | None = None
    autoscale: dict[str, Any] | None = None
    extra_cluster_fields: dict[str, Any] = field(default_factory=dict)
    model: str | None = None

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise ClusterSpecError(f"cluster setting 'num_workers' must be >= 1, got {self.num_workers}")
        if self.executor_cores < 1:
            raise ClusterSpecError(
                f"cluster setting 'executor_cores' (spark.executor.cores) must be >= 1, got {self.executor_cores}"
            )
        if self.gpus_per_executor is not None and self.gpus_per_executor < 1:
            raise ClusterSpecError(
                "cluster setting 'gpus_per_executor' (spark.executor.resource.gpu.amount) must be >= 1, "
                f"got {self.gpus_per_executor}"
            )
        gpus = self.gpus
        if self.executor_cores < gpus:
            raise ClusterSpecError(
                f"cluster setting 'executor_cores' (spark.executor.cores={self.executor_cores}) must be at "
                f"least gpus_per_executor={gpus}: every GPU needs at least one task feeding it"
            )
        if self.tasks_per_gpu is not None and not 1 <= self.tasks_per_gpu * gpus <= self.executor_cores:
            raise ClusterSpecError(
                f"cluster setting 'tasks_per_gpu' must be between 1 and executor_cores / gpus_per_executor = "
                f"{self.executor_cores}/{gpus} (each task takes a core), got {self.tasks_per_gpu}"
            )
        if self.autotermination_minutes < 10:
            raise ClusterSpecError(
                "cluster setting 'autotermination_minutes' must be >= 10 (Databricks' minimum); it is the "
                f"safety net if teardown never runs, got {self.autotermination_minutes}"
            )
        if self.compute not in (JOB, ALL_PURPOSE):
            raise ClusterSpecError(
                f"cluster setting 'compute' must be {JOB!r} (a cluster per run, created and terminated "
                f"with it) or {ALL_PURPOSE!r} (one cluster shared until the delete task), got {self.compute!r}"
            )
        if self.apply_policy_default_values is not None and not self.policy_id:
            raise ClusterSpecError(
                "cluster setting 'apply_policy_default_values' needs 'policy_id': it applies that policy's defaults"
            )
        for key in self.spark_conf:
            if key in self.derived_spark_conf_keys:
                raise ClusterSpecError(
                    f"spark conf {key!r} is derived from the cluster spec; set executor_cores, "
                    "gpus_per_executor or tasks_per_gpu instead"
                )

    @property
    def gpus(self) -> int:
        """GPUs of each executor. ``gpus_per_executor=None`` means the node's GPUs: the Databricks
        backend fills it from the node type (:func:`~airflow_spark_triton.backends.databricks.cluster_spec.with_node_gpus`);
        where nothing says, one."""
        return self.gpus_per_executor if self.gpus_per_executor is not None else 1

    @property
    def tasks_per_gpu_or_default(self) -> int:
        """Tasks sharing one GPU: ``tasks_per_gpu``, else as many as the executor's cores allow."""
        return self.tasks_per_gpu if self.tasks_per_gpu is not None else self.executor_cores // self.gpus

    @property
    def concurrent_tasks_per_executor(self) -> int:
        """Inference tasks sharing one executor's GPUs; each is a Triton client, not a model copy.

        A whole number of tasks per GPU, so every GPU gets the same share: Spark hands each task one
        GPU address, and with ``1/tasks_per_gpu`` per task each address takes ``tasks_per_gpu``
        tasks. Cores beyond that (``executor_cores`` not a multiple of the GPUs) stay free.
        """
        return self.tasks_per_gpu_or_default * self.gpus

    @property
    def task_gpu_amount(self) -> str:
        """``spark.task.resource.gpu.amount``: ``1/tasks_per_gpu``, which Spark accepts (<= 0.5 or 1)."""
        amount = Fraction(self.gpus, self.concurrent_tasks_per_executor)
        return str(float(amount)) if amount.denominator != 1 else str(amount.numerator)

    derived_spark_conf_keys = frozenset(
        {
            "spark.executor.cores",
            "spark.executor.resource.gpu.amount",
            "spark.task.resource.gpu.amount",
        }
    )

    def stage_level_scheduling_conf(self, *, with_gpus: bool = True) -> dict[str, str]:
        """The Spark conf a GPU inference cluster needs, merged over the user's ``spark_conf``."""
        conf = {
            "spark.python.worker.reuse": "true",
            "spark.sql.execution.arrow.pyspark.enabled": "true",
            "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
            **self.spark_conf,
            "spark.executor.cores": str(self.executor_cores),
        }
        if with_gpus:
            conf["spark.executor.resource.gpu.amount"] = str(self.gpus)
            conf["spark.task.resource.gpu.amount"] = self.task_gpu_amount
        return conf

    @classmethod
    def from_dict(cls, data: Any) -> GpuClusterSpec:
        """The spec from its fields as given to an operator: rendered templates are coerced to each
        field's type (``"2"`` -> 2), and the whole dict may have been rendered to text."""
        from airflow_spark_triton.settings import coerce_fields, coerce_mapping

        fields = coerce_mapping("cluster_spec", data, label="operator setting", error=ClusterSpecError)
        return cls(**coerce_fields(cls, fields, label="cluster setting", error=ClusterSpecError))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
