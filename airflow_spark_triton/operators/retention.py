"""Retention: remove what finished clusters and runs left behind, after ``[spark_triton] retention_days``.

A nightly pipeline leaves a state directory per local cluster (records, logs of every JVM, init
script and run, reports) and, on Databricks, reports, job cluster definitions and one code version
per release under the connection's ``artifact_root``. Nothing else removes them; this operator does,
for each connection it is given, through the backend contract
(:meth:`~airflow_spark_triton.backends.base.GpuSparkBackend.remove_expired`), which never touches a
live cluster or an unfinished run. ``dags/spark_triton_retention.py`` runs it daily.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_spark_triton.backends.base import BackendConfigError
from airflow_spark_triton.backends.registry import DEFAULT_CONN_ID, get_backend
from airflow_spark_triton.config_section import CONFIG_SECTION
from airflow_spark_triton.provider_info import DEFAULT_RETENTION_DAYS

if TYPE_CHECKING:
    from airflow.sdk import Context

RETENTION_OPTION = "retention_days"
SAMPLE = 5  # removed paths logged per connection; XCom carries counts only, never an unbounded list


def configured_retention_days() -> int:
    """``[spark_triton] retention_days`` (default 30), checked: a positive whole number of days."""
    from airflow.configuration import conf

    raw = conf.get(CONFIG_SECTION, RETENTION_OPTION, fallback=str(DEFAULT_RETENTION_DAYS))
    return check_retention_days(raw, f"[{CONFIG_SECTION}] {RETENTION_OPTION}")


def check_retention_days(value: Any, setting: str) -> int:
    try:
        days = int(str(value).strip())
    except ValueError:
        days = 0
    if days < 1:
        raise BackendConfigError(f"{setting} must be a whole number of days, at least 1; got {value!r}")
    return days


class RemoveExpiredOperator(BaseOperator):
    """Remove the expired state, logs, reports and uploaded artifacts of finished clusters and runs.

    :param conn_ids: the backends' connections (as the inference DAGs name them); a missing
        connection means the local backend with its default state directory.
    :param retention_days: keep anything changed within this many days; default
        ``[spark_triton] retention_days``. Set in DAG code, not from a trigger's conf.

    Local and spark-submit state lives on the worker's disk: on several hosts, run this task on each
    (one task per host-bound ``queue``). Returns ``{conn_id: number of paths removed}``.
    """

    ui_color = "#f2e6d9"

    def __init__(
        self,
        *,
        conn_ids: Sequence[str] = (DEFAULT_CONN_ID,),
        retention_days: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.conn_ids = list(conn_ids)
        self.retention_days = retention_days

    def execute(self, context: Context) -> dict[str, int]:
        days = (
            configured_retention_days()
            if self.retention_days is None
            else check_retention_days(self.retention_days, "retention_days")
        )
        removed: dict[str, int] = {}
        for conn_id in self.conn_ids:
            paths = get_backend(conn_id).remove_expired(dt.timedelta(days=days))
            removed[conn_id] = len(paths)
            self.log.info(
                "%s: removed %d expired path(s) unchanged for %d days%s",
                conn_id, len(paths), days, f", e.g. {', '.join(paths[:SAMPLE])}" if paths else "",
            )  # fmt: skip
        return removed
