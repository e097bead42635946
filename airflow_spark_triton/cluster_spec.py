"""A backend-neutral description of the GPU Spark cluster that batch inference needs.

Stage-level scheduling gives each executor exactly one GPU and lets the job start one Triton server
per node with one task per executor. The settings that make that work are derived here once, so the
Databricks and local backends cannot disagree about them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any


class ClusterSpecError(ValueError):
    """The cluster spec is inconsistent; the message names the setting."""


@dataclass(frozen=True)
class GpuClusterSpec:
    """What to create. Fields a backend does not use (e.g. ``node_type_id`` locally) are ignored there."""

    num_workers: int = 2
    executor_cores: int = 1
    gpus_per_executor: int = 1
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

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise ClusterSpecError(f"cluster setting 'num_workers' must be >= 1, got {self.num_workers}")
        if self.executor_cores < 1:
            raise ClusterSpecError(
                f"cluster setting 'executor_cores' (spark.executor.cores) must be >= 1, got {self.executor_cores}"
            )
        if self.gpus_per_executor != 1:
            raise ClusterSpecError(
                "cluster setting 'gpus_per_executor' (spark.executor.resource.gpu.amount) must be 1: "
                f"one Triton server owns each node's GPU, got {self.gpus_per_executor}"
            )
        tasks = self.concurrent_tasks_per_executor
        if tasks < 1 or tasks > self.executor_cores:
            raise ClusterSpecError(
                f"cluster setting 'tasks_per_gpu' must be between 1 and executor_cores={self.executor_cores}, "
                f"got {tasks}"
            )
        if self.autotermination_minutes < 10:
            raise ClusterSpecError(
                "cluster setting 'autotermination_minutes' must be >= 10 (Databricks' minimum); it is the "
                f"safety net if teardown never runs, got {self.autotermination_minutes}"
            )
        for key in self.spark_conf:
            if key in self.derived_spark_conf_keys:
                raise ClusterSpecError(
                    f"spark conf {key!r} is derived from the cluster spec; set executor_cores, "
                    "gpus_per_executor or tasks_per_gpu instead"
                )

    @property
    def concurrent_tasks_per_executor(self) -> int:
        """Inference tasks sharing one executor's GPU; each is a Triton client, not a model copy."""
        return self.tasks_per_gpu if self.tasks_per_gpu is not None else self.executor_cores

    @property
    def task_gpu_amount(self) -> str:
        amount = Fraction(self.gpus_per_executor, self.concurrent_tasks_per_executor)
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
            conf["spark.executor.resource.gpu.amount"] = str(self.gpus_per_executor)
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
