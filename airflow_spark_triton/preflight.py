"""Checks of one inference job against its model and its input table, before any cluster exists.

The create task runs them for the inference tasks it sets up, and each inference task again before
it submits (the table may have changed in between). What is checked, each failure naming the
setting or column and the fix:

- the ``model`` reference resolves (an ``hf:`` directory has a ``config.json``, the task's tokenizer
  or image processor, and no code of its own; an MLflow model's version exists and its ``MLmodel``
  has a pyfunc flavor and a signature Triton can carry), and ``model_options`` are options the
  model takes;
- ``input_columns`` map every model input to a column, and ``output_column`` / ``output_columns``
  give every output its own column, colliding with neither the key, the date, the job's columns nor
  a ``keep_columns`` entry;
- ``batch_size`` fits the model's ``max_batch_size``;
- where the backend can read the input table's schema without a cluster (delta-rs for a local
  path, Unity Catalog for ``catalog.schema.table`` on Databricks): the table exists, and has the
  key column, a DATE, TIMESTAMP or string date column, input columns of types the model takes, and
  the ``keep_columns``.

Nothing here imports torch, transformers or pyspark: an ``hf:`` reference resolves from its task
alone, and its directory is read as files (:func:`spark_jobs.models.huggingface.check_source`).
The rules themselves are the job's (:mod:`spark_jobs.columns`), so both sides agree.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_spark_triton.backends.base import BackendConfigError
from spark_jobs.columns import InputSchemaError, check_settings, check_table
from spark_jobs.contract import JobConfigError
from spark_jobs.models.huggingface import HF_SCHEME, check_source, is_local_path, parse_reference
from spark_jobs.models.mlflow_pyfunc import is_mlflow_reference
from spark_jobs.models.references import ModelNotReadable, resolve_model

if TYPE_CHECKING:
    from airflow_spark_triton.backends.base import GpuSparkBackend
    from spark_jobs.contract import InferenceJobConfig
    from spark_jobs.models.base import ServedModel

log = logging.getLogger(__name__)


class PreflightError(BackendConfigError, AirflowFailException):
    """A setting, the model or the input table cannot work; found before any cluster exists.

    An :class:`~airflow.exceptions.AirflowFailException`: the task fails without retrying, since a
    retry would find the same problem (a transient API failure while checking is no such error: it
    leaves that check to the job).
    """


def preflight(job: InferenceJobConfig, backend: GpuSparkBackend) -> ServedModel | None:
    """Check ``job`` against its model and its input table; return the model (None: an MLflow
    model whose files cannot be read before the run, whose checks the job makes). Raises
    :class:`PreflightError` naming what is wrong."""
    if is_mlflow_reference(job.model):
        columns = _describe(job, backend)  # types the inputs of a model saved without a signature
        model = _resolve_mlflow(job, backend, columns)
        if model is None:
            return None
    else:
        model = _resolve(job.model)
    if job.model.startswith(HF_SCHEME):
        _check_hf_directory(job.model, backend)
    try:
        check_settings(job, model)
    except JobConfigError as exc:
        raise PreflightError(str(exc)) from exc
    if not is_mlflow_reference(job.model):
        columns = _describe(job, backend)
    if columns is None:
        log.info(
            "Input table %s: its columns are checked by the job (not readable before a cluster)",
            job.input_table,
        )
        return model
    try:
        check_table(columns, job.input_table, job, model)
    except InputSchemaError as exc:
        raise PreflightError(str(exc)) from exc
    log.info("Pre-flight checks passed: model %s, input table %s", model.name, job.input_table)
    return model


def _describe(job: InferenceJobConfig, backend: GpuSparkBackend) -> dict[str, Any] | None:
    try:
        return backend.describe_table(job.input_table)
    except BackendConfigError as exc:
        raise PreflightError(f"job setting 'input_table': {exc}") from exc


def _resolve_mlflow(
    job: InferenceJobConfig, backend: GpuSparkBackend, columns: dict[str, Any] | None
) -> ServedModel | None:
    """An MLflow model from its files, at the pinned ``model_version`` (or what an alias names now),
    read through the backend's registry: the MLflow client, or the Databricks workspace's."""
    try:
        return resolve_model(
            job.model,
            version=job.model_version,
            options=job.model_options,
            input_columns=job.input_columns or None,
            column_types=columns,
            registry=backend.model_registry(),
        )
    except ModelNotReadable as exc:
        log.info("Model %s: %s; the job checks it when it loads the model", job.model, exc)
        return None
    except (ValueError, BackendConfigError) as exc:
        raise PreflightError(f"job setting 'model': {exc}") from exc


def _resolve(reference: str) -> ServedModel:
    try:
        return resolve_model(reference)
    except (ValueError, ImportError) as exc:
        raise PreflightError(f"job setting 'model': {exc}") from exc


def _check_hf_directory(reference: str, backend: GpuSparkBackend) -> None:
    task, source = parse_reference(reference)
    if not is_local_path(source):
        log.info("Model %s: Hub id %s is resolved by each node when it loads the model", reference, source)
        return
    read = backend.node_file_reader(source)
    if read is None:
        log.info("Model %s: directory %s is checked by the nodes when they load it", reference, source)
        return
    try:
        check_source(task, source, read)
    except ValueError as exc:
        raise PreflightError(f"job setting 'model' {reference!r}: {exc}") from exc
