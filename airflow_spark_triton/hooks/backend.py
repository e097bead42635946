"""Pick the backend from the Airflow connection, so one DAG runs unchanged on Databricks, an existing
Spark cluster (spark-submit) or the embedded local cluster."""

from __future__ import annotations

from airflow_spark_triton.hooks.base import GpuSparkBackend
from airflow_spark_triton.provider_info import LOCAL_CONN_TYPE

DEFAULT_CONN_ID = "spark_triton_default"


def connection_type(conn_id: str) -> str:
    """The connection's type; a missing connection means the embedded local backend."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(conn_id).conn_type or LOCAL_CONN_TYPE
    except AirflowNotFoundException:
        return LOCAL_CONN_TYPE


def get_backend(conn_id: str = DEFAULT_CONN_ID) -> GpuSparkBackend:
    kind = connection_type(conn_id)
    if kind == "databricks":
        from airflow_spark_triton.hooks.databricks_gpu import DatabricksGpuHook

        return DatabricksGpuHook(databricks_conn_id=conn_id)
    if kind == LOCAL_CONN_TYPE:
        from airflow_spark_triton.hooks.local_spark import LocalSparkHook

        return LocalSparkHook(spark_triton_conn_id=conn_id)
    if kind == "spark":
        from airflow_spark_triton.hooks.spark_submit import SparkSubmitGpuHook

        return SparkSubmitGpuHook(spark_conn_id=conn_id)
    raise ValueError(
        f"connection {conn_id!r} has type {kind!r}; airflow-spark-triton supports 'databricks', "
        f"'spark' (spark-submit to an existing cluster) and {LOCAL_CONN_TYPE!r}"
    )
