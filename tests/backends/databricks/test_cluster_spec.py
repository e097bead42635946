"""The ``clusters/create`` body: built from the SDK's typed classes, checked as the emulator and Databricks do."""

from __future__ import annotations

import pytest
from databricks.sdk.service import compute

from airflow_spark_triton.backends.databricks.cluster_spec import (
    DEFAULT_NODE_TYPE,
    DEFAULT_SPARK_VERSION,
    KEY_TAG,
    cluster_create_body,
    parse_node_type,
    sanitize_tags,
    tag_key,
)
from airflow_spark_triton.cluster_spec import ClusterSpecError, GpuClusterSpec
from tests.databricks_emulator.validation import InvalidRequest, check_call, check_object
from tests.hooks.conftest import ARTIFACT_ROOT

TAGS = {
    "airflow_dag_id": "nightly_embeddings",
    "airflow_run_id": "scheduled__2024-01-01T00:00:00+00:00",
    "airflow_task_id": "create_cluster",
}
PATHS = {
    "wheel_path": f"{ARTIFACT_ROOT}/artifacts/abc/airflow_spark_triton-0.1.0-py3-none-any.whl",
    "init_script_path": f"{ARTIFACT_ROOT}/artifacts/abc/databricks_init.sh",
    "single_user_name": "etl-sp@example.com",
}
MODEL = "spark_jobs.models.hashing_embedder:MODEL"

# -- the clusters/create body -------------------------------------------------------------------


def test_default_spec_builds_the_documented_body_and_the_sdk_accepts_it():
    body = cluster_create_body(GpuClusterSpec(), TAGS, **PATHS)

    assert body["spark_version"] == DEFAULT_SPARK_VERSION == "15.4.x-gpu-ml-scala2.12"
    assert body["node_type_id"] == DEFAULT_NODE_TYPE == "g5.xlarge"
    assert "driver_node_type_id" not in body  # Databricks defaults the driver to the worker type
    assert body["num_workers"] == 2
    assert body["autotermination_minutes"] == 60
    assert body["spark_conf"] == {
        "spark.executor.cores": "1",
        "spark.executor.resource.gpu.amount": "1",
        "spark.task.resource.gpu.amount": "1",
        "spark.python.worker.reuse": "true",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    }
    assert body["spark_env_vars"] == {
        "SPARK_TRITON_STATE_DIR": "/local_disk0/spark_triton",
        "SPARK_TRITON_WHEEL": PATHS["wheel_path"],
    }
    assert body["init_scripts"] == [{"volumes": {"destination": PATHS["init_script_path"]}}]
    assert body["custom_tags"] == {**TAGS, KEY_TAG: tag_key(TAGS)}
    assert body["data_security_mode"] == "SINGLE_USER"
    assert body["single_user_name"] == "etl-sp@example.com"
    assert (
        body["cluster_name"]
        == "spark-triton nightly_embeddings create_cluster scheduled__2024-01-01T00:00:00+00:00"
    )
    check_call(compute.ClustersAPI.create, body)  # what the emulator checks on every request
    assert compute.ClusterSpec.from_dict(body).as_dict() == body


def test_spec_fields_reach_the_body():
    spec = GpuClusterSpec(
        num_workers=4,
        executor_cores=8,
        tasks_per_gpu=4,
        node_type_id="g5.2xlarge",
        driver_node_type_id="g5.xlarge",
        spark_version="16.4.x-gpu-ml-scala2.12",
        autotermination_minutes=30,
        cluster_name="embeddings",
        spark_conf={"spark.sql.shuffle.partitions": "64"},
        spark_env_vars={"HF_HOME": "/local_disk0/hf"},
        init_script="/Workspace/Shared/extra.sh",
    )
    body = cluster_create_body(
        spec, {**TAGS, "team": "search"}, **PATHS, user_init_script_path=spec.init_script
    )
    assert body["spark_conf"]["spark.executor.cores"] == "8"
    assert body["spark_conf"]["spark.task.resource.gpu.amount"] == "0.25"
    assert body["spark_conf"]["spark.sql.shuffle.partitions"] == "64"
    assert body["spark_env_vars"]["HF_HOME"] == "/local_disk0/hf"
    assert body["init_scripts"][1] == {"workspace": {"destination": "/Workspace/Shared/extra.sh"}}
    assert (body["num_workers"], body["node_type_id"], body["driver_node_type_id"]) == (
        4,
        "g5.2xlarge",
        "g5.xlarge",
    )
    assert (body["cluster_name"], body["autotermination_minutes"]) == ("embeddings", 30)
    assert body["custom_tags"]["team"] == "search"
    check_call(compute.ClustersAPI.create, body)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"node_type_id": "m5d.large"}, "'node_type_id' must be a GPU instance type"),
        ({"node_type_id": "Standard_D4s_v3"}, "'node_type_id' must be a GPU instance type"),
        ({"node_type_id": "n2-standard-4"}, "'node_type_id' must be a GPU instance type"),
        ({"driver_node_type_id": "i3.xlarge"}, "'driver_node_type_id' must be a GPU instance type"),
        ({"driver_node_type_id": "Standard_NC4as_T4_v3"}, "'driver_node_type_id'.*different clouds"),
        ({"spark_version": "15.4.x-scala2.12"}, "'spark_version' must be a GPU runtime"),
        ({"spark_version": "12.2.x-gpu-ml-scala2.12"}, "'spark_version' must be Databricks Runtime 13"),
        ({"executor_cores": 8}, r"'executor_cores' \(spark.executor.cores=8\) exceeds the 4 vCPUs"),
        ({"spark_env_vars": {"SPARK_TRITON_WHEEL": "/x.whl"}}, "SPARK_TRITON_WHEEL"),
        ({"init_script": "scripts/extra.sh"}, "'init_script' must be a /Volumes/"),
    ],
)
def test_inconsistent_databricks_specs_are_rejected_naming_the_setting(fields, message):
    spec = GpuClusterSpec(**fields)
    with pytest.raises(ClusterSpecError, match=message):
        cluster_create_body(spec, TAGS, **PATHS, user_init_script_path=spec.init_script)


def test_unrecognised_node_types_are_not_judged():
    assert parse_node_type("my-pool-node") == parse_node_type("x")
    assert cluster_create_body(GpuClusterSpec(node_type_id="custom-gpu-node"), TAGS, **PATHS)["node_type_id"]


@pytest.mark.parametrize(
    ("node_type", "cloud", "gpu", "vcpus"),
    [
        ("g5.xlarge", "aws", True, 4),
        ("p4d.24xlarge", "aws", True, 96),
        ("g4dn.2xlarge", "aws", True, 8),
        ("i3.xlarge", "aws", False, 4),
        ("Standard_NC24ads_A100_v4", "azure", True, 24),
        ("Standard_DS3_v2", "azure", False, 3),
        ("g2-standard-8", "gcp", True, 8),
        ("a2-highgpu-1g", "gcp", True, None),
    ],
)
def test_node_type_parsing(node_type, cloud, gpu, vcpus):
    parsed = parse_node_type(node_type)
    assert (parsed.cloud, parsed.gpu, parsed.vcpus) == (cloud, gpu, vcpus)


def test_tags_follow_each_clouds_rules_and_the_key_tag_does_not_depend_on_them():
    aws = sanitize_tags(
        {"Team Name": "ML Platform", "run": "manual__2024-01-01T00:00:00+00:00", "bad<key>": "a&b"}, "aws"
    )
    assert aws == {"Team Name": "ML Platform", "run": "manual__2024-01-01T00:00:00+00:00", "bad_key_": "a_b"}
    gcp = sanitize_tags({"Team": "ML Platform", "run": "manual__2024-01-01T00:00:00+00:00", "1x": "y"}, "gcp")
    assert gcp == {"team": "ml_platform", "run": "manual__2024-01-01t00_00_00_00_00", "t_1x": "y"}
    long = sanitize_tags({"k": "v" * 300}, "aws")["k"]
    assert len(long) == 255 and long != sanitize_tags({"k": "v" * 299 + "w"}, "aws")["k"]
    gcp_body = cluster_create_body(GpuClusterSpec(node_type_id="g2-standard-4"), TAGS, **PATHS)
    assert (
        gcp_body["custom_tags"][KEY_TAG]
        == cluster_create_body(GpuClusterSpec(), TAGS, **PATHS)["custom_tags"][KEY_TAG]
    )
    with pytest.raises(ClusterSpecError, match="'aws:' prefix"):
        sanitize_tags({"aws:owner": "me"}, "aws")
    with pytest.raises(ClusterSpecError, match="'tags' has 46 tags"):
        sanitize_tags({f"t{i}": "v" for i in range(46)}, "aws")


def test_the_emulator_rejects_unknown_and_mistyped_fields_naming_them():
    body = cluster_create_body(GpuClusterSpec(), TAGS, **PATHS)
    with pytest.raises(InvalidRequest, match="unknown field 'spark_confs'"):
        check_call(compute.ClustersAPI.create, {**body, "spark_confs": {}})
    with pytest.raises(InvalidRequest, match=r"unknown field 'init_scripts\[0\].volumes.path'"):
        check_call(
            compute.ClustersAPI.create,
            {**body, "init_scripts": [{"volumes": {"destination": "/V", "path": "x"}}]},
        )
    with pytest.raises(InvalidRequest, match="'num_workers' must be an integer"):
        check_call(compute.ClustersAPI.create, {**body, "num_workers": "2"})
    with pytest.raises(InvalidRequest, match="invalid value 'SHARED'"):
        check_call(compute.ClustersAPI.create, {**body, "data_security_mode": "SHARED"})
    with pytest.raises(InvalidRequest, match="missing required field 'spark_version'"):
        check_call(compute.ClustersAPI.create, {k: v for k, v in body.items() if k != "spark_version"})
    with pytest.raises(InvalidRequest, match=r"unknown field 'body\.bogus'"):
        check_object({**body, "bogus": 1}, compute.ClusterSpec, "body")
