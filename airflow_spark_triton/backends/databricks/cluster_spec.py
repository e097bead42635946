"""The Databricks ``clusters/create`` body for a :class:`GpuClusterSpec`, built from the SDK's typed classes.

Building through ``databricks.sdk.service.compute`` dataclasses (not hand-written dicts) means a
misspelt or misplaced field fails here, in the Airflow worker, instead of as a 400 from the
workspace after a scheduler round trip. Checks that only Databricks cares about (GPU node types,
GPU runtimes, tag rules) live here too, so the backend-neutral spec stays backend-neutral.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import re
import typing
from dataclasses import dataclass
from typing import Any, TypeVar

from databricks.sdk.service import compute

from airflow_spark_triton.cluster_spec import ClusterSpecError, GpuClusterSpec
from airflow_spark_triton.settings import coerce_setting
from spark_jobs.node_state import STATE_DIR_ENV

# Python 3.11 like this package (DBR 16.x ships 3.12, outside ``requires-python``); the example
# runtime of Databricks' own GPU documentation.
DEFAULT_SPARK_VERSION = "15.4.x-gpu-ml-scala2.12"
DEFAULT_NODE_TYPE = "g5.xlarge"  # AWS, 1x A10G, 4 vCPU
T = TypeVar("T")
STATE_DIR = "/local_disk0/spark_triton"
WHEEL_ENV = "SPARK_TRITON_WHEEL"
KEY_TAG = "spark_triton_key"  # one hex tag that find_cluster matches on, whatever the cloud's tag rules
MIN_RUNTIME_MAJOR = 13  # init scripts on UC volumes and Spark >= 3.4 stage-level scheduling
MAX_CUSTOM_TAGS = 45  # AWS allows 50 tags per instance; Databricks adds its default tags on top

_AWS = re.compile(r"^(?P<family>[a-z]+\d+[a-z-]*)\.(?P<size>(?P<n>\d*)x?large|metal[\w-]*)$")
_AZURE = re.compile(r"^Standard_(?P<family>[A-Z]+)(?P<n>\d+)", re.IGNORECASE)
_GCP = re.compile(r"^(?P<family>[a-z]\d[a-z]?)-(?P<kind>[a-z]+)-(?P<n>\d+)[a-z]?$")
_RUNTIME = re.compile(r"^(?P<major>\d+)\.(?P<minor>\d+|x)\.")


# GPUs per node of the GPU node types Databricks offers, where the name alone does not say (GCP's
# a2/a3 names end in the count, ``a2-highgpu-4g``). Sizes not listed are unknown, not assumed 1.
_AWS_GPUS = {
    **{f"{family}.{size}": 1 for family in ("g4dn", "g5", "g6", "g6e")
       for size in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge")},
    "g4dn.12xlarge": 4, "g4dn.metal": 8,
    **{f"{family}.{size}": n for family in ("g5", "g6", "g6e")
       for size, n in (("12xlarge", 4), ("24xlarge", 4), ("48xlarge", 8))},
    "p3.2xlarge": 1, "p3.8xlarge": 4, "p3.16xlarge": 8, "p3dn.24xlarge": 8,
    "p4d.24xlarge": 8, "p4de.24xlarge": 8, "p5.48xlarge": 8,
}  # fmt: skip
_AZURE_GPUS = {
    "standard_nc4as_t4_v3": 1, "standard_nc8as_t4_v3": 1, "standard_nc16as_t4_v3": 1,
    "standard_nc64as_t4_v3": 4,
    "standard_nc6s_v3": 1, "standard_nc12s_v3": 2, "standard_nc24s_v3": 4, "standard_nc24rs_v3": 4,
    "standard_nc24ads_a100_v4": 1, "standard_nc48ads_a100_v4": 2, "standard_nc96ads_a100_v4": 4,
    "standard_nd96asr_v4": 8, "standard_nd96amsr_a100_v4": 8,
    "standard_nv36ads_a10_v5": 1, "standard_nv72ads_a10_v5": 2,
    "standard_nc40ads_h100_v5": 1, "standard_nc80adis_h100_v5": 2, "standard_nd96isr_h100_v5": 8,
}  # fmt: skip
_GCP_G2_GPUS = {4: 1, 8: 1, 12: 1, 16: 1, 24: 2, 32: 1, 48: 4, 96: 8}


@dataclass(frozen=True)
class NodeType:
    """What the node type id tells about itself; ``None`` where the name does not say."""

    cloud: str | None
    gpu: bool | None
    vcpus: int | None
    gpus: int | None = None


def parse_node_type(node_type_id: str) -> NodeType:
    """Recognise the clouds' naming schemes; anything else (pools, new families) is not judged."""
    if m := _AWS.match(node_type_id):
        size = m["size"]
        vcpus = None if size.startswith("metal") else (2 if size == "large" else 4 * int(m["n"] or 1))
        gpu = re.match(r"^[gp]\d", m["family"]) is not None
        return NodeType("aws", gpu, vcpus, _AWS_GPUS.get(node_type_id) if gpu else 0)
    if m := _AZURE.match(node_type_id):
        gpu = m["family"].upper() in ("NC", "ND", "NV")
        return NodeType("azure", gpu, int(m["n"]), _AZURE_GPUS.get(node_type_id.lower()) if gpu else 0)
    if m := _GCP.match(node_type_id):
        gpu = m["family"] in ("a2", "a3", "g2")
        vcpus = int(m["n"]) if m["kind"] in ("standard", "highmem", "highcpu") else None
        if not gpu:
            gpus = 0
        elif m["family"] == "g2":
            gpus = _GCP_G2_GPUS.get(int(m["n"]))
        else:
            gpus = int(m["n"]) if node_type_id.endswith("g") else None
        return NodeType("gcp", gpu, vcpus, gpus)
    return NodeType(None, None, None)


def with_node_gpus(spec: GpuClusterSpec, node_type_id: str | None) -> GpuClusterSpec:
    """The spec with ``gpus_per_executor`` taken from the node type when it is not set.

    One executor per node holds all the node's GPUs and the node's Triton server loads one model
    instance per GPU, so a 4-GPU worker (``g5.12xlarge``) gets ``gpus_per_executor=4`` unless set.
    A derived count also raises ``executor_cores`` to one core per concurrent task
    (``gpus x tasks_per_gpu``) when it is lower, as with the default of 1: each GPU needs a task
    feeding it. An explicit ``gpus_per_executor`` above the node's GPUs fails: Spark would never
    place the executor. Unknown node types (pools, new families) keep the spec as it is (one GPU).
    """
    node_gpus = parse_node_type(node_type_id).gpus if node_type_id else None
    if spec.gpus_per_executor is not None:
        if node_gpus and spec.gpus_per_executor > node_gpus:
            raise ClusterSpecError(
                f"cluster setting 'gpus_per_executor' (spark.executor.resource.gpu.amount="
                f"{spec.gpus_per_executor}) exceeds the {node_gpus} GPU(s) of node_type_id "
                f"{node_type_id!r}: the executor would never start"
            )
        return spec
    if not node_gpus or node_gpus == 1:
        return spec
    cores = max(spec.executor_cores, node_gpus * (spec.tasks_per_gpu or 1))
    return dataclasses.replace(spec, gpus_per_executor=node_gpus, executor_cores=cores)


# clusters/create fields that GpuClusterSpec settings or the backend itself set: the pass-through
# ``extra_cluster_fields`` may not override them (where one is a setting, the error names it).
MANAGED_FIELDS = {
    "cluster_name": "cluster_name", "spark_version": "spark_version", "node_type_id": "node_type_id",
    "driver_node_type_id": "driver_node_type_id", "num_workers": "num_workers",
    "autotermination_minutes": "autotermination_minutes", "spark_conf": "spark_conf",
    "spark_env_vars": "spark_env_vars", "custom_tags": "the operator's tags", "init_scripts": "init_script",
    "data_security_mode": "the connection's single_user_name", "single_user_name":
    "the connection's single_user_name", "policy_id": "policy_id",
    "apply_policy_default_values": "apply_policy_default_values", "instance_pool_id": "instance_pool_id",
    "driver_instance_pool_id": "driver_instance_pool_id", "aws_attributes": "aws_attributes",
    "azure_attributes": "azure_attributes", "gcp_attributes": "gcp_attributes", "autoscale": "autoscale",
}  # fmt: skip


def _unwrap_optional(hint: Any) -> Any:
    if typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else Any
    return hint


def _json_fields(cls: type) -> dict[str, dataclasses.Field]:
    # The SDK suffixes fields named like Python keywords (``global_``); the JSON key has no suffix.
    return {f.name.rstrip("_"): f for f in dataclasses.fields(cls)}


def sdk_json(value: Any, hint: Any, path: str) -> Any:
    """``value`` checked against (and coerced to) the SDK type ``hint``, as JSON.

    The SDK's own ``from_dict`` drops unknown keys and accepts any type, so it cannot be the check:
    this walks the dataclass fields, enums and primitives the way the workspace does, and fails
    naming ``path`` (``aws_attributes.availability``). Text from a rendered template is coerced
    (``"1"`` -> 1 where an integer is expected, a dict's repr -> the dict).
    """
    hint = _unwrap_optional(hint)
    if value is None or hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    label, error = "cluster setting", ClusterSpecError
    if origin is list:
        items = coerce_setting(path, value, list[Any], label=label, error=error)
        return [sdk_json(item, args[0] if args else Any, f"{path}[{i}]") for i, item in enumerate(items)]
    if origin is dict:
        mapping = coerce_setting(path, value, dict[str, Any], label=label, error=error)
        return {str(k): sdk_json(v, args[1] if args else Any, f"{path}.{k}") for k, v in mapping.items()}
    if dataclasses.is_dataclass(hint):
        mapping = coerce_setting(path, value, dict[str, Any], label=label, error=error)
        fields = _json_fields(hint)
        unknown = sorted(set(mapping) - set(fields))
        if unknown:
            raise ClusterSpecError(
                f"cluster setting '{path}.{unknown[0]}' is not a field of databricks-sdk's "
                f"compute.{hint.__name__}; known: {', '.join(sorted(fields))}"
            )
        hints = typing.get_type_hints(hint)
        return {k: sdk_json(v, hints[fields[k].name], f"{path}.{k}") for k, v in mapping.items()}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        allowed = [m.value for m in hint]
        if value not in allowed:
            raise ClusterSpecError(
                f"cluster setting '{path}' must be one of {', '.join(allowed)} "
                f"(databricks-sdk compute.{hint.__name__}), got {value!r}"
            )
        return value
    if hint in (bool, int, float, str):
        return coerce_setting(path, value, hint, label=label, error=error)
    return value


def sdk_object(cls: type[T], value: Any, path: str) -> T:
    """The SDK dataclass ``cls`` from a setting, after :func:`sdk_json` checked every field."""
    return cls.from_dict(sdk_json(value, cls, path))  # type: ignore[attr-defined]


def extra_fields(spec: GpuClusterSpec) -> dict[str, Any]:
    """``extra_cluster_fields`` checked against ``compute.ClusterSpec``; managed fields are refused."""
    fields, hints = _json_fields(compute.ClusterSpec), typing.get_type_hints(compute.ClusterSpec)
    out: dict[str, Any] = {}
    for key, value in spec.extra_cluster_fields.items():
        path = f"extra_cluster_fields.{key}"
        if key in MANAGED_FIELDS:
            raise ClusterSpecError(
                f"cluster setting {path!r} is set by the backend from {MANAGED_FIELDS[key]!r}; set that instead"
            )
        if key not in fields:
            raise ClusterSpecError(
                f"cluster setting {path!r} is not a clusters/create field (databricks-sdk compute.ClusterSpec)"
            )
        out[key] = sdk_json(value, hints[fields[key].name], path)
    return out


def check_governance(spec: GpuClusterSpec) -> None:
    """What Databricks refuses in the pool, autoscale and cloud settings, before any call is made."""
    if spec.instance_pool_id and spec.node_type_id:
        raise ClusterSpecError(
            "cluster settings 'instance_pool_id' and 'node_type_id' exclude each other: the pool decides "
            "the node type (Databricks rejects a body with both)"
        )
    if spec.driver_instance_pool_id and spec.driver_node_type_id:
        raise ClusterSpecError(
            "cluster settings 'driver_instance_pool_id' and 'driver_node_type_id' exclude each other: the "
            "pool decides the driver's node type (Databricks rejects a body with both)"
        )
    if spec.driver_instance_pool_id and not spec.instance_pool_id:
        raise ClusterSpecError(
            "cluster setting 'driver_instance_pool_id' needs 'instance_pool_id' for the workers"
        )
    if spec.autoscale is not None:
        scale = sdk_object(compute.AutoScale, spec.autoscale, "autoscale")
        low, high = scale.min_workers, scale.max_workers
        if low is None or high is None:
            raise ClusterSpecError("cluster setting 'autoscale' needs both 'min_workers' and 'max_workers'")
        if low < 1 or high < low:
            raise ClusterSpecError(
                "cluster setting 'autoscale' must have 1 <= min_workers <= max_workers (GPU inference needs "
                f"worker nodes), got min_workers={low}, max_workers={high}"
            )
    clouds = [n for n in ("aws_attributes", "azure_attributes", "gcp_attributes") if getattr(spec, n)]
    if len(clouds) > 1:
        raise ClusterSpecError(f"cluster settings {' and '.join(map(repr, clouds))} name different clouds")
    _attributes(compute.AwsAttributes, spec.aws_attributes, "aws_attributes")
    _attributes(compute.AzureAttributes, spec.azure_attributes, "azure_attributes")
    _attributes(compute.GcpAttributes, spec.gcp_attributes, "gcp_attributes")
    extra_fields(spec)


def worker_count(cluster: dict[str, Any]) -> int | None:
    """Workers of a cluster body or ``clusters/get`` answer: ``num_workers``, or autoscale's minimum
    (a node added later starts its own Triton server when its first task needs one)."""
    if cluster.get("num_workers"):
        return int(cluster["num_workers"])
    low = (cluster.get("autoscale") or {}).get("min_workers")
    return int(low) if low else None


def check_databricks_spec(spec: GpuClusterSpec) -> tuple[str, str | None, str | None]:
    """Reject what Databricks would reject later, or accept and then run without GPUs.

    Returns ``(spark_version, node_type_id, driver_node_type_id)`` with defaults applied; with an
    instance pool the node type is the pool's, so it is ``None`` (and not judged here).
    """
    check_governance(spec)
    spark_version = spec.spark_version or DEFAULT_SPARK_VERSION
    node_type_id = None if spec.instance_pool_id else (spec.node_type_id or DEFAULT_NODE_TYPE)
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
    worker = parse_node_type(node_type_id) if node_type_id else NodeType(None, None, None)
    spec = with_node_gpus(spec, node_type_id)
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
    job_compute: bool = False,
) -> compute.ClusterSpec:
    """The typed cluster spec: our init script first (installs the wheel), then the user's.

    ``job_compute``: the ``new_cluster`` of a ``runs/submit`` task instead of a ``clusters/create``
    body, so no ``cluster_name`` (Databricks names job clusters after the run) and no
    ``autotermination_minutes`` (a job cluster ends with its run; ``timeout_seconds`` bounds it).
    """
    spark_version, node_type_id, driver_node_type_id = check_databricks_spec(spec)
    spec = with_node_gpus(spec, node_type_id)
    cloud = _cloud(spec, node_type_id)
    custom_tags = {**sanitize_tags(tags, cloud), KEY_TAG: tag_key(tags)}
    scripts = [init_script_info(init_script_path)]
    if user_init_script_path:
        scripts.append(init_script_info(user_init_script_path))
    autoscale = sdk_object(compute.AutoScale, spec.autoscale, "autoscale") if spec.autoscale else None
    typed = compute.ClusterSpec(
        cluster_name=None if job_compute else cluster_name(spec, tags),
        spark_version=spark_version,
        node_type_id=node_type_id,
        driver_node_type_id=driver_node_type_id,
        num_workers=None if autoscale else spec.num_workers,
        autoscale=autoscale,
        autotermination_minutes=None if job_compute else spec.autotermination_minutes,
        policy_id=spec.policy_id,
        apply_policy_default_values=spec.apply_policy_default_values,
        instance_pool_id=spec.instance_pool_id,
        driver_instance_pool_id=spec.driver_instance_pool_id,
        aws_attributes=_attributes(compute.AwsAttributes, spec.aws_attributes, "aws_attributes"),
        azure_attributes=_attributes(compute.AzureAttributes, spec.azure_attributes, "azure_attributes"),
        gcp_attributes=_attributes(compute.GcpAttributes, spec.gcp_attributes, "gcp_attributes"),
        spark_conf=spec.stage_level_scheduling_conf(with_gpus=True),
        spark_env_vars={STATE_DIR_ENV: STATE_DIR, **spec.spark_env_vars, WHEEL_ENV: wheel_path},
        custom_tags=custom_tags,
        init_scripts=scripts,
        # Barrier stages and withResources (one Triton server per node) need the RDD API, which
        # standard (shared) access mode forbids; dedicated mode also reads UC volumes.
        data_security_mode=compute.DataSecurityMode.SINGLE_USER if single_user_name else None,
        single_user_name=single_user_name,
    )
    extras = extra_fields(spec)
    return compute.ClusterSpec.from_dict({**typed.as_dict(), **extras}) if extras else typed


def _attributes(cls: type[T], value: dict[str, Any] | None, name: str) -> T | None:
    return sdk_object(cls, value, name) if value else None


def _cloud(spec: GpuClusterSpec, node_type_id: str | None) -> str | None:
    """The cloud whose tag rules apply: from the node type, else from the cloud attributes."""
    if node_type_id and (cloud := parse_node_type(node_type_id).cloud):
        return cloud
    for cloud in ("aws", "azure", "gcp"):
        if getattr(spec, f"{cloud}_attributes"):
            return cloud
    return None


def cluster_create_body(spec: GpuClusterSpec, tags: dict[str, str], **paths: Any) -> dict[str, Any]:
    """The JSON body of ``POST /api/2.1/clusters/create``."""
    return build_cluster_spec(spec, tags, **paths).as_dict()
