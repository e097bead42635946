"""The ``spark`` connection as the spark-submit backend reads it: this package's extras on top of the Spark provider's.

A thin Airflow hook. The connection type is apache-airflow-providers-apache-spark's; its
``SparkSubmitHook`` owns the master URL, deploy mode, queue, namespace, binary and keytab, and this
hook only adds the extras this package reads. The runs are
:class:`~airflow_spark_triton.backends.spark_submit.backend.SparkSubmitBackend`'s, which holds one of these.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from airflow.sdk import BaseHook

from airflow_spark_triton.errors import BackendConfigError
from airflow_spark_triton.runs.records import state_home

CONN_TYPE = "spark"  # apache-airflow-providers-apache-spark's connection type


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() not in {"", "0", "false", "no", "off", "none"}


class SparkSubmitGpuHook(BaseHook):
    """A ``spark`` connection's extras for the spark-submit backend.

    :param spark_conn_id: a connection of type ``spark``. Besides that provider's extras
        (``deploy-mode``, ``queue``, ``namespace``, ``spark-binary``, ``principal``, ``keytab``), these
        are read:

        - ``python``: the interpreter on the cluster's nodes (``spark.pyspark.python``); it needs
          pyspark, nvidia-pytriton, deltalake and the model's libraries. Default: the cluster's.
        - ``gpus``: request one GPU per executor through stage-level scheduling (default true; false
          for CPU-only clusters).
        - ``report_dir``: where the driver writes each run's report and progress, readable from the
          Airflow worker (default: the run's directory here, right for ``deploy-mode: client``;
          set a shared mount for cluster mode).
        - ``home``: the backend's state directory (default ``$AIRFLOW_SPARK_TRITON_HOME``).
    """

    conn_name_attr = "spark_conn_id"
    default_conn_name = "spark_default"
    conn_type = CONN_TYPE
    hook_name = "Spark + Triton (spark-submit to an existing cluster)"

    def __init__(self, spark_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.spark_conn_id = spark_conn_id

    @functools.cached_property
    def connection(self) -> Any:
        return self.get_connection(self.spark_conn_id)

    @functools.cached_property
    def extras(self) -> dict[str, Any]:
        return dict(self.connection.extra_dejson or {})

    @property
    def home(self) -> Path:
        return state_home(self.extras.get("home"))

    @property
    def python(self) -> str | None:
        return str(self.extras["python"]) if self.extras.get("python") else None

    @property
    def gpus(self) -> bool:
        return _truthy(self.extras.get("gpus", True))

    @property
    def report_dir(self) -> str | None:
        return self.extras.get("report_dir") or None

    def submit_hook(self, **kwargs: Any) -> Any:
        """The Spark provider's ``SparkSubmitHook`` on this connection."""
        try:
            from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook
        except ImportError as exc:
            raise BackendConfigError(
                f"connection {self.spark_conn_id!r} is of type 'spark', which needs "
                "apache-airflow-providers-apache-spark: pip install 'airflow-spark-triton[spark-submit]'"
            ) from exc
        return SparkSubmitHook(conn_id=self.spark_conn_id, **kwargs)

    def master_url(self) -> str:
        """The master exactly as SparkSubmitHook will resolve it from the connection."""
        return str(self.submit_hook()._connection["master"])

    def spark_binary(self) -> str:
        return str(self.submit_hook()._connection["spark_binary"])

    def deploy_mode(self) -> str:
        """``client`` or ``cluster``, as SparkSubmitHook resolves it (client when unset)."""
        return str(self.submit_hook()._connection["deploy_mode"] or "client")

    def connection_fields(self) -> dict[str, Any]:
        """The connection as ``AIRFLOW_CONN_<ID>`` JSON fields, empty ones left out (for the runner)."""
        conn = self.connection
        data = {
            "conn_type": conn.conn_type,
            "host": conn.host,
            "port": conn.port,
            "schema": conn.schema,
            "login": conn.login,
            "password": conn.password,
            "extra": conn.extra_dejson,
        }
        return {k: v for k, v in data.items() if v not in (None, "", {})}
