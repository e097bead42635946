"""The ``spark_triton_local`` connection: where the embedded local backend keeps its state and which Python it runs.

A thin Airflow hook: the connection form (UI field behaviour) and reading the connection's extras
(``home``, ``python``, ``worker_memory``). The clusters and runs themselves are
:class:`~airflow_spark_triton.backends.local.backend.LocalSparkBackend`'s, which holds one of these.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from pathlib import Path
from typing import Any

from airflow.sdk import BaseHook

from airflow_spark_triton.provider_info import LOCAL_CONN_TYPE
from airflow_spark_triton.runs.records import DEFAULT_HOME, HOME_ENV, state_home

__all__ = ["DEFAULT_HOME", "HOME_ENV", "LocalSparkHook"]


class LocalSparkHook(BaseHook):
    """Settings of the local backend from an optional ``spark_triton_local`` connection.

    :param spark_triton_conn_id: the connection; a missing one is fine (this is the embedded default
        backend: every setting has a default). ``None`` skips the lookup.
    """

    conn_name_attr = "spark_triton_conn_id"
    default_conn_name = "spark_triton_default"
    conn_type = LOCAL_CONN_TYPE
    hook_name = "Spark + Triton (local standalone)"

    def __init__(self, spark_triton_conn_id: str | None = default_conn_name) -> None:
        super().__init__()
        self.spark_triton_conn_id = spark_triton_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["host", "schema", "login", "password", "port"],
            "relabeling": {},
            "placeholders": {
                "extra": json.dumps({"home": "/var/lib/spark_triton", "python": "/opt/venv/bin/python"})
            },
        }

    @functools.cached_property
    def extras(self) -> dict[str, Any]:
        """Connection extras, looked up lazily (the triggerer builds backends inside its event loop);
        ``{}`` without a connection."""
        if not self.spark_triton_conn_id:
            return {}
        from airflow.sdk.exceptions import AirflowNotFoundException

        not_found: tuple[type[BaseException], ...] = (AirflowNotFoundException,)
        with contextlib.suppress(ImportError):  # Airflow versions whose core raises its own type
            from airflow.exceptions import AirflowNotFoundException as CoreNotFound

            not_found = (AirflowNotFoundException, CoreNotFound)
        try:
            conn = self.get_connection(self.spark_triton_conn_id)
        except not_found:
            self.log.debug("No connection %r: using local defaults", self.spark_triton_conn_id)
            return {}
        extras = dict(conn.extra_dejson or {})
        # Form fields may arrive prefixed (extra__spark_triton_local__home); the plain name wins.
        prefix = f"extra__{self.conn_type}__"
        for key in [k for k in extras if k.startswith(prefix)]:
            value = extras.pop(key)
            if value not in (None, "") and key.removeprefix(prefix) not in extras:
                extras[key.removeprefix(prefix)] = value
        return extras

    @property
    def home(self) -> Path:
        """The state directory: extra ``home``, else ``$AIRFLOW_SPARK_TRITON_HOME``, else ``~/.airflow_spark_triton``."""
        return state_home(self.extras.get("home"))

    @property
    def python(self) -> str:
        """Interpreter of drivers and executors (extra ``python``, default: this one)."""
        return str(self.extras.get("python") or sys.executable)

    @property
    def worker_memory(self) -> str | None:
        """Extra ``worker_memory``: overrides the cluster spec's."""
        return self.extras.get("worker_memory") or None
