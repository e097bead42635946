"""The provider's Airflow plugin: the run pages, a FastAPI app the API server mounts at ``/spark-triton``.

Registered with no user setup: the ``airflow.plugins`` entry point of this package (what Airflow
loads by default) and the ``plugins`` of :func:`airflow_spark_triton.get_provider_info` (what
``airflow providers plugins`` lists, and what loads where ``[core] lazy_discover_providers`` is off).

Every Airflow component loads plugins, the scheduler and task processes too, so this module imports
nothing but Airflow's plugin base: the app (FastAPI routes, Airflow's API security, the backends) is
built on the API server's first request, by :class:`LazyApp`.
"""

from __future__ import annotations

import threading
from typing import Any

from airflow.plugins_manager import AirflowPlugin

from airflow_spark_triton.ui.urls import PLUGIN_PREFIX

PLUGIN_NAME = "spark_triton_runs"


class LazyApp:
    """An ASGI app that builds :func:`airflow_spark_triton.ui.app.create_app` when first called."""

    def __init__(self) -> None:
        self._app: Any = None
        self._lock = threading.Lock()

    @property
    def app(self) -> Any:
        if self._app is None:
            with self._lock:
                if self._app is None:
                    from airflow_spark_triton.ui.app import create_app

                    self._app = create_app()
        return self._app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


class SparkTritonRunsPlugin(AirflowPlugin):
    """Run pages of ``TritonInferenceOperator`` tasks: live progress, rows/s, rejects, report, driver log."""

    name = PLUGIN_NAME
    fastapi_apps = [
        {
            "app": LazyApp(),
            "url_prefix": PLUGIN_PREFIX,
            "name": "Spark + Triton run pages",
        }
    ]
