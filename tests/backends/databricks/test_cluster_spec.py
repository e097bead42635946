"""The ``clusters/create`` body: built from the SDK's typed classes, checked as the emulator and Databricks do."""

from __future__ import annotations

import pytest
from databricks.sdk.service import compute

from airflow_spark_triton.backends.databricks.cluster_spec import (
    DEFAULT_NODE_TYPE,
    DEFAULT_SPARK_VERSION,
    KEY_TAG,
    build_cluster_spec,
    cluster_create_body,
    parse_node_type,
    sanitize_tags,
    tag_key,
    worker_count,
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


# -- governance: policies, pools, cloud attributes, autoscale, pass-through ----------------------


def test_governance_settings_reach_the_body_as_the_sdk_types_them():
    spec = GpuClusterSpec(
        policy_id="gpu-nightly",
        apply_policy_default_values=True,
        instance_pool_id="pool-workers",
        driver_instance_pool_id="pool-driver",
        aws_attributes={"availability": "SPOT_WITH_FALLBACK", "first_on_demand": 1, "zone_id": "auto"},
        autoscale={"min_workers": 1, "max_workers": 4},
        extra_cluster_fields={"enable_elastic_disk": True, "runtime_engine": "STANDARD"},
    )
    body = cluster_create_body(spec, TAGS, **PATHS)

    assert (body["policy_id"], body["apply_policy_default_values"]) == ("gpu-nightly", True)
    assert (body["instance_pool_id"], body["driver_instance_pool_id"]) == ("pool-workers", "pool-driver")
    assert "node_type_id" not in body and "driver_node_type_id" not in body  # the pools decide
    assert body["aws_attributes"] == {
        "availability": "SPOT_WITH_FALLBACK",
        "first_on_demand": 1,
        "zone_id": "auto",
    }
    assert body["autoscale"] == {"min_workers": 1, "max_workers": 4} and "num_workers" not in body
    assert (body["enable_elastic_disk"], body["runtime_engine"]) == (True, "STANDARD")
    check_call(compute.ClustersAPI.create, body)
    assert compute.ClusterSpec.from_dict(body).as_dict() == body


def test_azure_and_gcp_attributes_and_their_tag_rules():
    azure = cluster_create_body(
        GpuClusterSpec(
            node_type_id="Standard_NC4as_T4_v3",
            azure_attributes={
                "availability": "SPOT_WITH_FALLBACK_AZURE",
                "first_on_demand": 1,
                "spot_bid_max_price": -1,
            },
        ),
        TAGS,
        **PATHS,
    )
    assert azure["azure_attributes"]["availability"] == "SPOT_WITH_FALLBACK_AZURE"
    gcp = cluster_create_body(
        GpuClusterSpec(
            instance_pool_id="pool", gcp_attributes={"availability": "PREEMPTIBLE_WITH_FALLBACK_GCP"}
        ),
        {"Team": "ML Platform"},
        **PATHS,
    )
    assert gcp["gcp_attributes"] == {"availability": "PREEMPTIBLE_WITH_FALLBACK_GCP"}
    assert gcp["custom_tags"]["team"] == "ml_platform"  # no node type: the attributes tell the cloud
    for body in (azure, gcp):
        check_call(compute.ClustersAPI.create, body)


def test_jobs_compute_new_cluster_has_no_name_or_autotermination():
    body = build_cluster_spec(GpuClusterSpec(), TAGS, **PATHS, job_compute=True).as_dict()
    all_purpose = cluster_create_body(GpuClusterSpec(), TAGS, **PATHS)
    assert set(all_purpose) - set(body) == {"cluster_name", "autotermination_minutes"}
    check_object(body, compute.ClusterSpec, "new_cluster")


def test_templated_governance_settings_are_coerced():
    spec = GpuClusterSpec.from_dict(
        {
            "compute": "all_purpose",
            "policy_id": "p",
            "apply_policy_default_values": "true",
            "aws_attributes": "{'availability': 'SPOT_WITH_FALLBACK', 'first_on_demand': '2'}",
            "autoscale": '{"min_workers": "2", "max_workers": "6"}',
            "extra_cluster_fields": {
                "enable_elastic_disk": "false",
                "ssh_public_keys": "['ssh-ed25519 AAA']",
            },
        }
    )
    body = cluster_create_body(spec, TAGS, **PATHS)
    assert spec.compute == "all_purpose" and body["apply_policy_default_values"] is True
    assert body["aws_attributes"] == {"availability": "SPOT_WITH_FALLBACK", "first_on_demand": 2}
    assert body["autoscale"] == {"min_workers": 2, "max_workers": 6}
    assert (body["enable_elastic_disk"], body["ssh_public_keys"]) == (False, ["ssh-ed25519 AAA"])
    check_call(compute.ClustersAPI.create, body)
    assert worker_count(body) == 2  # the job waits for autoscale's minimum of Triton servers


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"compute": "jobs"}, r"'compute' must be .*'job' or 'all_purpose'"),
        ({"apply_policy_default_values": True}, "'apply_policy_default_values' needs 'policy_id'"),
        (
            {"instance_pool_id": "p", "node_type_id": "g5.xlarge"},
            "'instance_pool_id' and 'node_type_id' exclude",
        ),
        (
            {"instance_pool_id": "p", "driver_instance_pool_id": "d", "driver_node_type_id": "g5.xlarge"},
            "'driver_instance_pool_id' and 'driver_node_type_id' exclude",
        ),
        ({"driver_instance_pool_id": "d"}, "'driver_instance_pool_id' needs 'instance_pool_id'"),
        (
            {"aws_attributes": {"availabilty": "SPOT"}},
            r"'aws_attributes\.availabilty' is not a field of .*AwsAttributes",
        ),
        (
            {"aws_attributes": {"availability": "SPOT_WITH_FALLBACK_AZ"}},
            r"'aws_attributes\.availability' must be one of ON_DEMAND, SPOT, SPOT_WITH_FALLBACK",
        ),
        ({"aws_attributes": {"first_on_demand": "one"}}, r"'aws_attributes\.first_on_demand' must be int"),
        ({"aws_attributes": "spot please"}, "'aws_attributes' must be"),
        (
            {"azure_attributes": {"log_analytics_info": {"workspace": "x"}}},
            r"'azure_attributes\.log_analytics_info\.workspace' is not a field",
        ),
        (
            {"aws_attributes": {"availability": "SPOT"}, "gcp_attributes": {"zone_id": "a"}},
            "name different clouds",
        ),
        ({"autoscale": {"min_workers": 0, "max_workers": 2}}, "1 <= min_workers <= max_workers"),
        ({"autoscale": {"min_workers": 3, "max_workers": 2}}, "1 <= min_workers <= max_workers"),
        ({"autoscale": {"max_workers": 2}}, "needs both 'min_workers' and 'max_workers'"),
        ({"autoscale": {"min": 1, "max_workers": 2}}, r"'autoscale\.min' is not a field of .*AutoScale"),
        (
            {"extra_cluster_fields": {"spark_conf": {}}},
            r"'extra_cluster_fields\.spark_conf' is set by the backend from 'spark_conf'",
        ),
        ({"extra_cluster_fields": {"custom_tags": {}}}, 'from "the operator\'s tags"'),
        ({"extra_cluster_fields": {"enable_elastic_disks": True}}, "is not a clusters/create field"),
        (
            {"extra_cluster_fields": {"runtime_engine": "TURBO"}},
            r"'extra_cluster_fields\.runtime_engine' must be one of",
        ),
    ],
)
def test_bad_governance_settings_fail_naming_the_field(fields, message):
    with pytest.raises(ClusterSpecError, match=message):
        cluster_create_body(GpuClusterSpec.from_dict(fields), TAGS, **PATHS)


# -- multi-GPU nodes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node_type", "gpus"),
    [
        ("g5.xlarge", 1),
        ("g5.12xlarge", 4),
        ("g4dn.12xlarge", 4),
        ("p4d.24xlarge", 8),
        ("i3.xlarge", 0),
        ("Standard_NC24ads_A100_v4", 1),
        ("Standard_NC96ads_A100_v4", 4),
        ("Standard_NC64as_T4_v3", 4),
        ("g2-standard-48", 4),
        ("a2-highgpu-4g", 4),
        ("n2-standard-4", 0),
        ("g5.3xlarge", None),  # no such size: unknown, not assumed
    ],
)
def test_node_type_gpu_counts(node_type, gpus):
    assert parse_node_type(node_type).gpus == gpus


def test_a_four_gpu_node_type_gets_four_gpus_per_executor_and_the_sdk_accepts_the_body():
    body = cluster_create_body(GpuClusterSpec(node_type_id="g5.12xlarge"), TAGS, **PATHS)
    conf = body["spark_conf"]
    # One executor holding the node's 4 GPUs, one core per task, one task per GPU by default.
    assert conf["spark.executor.resource.gpu.amount"] == "4"
    assert conf["spark.executor.cores"] == "4"
    assert conf["spark.task.resource.gpu.amount"] == "1"
    check_call(compute.ClustersAPI.create, body)

    fed = cluster_create_body(
        GpuClusterSpec(node_type_id="Standard_NC96ads_A100_v4", executor_cores=16), TAGS, **PATHS
    )["spark_conf"]
    assert (fed["spark.executor.resource.gpu.amount"], fed["spark.executor.cores"]) == ("4", "16")
    assert fed["spark.task.resource.gpu.amount"] == "0.25"  # 4 tasks per GPU, 16 in all

    spread = cluster_create_body(
        GpuClusterSpec(node_type_id="g5.48xlarge", executor_cores=2, tasks_per_gpu=2), TAGS, **PATHS
    )["spark_conf"]
    assert (spread["spark.executor.resource.gpu.amount"], spread["spark.executor.cores"]) == ("8", "16")
    assert spread["spark.task.resource.gpu.amount"] == "0.5"


def test_explicit_gpus_per_executor_is_kept_and_checked_against_the_node_type():
    fewer = cluster_create_body(
        GpuClusterSpec(node_type_id="g5.12xlarge", gpus_per_executor=2, executor_cores=2), TAGS, **PATHS
    )["spark_conf"]
    assert fewer["spark.executor.resource.gpu.amount"] == "2"
    with pytest.raises(
        ClusterSpecError,
        match=r"'gpus_per_executor' .*=8\) exceeds the 4 GPU\(s\) of node_type_id 'g5.12xlarge'",
    ):
        cluster_create_body(
            GpuClusterSpec(node_type_id="g5.12xlarge", gpus_per_executor=8, executor_cores=8), TAGS, **PATHS
        )
    with pytest.raises(ClusterSpecError, match=r"'gpus_per_executor'.*exceeds the 1 GPU"):
        cluster_create_body(
            GpuClusterSpec(node_type_id="g5.xlarge", gpus_per_executor=2, executor_cores=2), TAGS, **PATHS
        )
    # an unknown node type (or a pool) is not judged: the explicit value stands
    body = cluster_create_body(
        GpuClusterSpec(node_type_id="custom-gpu-node", gpus_per_executor=2, executor_cores=2), TAGS, **PATHS
    )
    assert body["spark_conf"]["spark.executor.resource.gpu.amount"] == "2"


def test_the_emulator_accepts_a_four_gpu_cluster_and_its_local_twin_runs_the_same_tasks(
    make_backend, emulator
):
    from tests.databricks_emulator.local_backend import local_spec

    backend = make_backend()
    spec = GpuClusterSpec(node_type_id="g5.12xlarge", executor_cores=8, compute="all_purpose")
    cluster_id = backend.create_cluster(spec, TAGS)
    backend.wait_for_cluster(cluster_id, timeout_s=10)
    body = emulator.calls("POST", "2.1/clusters/create")[0].body
    assert body["node_type_id"] == "g5.12xlarge"
    assert {k: body["spark_conf"][k] for k in GpuClusterSpec.derived_spark_conf_keys} == {
        "spark.executor.cores": "8",
        "spark.executor.resource.gpu.amount": "4",
        "spark.task.resource.gpu.amount": "0.5",
    }
    details = backend.hook.get_cluster(cluster_id)
    assert details["spark_conf"]["spark.executor.resource.gpu.amount"] == "4"
    twin = local_spec(body)  # what the emulator runs locally: same cores, as many concurrent tasks
    assert (twin.executor_cores, twin.concurrent_tasks_per_executor) == (8, 8)
    backend.delete_cluster(cluster_id)
