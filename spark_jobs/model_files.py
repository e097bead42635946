"""The served model as the job's driver prepares it: an MLflow model downloaded once, shipped to every node.

Python models and ``hf:`` references are resolved where they are served (each node imports or loads
them itself). An MLflow model lives in a registry or a run's artifacts, which only the driver is
sure to reach with credentials (locally ``MLFLOW_TRACKING_URI``; on Databricks the job's own
identity, which the runtime gives the driver): so the driver downloads the pinned version once,
``SparkContext.addArchive`` ships the directory to every executor (as ``mlflow.pyfunc.spark_udf``
does, as an archive each executor unpacks), and each node's Triton server loads its local copy.
The servers are told the copy's name (:data:`SPARK_FILES_PREFIX`), which the node resolves with
``SparkFiles.get``. A model directory reference is read where it is by every node (a volume).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spark_jobs.models.mlflow_pyfunc import (
    COLUMN_TYPES,
    directory_reader,
    is_mlflow_reference,
    model_info,
    parse_reference,
)
from spark_jobs.models.references import resolve_model

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from spark_jobs.contract import InferenceJobConfig
    from spark_jobs.models.base import ServedModel

log = logging.getLogger(__name__)
#: A server's ``--model`` naming a directory shipped with ``addArchive``: ``spark-files:<name>``.
SPARK_FILES_PREFIX = "spark-files:"


@dataclass(frozen=True)
class PreparedModel:
    """The model the driver scores with, the job its servers get, and the version it serves."""

    model: ServedModel
    server_job: InferenceJobConfig
    version: str | None = None
    download_s: float | None = None


def prepare_model(
    spark: SparkSession,
    job: InferenceJobConfig,
    column_types: Callable[[list[str]], Mapping[str, Any]],
) -> PreparedModel:
    """Resolve ``job.model``; an MLflow model is downloaded (pinned to ``job.model_version``) and
    shipped. ``column_types(columns)`` gives the input table's types of ``columns`` for a model
    without a signature."""
    if not is_mlflow_reference(job.model):
        return PreparedModel(resolve_model(job.model), job)
    from spark_jobs.models.mlflow_registry import MlflowClientRegistry, download_model

    started = time.monotonic()
    registry = MlflowClientRegistry(registry_uri=job.model_registry_uri)
    parsed = parse_reference(job.model)
    parsed = parsed.pinned(job.model_version) if job.model_version else registry.pin(parsed)
    if parsed.directory is not None and parsed.directory.startswith("dbfs:"):  # DBFS's FUSE mount
        parsed = parse_reference("/dbfs/" + parsed.directory.removeprefix("dbfs:").lstrip("/"))
    if parsed.directory is not None:
        local = Path(parsed.directory).expanduser()
    else:
        # Named after the model and version, which the servers' Triton model is named after too.
        target = Path(tempfile.mkdtemp(prefix="spark-triton-model-")) / parsed.triton_name
        local = download_model(parsed.uri, target.parent / "download", job.model_registry_uri)
        shutil.move(str(local), target)
        local = target
    options = dict(job.model_options)
    model = resolve_model(
        str(local),
        options=options,
        input_columns=job.input_columns or None,
        column_types=_types_if_unsigned(local, job, column_types),
    )
    if "input_types" not in options and _unsigned(local):
        # The servers type a model without a signature as the driver did, from the table's columns.
        options["input_types"] = {spec.name: _mlflow_type(spec.dtype) for spec in model.inputs}
    # The servers get the model's files, not the registry reference: the version is applied already.
    if parsed.directory is not None:  # a directory every node reads where it is (a volume, a path)
        server_job = job.replace(model=str(local), model_options=options, model_version=None)
    else:
        # Spark ships a directory only as an archive outside local mode: each executor unpacks it
        # once into its SparkFiles directory, under the fragment's name.
        archive = shutil.make_archive(str(local), "zip", root_dir=local)
        spark.sparkContext.addArchive(f"{archive}#{local.name}")
        server_job = job.replace(
            model=f"{SPARK_FILES_PREFIX}{local.name}", model_options=options, model_version=None
        )
    log.info("Serving %s (version %s) from %s on every node", job.model, parsed.version, server_job.model)
    return PreparedModel(model, server_job, parsed.version, round(time.monotonic() - started, 3))


def _unsigned(local: Path) -> bool:
    return model_info(str(local), directory_reader(local)).inputs is None


def _types_if_unsigned(
    local: Path, job: InferenceJobConfig, column_types: Callable[[list[str]], Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    if not _unsigned(local) or not job.input_columns:
        return None
    columns = job.input_columns
    return column_types(list(columns.values()) if isinstance(columns, dict) else list(columns))


def _mlflow_type(dtype: str) -> str:
    return next(name for name, tensor_dtype in COLUMN_TYPES.items() if tensor_dtype == dtype)


def server_model_location(model: str) -> str:
    """A server's ``--model``: a shipped directory's local copy on this node (in a Spark task), else as is."""
    if not model.startswith(SPARK_FILES_PREFIX):
        return model
    from pyspark import SparkFiles

    return SparkFiles.get(model.removeprefix(SPARK_FILES_PREFIX))
