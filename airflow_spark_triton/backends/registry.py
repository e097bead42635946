"""Pick the backend from the Airflow connection, so one DAG runs unchanged on Databricks, an existing
Spark cluster (spark-submit) or the embedded local cluster.

Only the default connection id may be missing: without ``spark_triton_default`` a DAG runs on the
embedded local cluster (with a warning). Any other id that does not exist is a mistake (a typo, a
connection not yet created) and fails by name rather than quietly running on this machine.

:func:`get_backend` looks the connection up synchronously (tasks); :func:`aget_backend` looks it up
with the SDK's async API, for the triggerer's event loop. Both build the backend from the same table.
"""

from __future__ import annotations

import functools
import importlib
import logging
from typing import Any

from airflow.sdk.exceptions import AirflowNotFoundException

from airflow_spark_triton.backends.base import GpuSparkBackend
from airflow_spark_triton.errors import BackendConfigError
from airflow_spark_triton.provider_info import LOCAL_CONN_TYPE

DEFAULT_CONN_ID = "spark_triton_default"

log = logging.getLogger(__name__)

# Connection type -> (module, class, keyword of the hook's connection id). The one mapping of both lookups.
BACKENDS: dict[str, tuple[str, str, str]] = {
    "databricks": (
        "airflow_spark_triton.backends.databricks.backend",
        "DatabricksBackend",
        "databricks_conn_id",
    ),
    "spark": ("airflow_spark_triton.backends.spark_submit.backend", "SparkSubmitBackend", "spark_conn_id"),
    LOCAL_CONN_TYPE: (
        "airflow_spark_triton.backends.local.backend",
        "LocalSparkBackend",
        "spark_triton_conn_id",
    ),
}


class BackendConnectionNotFound(AirflowNotFoundException):
    """A connection id other than ``spark_triton_default`` names no connection."""


@functools.cache
def _warn_local_fallback(conn_id: str) -> None:
    """Once per process: a task looks its backend up several times (create, wait, links, polls),
    and Airflow 3 runs each task in a process of its own, so this is once per task."""
    log.warning(
        "Connection %r does not exist: using the embedded local Spark cluster (backend %r). "
        "Create the connection to run on Databricks or an existing Spark cluster.",
        conn_id,
        LOCAL_CONN_TYPE,
    )


def _missing(conn_id: str, exc: Exception, warn: bool = True) -> str:
    """The type a missing connection stands for: the local backend for the default id, else an error."""
    if conn_id != DEFAULT_CONN_ID:
        raise BackendConnectionNotFound(
            f"connection {conn_id!r} does not exist; create it (type 'databricks', 'spark' or "
            f"{LOCAL_CONN_TYPE!r}) or fix the conn_id. Only {DEFAULT_CONN_ID!r} falls back to the "
            "embedded local Spark cluster when it is missing"
        ) from exc
    if warn:
        _warn_local_fallback(conn_id)
    return LOCAL_CONN_TYPE


def _type_of(conn: Any) -> str:
    return conn.conn_type or LOCAL_CONN_TYPE


def connection_type(conn_id: str, *, warn: bool = True) -> str:
    """The connection's type. Missing: the local backend for ``spark_triton_default`` (with a
    warning unless ``warn`` is false), else an error."""
    from airflow.sdk import BaseHook

    try:
        return _type_of(BaseHook.get_connection(conn_id))
    except AirflowNotFoundException as exc:
        return _missing(conn_id, exc, warn)


async def aconnection_type(conn_id: str) -> str:
    """:func:`connection_type` for an event loop: the SDK's async lookup, no blocking call."""
    from airflow.sdk import BaseHook

    try:
        return _type_of(await BaseHook.aget_connection(conn_id))
    except AirflowNotFoundException as exc:
        return _missing(conn_id, exc)


def backend_for_type(kind: str, conn_id: str) -> GpuSparkBackend:
    """The backend of a connection whose type is already known. Hooks look their connection up lazily,
    so building one does no I/O."""
    try:
        module_name, class_name, conn_kwarg = BACKENDS[kind]
    except KeyError:
        supported = ", ".join(repr(k) for k in BACKENDS)
        raise BackendConfigError(
            f"connection {conn_id!r} has type {kind!r}; airflow-spark-triton supports {supported} "
            "('spark': spark-submit to an existing cluster)"
        ) from None
    hook_class = getattr(importlib.import_module(module_name), class_name)
    return hook_class(**{conn_kwarg: conn_id})


def get_backend(conn_id: str = DEFAULT_CONN_ID) -> GpuSparkBackend:
    return backend_for_type(connection_type(conn_id), conn_id)


async def aget_backend(conn_id: str = DEFAULT_CONN_ID) -> GpuSparkBackend:
    """:func:`get_backend` for the triggerer: the connection is fetched with the async API."""
    return backend_for_type(await aconnection_type(conn_id), conn_id)
