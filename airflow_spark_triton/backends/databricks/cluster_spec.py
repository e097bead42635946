"""The Databricks ``clusters/create`` body for a :class:`GpuClusterSpec`, built from the SDK's typed classes.

Building through ``databricks.sdk.service.compute`` dataclasses (not hand-written dicts) means a
misspelt or misplaced field fails here, in the Airflow worker, instead of as a 400 from the
workspace after a scheduler round trip. Checks that only Databricks cares about (GPU node types,
GPU runtimes, tag rules) live here too, so the backend-neutral spec stays backend-neutral.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from databricks.sdk.service import compute

from airflow_spark_triton.cluster_spec import ClusterSpecError, GpuClusterSpec
from spark_jobs.node_state import STATE_DIR_ENV

# Python 3.11 like this package (DBR 16.x ships 3.12, outside ``requires-python``); the example
# runtime of Databricks' own GPU documentation.
DEFAULT_SPARK_VERSION = "15.4.x-gpu-ml-scala2.12"
DEFAULT_NODE_TYPE = "g5.xlarge"  # AWS, 1x A10G, 4 vCPU
STATE_DIR = "/local_disk0/spark_triton"
WHEEL_ENV = "SPARK_TRITON_WHEEL"
KEY_TAG = "spark_triton_key"  # one hex tag that find_cluster matches on, whatever the cloud's tag rules
MIN_RUNTIME_MAJOR = 13  # init scripts on UC volumes and Spark >= 3.4 stage-level scheduling
MAX_CUSTOM_TAGS = 45  # AWS allows 50 tags per instance; Databricks adds its default tags on top

_AWS = re.compile(r"^(?P<family>[a-z]+\d+[a-z-]*)\.(?P<size>(?P<n>\d*)x?large|metal[\w-]*)$")
_AZURE = re.compile(r"^Standard_(?P<family>[A-Z]+)(?P<n>\d+)", re.IGNORECASE)
_GCP = re.compile(r"^(?P<family>[a-z]\d[a-z]?)-(?P<kind>[a-z]+)-(?P<n>\d+)[a-z]?$")
_RUNTIME = re.compile(r"^(?P<major>\d+)\.(?P<minor>\d+|x)\.")


@dataclass(frozen=True)
class NodeType:
    """What the node type id tells about itself; ``None`` where the name does not say."""

    cloud: str | None
    gpu: bool | None
    vcpus: int | None


def parse_node_type(node_type_id: str) -> NodeType:
    """Recognise the clouds' naming schemes; anything else (pools, new families) is not judged."""
    if m := _AWS.match(node_type_id):
        size = m["size"]
        vcpus = None if size.startswith("metal") else (2 if size == "large" else 4 * int(m["n"] or 1))
        return NodeType("aws", re.match(r"^[gp]\d", m["family"]) is not None, vcpus)
    if m := _AZURE.match(node_type_id):
        return NodeType("azure", m["family"].upper() in ("NC", "ND", "NV"), int(m["n"]))
    if m := _GCP.match(node_type_id):
        gpu = m["family"] in ("a2", "a3", "g2")
        return NodeType("gcp", gpu, int(m["n"]) if m["kind"] in ("standard", "highmem", "highcpu") else None)
    return NodeType(None, None, None)


def check_databricks_spec(spec: GpuClusterSpec) -> tuple[str, str, str | None]:
    """Reject what Databricks would reject later, or accept and then run without GPUs.

    Returns ``(spark_version, node_type_id, driver_node_type_id)`` with defaults applied.
    """
    spark_version = spec.spark_version or DEFAULT_SPARK_VERSION
    node_type_id = spec.node_type_id or DEFAULT_NODE_TYPE
    if "-gpu-" not in spark_version:
        raise ClusterSpecError(
            f"cluster setting 'spark_version' must be a GPU runtime such as {DEFAULT_SPARK_VERSION!r}: "
            f"{spark_version!r} has no CUDA or GPU scheduling"
        )
    m = _RUNTIME.match(spark_version)
    if m and int(m["major"]) < MIN_RUNTIME_MAJOR:
        raise ClusterSpecError(
            f"cluster setting 'spark_version' must be Databricks Runtime {MIN_RUNTIME_MAJOR} or later "
            f"(init scripts on volumes, stage-level scheduling), got {spark_version!r}"
        )
    worker = parse_node_type(node_type_id)
    if worker.gpu is False:
        raise ClusterSpecError(
            f"cluster setting 'node_type_id' must be a GPU instance type (e.g. {DEFAULT_NODE_TYPE}, "
            f"Standard_NC4as_T4_v3, g2-standard-4), got {node_type_id!r}"
        )
    if worker.vcpus is not None and spec.executor_cores > worker.vcpus:
        raise ClusterSpecError(
            f"cluster setting 'executor_cores' (spark.executor.cores={spec.executor_cores}) exceeds the "
            f"{worker.vcpus} vCPUs of node_type_id {node_type_id!r}: the executor would never start"
        )
    driver = spec.driver_node_type_id
    if driver is not None:
        parsed = parse_node_type(driver)
        if parsed.gpu is False:
            raise ClusterSpecError(
                f"cluster setting 'driver_node_type_id' must be a GPU instance type too (Databricks "
                f"requires GPU driver and workers on GPU runtimes), got {driver!r}"
            )
        if parsed.cloud and worker.cloud and parsed.cloud != worker.cloud:
            raise ClusterSpecError(
                f"cluster settings 'driver_node_type_id' ({driver!r}, {parsed.cloud}) and 'node_type_id' "
                f"({node_type_id!r}, {worker.cloud}) name instance types of different clouds"
            )
    if WHEEL_ENV in spec.spark_env_vars:
        raise ClusterSpecError(f"spark env var {WHEEL_ENV!r} is set by the Databricks backend; remove it")
    return spark_version, node_type_id, driver


def tag_key(tags: dict[str, str]) -> str:
    """A stable digest of the caller's tags: the same tags find the same cluster on every retry."""
    canonical = json.dumps(sorted(tags.items()), separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _fit(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{text[: limit - 9]}-{digest}"


def sanitize_tags(tags: dict[str, str], cloud: str | None) -> dict[str, str]:
    """Make tags valid for the cloud's tag/label rules; Databricks passes them on to every VM.

    AWS/Azure: ASCII letters, digits, space and ``_.:/=+-@`` (no ``/`` in keys), keys <= 127 and
    values <= 255 chars. GCP labels: lowercase letters, digits, ``_-``, <= 63 chars, keys start with a
    letter. A value shortened to fit keeps a digest suffix so distinct values stay distinct.
    """
    out: dict[str, str] = {}
    for raw_key, raw_value in tags.items():
        key, value = str(raw_key), str(raw_value)
        if key.lower().startswith("aws:"):
            raise ClusterSpecError(f"cluster tag {key!r}: the 'aws:' prefix is reserved by AWS")
        if cloud == "gcp":
            key = re.sub(r"[^a-z0-9_-]", "_", key.lower())
            key = _fit(key if key[:1].isalpha() else f"t_{key}", 63)
            value = _fit(re.sub(r"[^a-z0-9_-]", "_", value.lower()), 63)
        else:
            key = _fit(re.sub(r"[^A-Za-z0-9 _.:=+@-]", "_", key), 127)
            value = _fit(re.sub(r"[^A-Za-z0-9 _.:/=+@-]", "_", value), 255)
        if not key.strip():
            raise ClusterSpecError(f"cluster tag {raw_key!r} has no usable characters")
        if key in out:
            raise ClusterSpecError(f"cluster tags {raw_key!r} and another tag both become {key!r}")
        out[key] = value
    if len(out) > MAX_CUSTOM_TAGS:
        raise ClusterSpecError(f"cluster setting 'tags' has {len(out)} tags; at most {MAX_CUSTOM_TAGS} fit")
    return out


def init_script_info(path: str) -> compute.InitScriptInfo:
    """Where Databricks fetches a script from, by the path's scheme."""
    if path.startswith("/Volumes/"):
        return compute.InitScriptInfo(volumes=compute.VolumesStorageInfo(destination=path))
    if path.startswith("/Workspace/"):
        return compute.InitScriptInfo(workspace=compute.WorkspaceStorageInfo(destination=path))
    if path.startswith("s3://"):
        return compute.InitScriptInfo(s3=compute.S3StorageInfo(destination=path))
    if path.startswith("gs://"):
        return compute.InitScriptInfo(gcs=compute.GcsStorageInfo(destination=path))
    if path.startswith("abfss://"):
        return compute.InitScriptInfo(abfss=compute.Adlsgen2Info(destination=path))
    raise ClusterSpecError(
        f"cluster setting 'init_script' must be a /Volumes/, /Workspace/, s3://, gs:// or abfss:// path "
        f"(or a local file the backend uploads), got {path!r}"
    )


def cluster_name(spec: GpuClusterSpec, tags: dict[str, str]) -> str:
    if spec.cluster_name:
        return spec.cluster_name
    parts = [tags[k] for k in ("airflow_dag_id", "airflow_task_id", "airflow_run_id") if tags.get(k)]
    return _fit(" ".join(["spark-triton", *parts]), 100)


def build_cluster_spec(
    spec: GpuClusterSpec,
    tags: dict[str, str],
    *,
    wheel_path: str,
    init_script_path: str,
    user_init_script_path: str | None = None,
    single_user_name: str | None = None,
) -> compute.ClusterSpec:
    """The typed cluster spec: our init script first (installs the wheel), then the user's."""
    spark_version, node_type_id, driver_node_type_id = check_databricks_spec(spec)
    cloud = parse_node_type(node_type_id).cloud
    custom_tags = {**sanitize_tags(tags, cloud), KEY_TAG: tag_key(tags)}
    scripts = [init_script_info(init_script_path)]
    if user_init_script_path:
        scripts.append(init_script_info(user_init_script_path))
    return compute.ClusterSpec(
        cluster_name=cluster_name(spec, tags),
        spark_version=spark_version,
        node_type_id=node_type_id,
        driver_node_type_id=driver_node_type_id,
        num_workers=spec.num_workers,
        autotermination_minutes=spec.autotermination_minutes,
        spark_conf=spec.stage_level_scheduling_conf(with_gpus=True),
        spark_env_vars={STATE_DIR_ENV: STATE_DIR, **spec.spark_env_vars, WHEEL_ENV: wheel_path},
        custom_tags=custom_tags,
        init_scripts=scripts,
        # Barrier stages and withResources (one Triton server per node) need the RDD API, which
        # standard (shared) access mode forbids; dedicated mode also reads UC volumes.
        data_security_mode=compute.DataSecurityMode.SINGLE_USER if single_user_name else None,
        single_user_name=single_user_name,
    )


def cluster_create_body(spec: GpuClusterSpec, tags: dict[str, str], **paths: Any) -> dict[str, Any]:
    """The JSON body of ``POST /api/2.1/clusters/create``."""
    return build_cluster_spec(spec, tags, **paths).as_dict()
