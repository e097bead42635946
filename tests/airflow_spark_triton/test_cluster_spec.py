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
        ({"gpus_per_executor": 2}, "spark.executor.resource.gpu.amount"),
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
