from __future__ import annotations

import pytest

from airflow_spark_triton.cluster_spec import ClusterSpecError, GpuClusterSpec


def test_stage_level_scheduling_conf_gives_one_gpu_per_executor():
    spec = GpuClusterSpec(num_workers=4, executor_cores=8, spark_conf={"spark.sql.shuffle.partitions": "64"})
    conf = spec.stage_level_scheduling_conf()
    assert conf["spark.executor.cores"] == "8"
    assert conf["spark.executor.resource.gpu.amount"] == "1"
    assert conf["spark.task.resource.gpu.amount"] == "0.125"
    assert conf["spark.python.worker.reuse"] == "true"
    assert conf["spark.sql.shuffle.partitions"] == "64"


def test_tasks_per_gpu_sets_task_gpu_amount_and_local_conf_has_no_gpus():
    spec = GpuClusterSpec(executor_cores=4, tasks_per_gpu=2)
    assert spec.stage_level_scheduling_conf()["spark.task.resource.gpu.amount"] == "0.5"
    assert spec.task_gpu_amount == "0.5"
    local = spec.stage_level_scheduling_conf(with_gpus=False)
    assert "spark.executor.resource.gpu.amount" not in local
    assert local["spark.executor.cores"] == "4"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"num_workers": 0}, "num_workers"),
        ({"executor_cores": 0}, "executor_cores"),
        ({"gpus_per_executor": 0}, "spark.executor.resource.gpu.amount"),
        ({"gpus_per_executor": 2}, "'executor_cores'.*must be at least gpus_per_executor=2"),
        ({"gpus_per_executor": 2, "executor_cores": 4, "tasks_per_gpu": 3}, "tasks_per_gpu"),
        ({"executor_cores": 2, "tasks_per_gpu": 3}, "tasks_per_gpu"),
        ({"autotermination_minutes": 5}, "autotermination_minutes"),
        ({"spark_conf": {"spark.task.resource.gpu.amount": "1"}}, "spark.task.resource.gpu.amount"),
    ],
)
def test_inconsistent_specs_are_rejected_naming_the_setting(fields, message):
    with pytest.raises(ClusterSpecError, match=message):
        GpuClusterSpec(**fields)


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ClusterSpecError, match="num_wrokers"):
        GpuClusterSpec.from_dict({"num_wrokers": 2})
    assert GpuClusterSpec.from_dict(GpuClusterSpec(num_workers=3).to_dict()).num_workers == 3


def test_several_gpus_per_executor_share_tasks_evenly():
    """N GPUs on one executor: each GPU address takes tasks_per_gpu tasks, spark.task.resource.gpu.amount
    is 1/tasks_per_gpu (what Spark accepts: <= 0.5 or whole), and spare cores stay free."""
    spec = GpuClusterSpec(executor_cores=16, gpus_per_executor=4)
    conf = spec.stage_level_scheduling_conf()
    assert (conf["spark.executor.cores"], conf["spark.executor.resource.gpu.amount"]) == ("16", "4")
    assert conf["spark.task.resource.gpu.amount"] == "0.25"
    assert spec.concurrent_tasks_per_executor == 16

    uneven = GpuClusterSpec(executor_cores=6, gpus_per_executor=4)
    assert (uneven.tasks_per_gpu_or_default, uneven.concurrent_tasks_per_executor) == (1, 4)
    assert uneven.task_gpu_amount == "1"

    two_each = GpuClusterSpec(executor_cores=8, gpus_per_executor=2, tasks_per_gpu=2)
    assert (two_each.task_gpu_amount, two_each.concurrent_tasks_per_executor) == ("0.5", 4)


def test_unset_gpus_per_executor_means_one_and_round_trips():
    spec = GpuClusterSpec(executor_cores=2)
    assert spec.gpus_per_executor is None and spec.gpus == 1
    assert spec.stage_level_scheduling_conf()["spark.executor.resource.gpu.amount"] == "1"
    again = GpuClusterSpec.from_dict({"executor_cores": "8", "gpus_per_executor": "4"})
    assert (again.gpus, again.task_gpu_amount) == (4, "0.5")
    assert GpuClusterSpec.from_dict(again.to_dict()) == again
