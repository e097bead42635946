"""Hook fixtures: a Databricks emulator per test. (The local backend's: tests/backends/local/conftest.py.)"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tenacity import stop_after_attempt, wait_fixed

from tests.databricks_emulator import DatabricksEmulator, Settings

# Looks like a real PAT so that any leak is easy to grep for.
TOKEN = "dapi0123456789abcdef0123456789abcdef"
CONN_ID = "dbx_emulator"
ARTIFACT_ROOT = "/Volumes/main/default/spark_triton"


@pytest.fixture
def emulator_settings() -> Settings:
    return Settings(cluster_start_s=0.1, run_duration_s=0.1, cancel_s=0.1)


@pytest.fixture
def emulator(emulator_settings: Settings, tmp_path: Path) -> Iterator[DatabricksEmulator]:
    """Fast mode: clusters and runs are simulated; nothing starts Spark."""
    emu = DatabricksEmulator(TOKEN, home=tmp_path / "emulator", settings=emulator_settings).start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def conn_id(emulator: DatabricksEmulator, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(emulator.connection()))
    return CONN_ID


@pytest.fixture
def fake_wheel(tmp_path: Path) -> Path:
    """Stands in for the package wheel where nothing installs it (the emulator only checks it exists)."""
    wheel = tmp_path / "dist" / "airflow_spark_triton-0.1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(b"PK\x05\x06" + b"\x00" * 18)
    return wheel


@pytest.fixture
def make_hook(conn_id: str, fake_wheel: Path) -> Callable[..., Any]:
    from airflow_spark_triton.hooks.databricks_gpu import DatabricksGpuHook

    def make(attempts: int = 3, **kwargs: Any) -> DatabricksGpuHook:
        kwargs.setdefault("artifact_root", ARTIFACT_ROOT)
        kwargs.setdefault("wheel", str(fake_wheel))
        kwargs.setdefault("single_user_name", "etl-sp@example.com")
        retry_args = {"stop": stop_after_attempt(attempts), "wait": wait_fixed(0.05)}
        return DatabricksGpuHook(kwargs.pop("databricks_conn_id", conn_id), retry_args=retry_args, **kwargs)

    return make
