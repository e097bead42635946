"""Databricks backend fixtures: the hook tests' emulator, and a backend on it with fast retries and polls."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tenacity import stop_after_attempt, wait_fixed

from tests.hooks.conftest import (  # noqa: F401 (fixtures)
    ARTIFACT_ROOT,
    conn_id,
    emulator,
    emulator_settings,
    fake_wheel,
)


@pytest.fixture
def make_backend(conn_id: str, fake_wheel: Path) -> Callable[..., Any]:  # noqa: F811
    from airflow_spark_triton.backends.databricks.backend import DatabricksBackend

    def make(attempts: int = 3, **kwargs: Any) -> DatabricksBackend:
        kwargs.setdefault("artifact_root", ARTIFACT_ROOT)
        kwargs.setdefault("wheel", str(fake_wheel))
        kwargs.setdefault("poll_interval_s", 0.05)
        kwargs.setdefault("single_user_name", "etl-sp@example.com")
        retry_args = {"stop": stop_after_attempt(attempts), "wait": wait_fixed(0.05)}
        return DatabricksBackend(kwargs.pop("databricks_conn_id", conn_id), retry_args=retry_args, **kwargs)

    return make
