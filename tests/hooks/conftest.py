"""Hook fixtures: a Databricks emulator per test, and (local backend) a check that no process leaks."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from tenacity import stop_after_attempt, wait_fixed

from tests.databricks_emulator import DatabricksEmulator, Settings
from tests.processes import describe, processes_under

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
        kwargs.setdefault("poll_interval_s", 0.05)
        kwargs.setdefault("single_user_name", "etl-sp@example.com")
        retry_args = {"stop": stop_after_attempt(attempts), "wait": wait_fixed(0.05)}
        return DatabricksGpuHook(kwargs.pop("databricks_conn_id", conn_id), retry_args=retry_args, **kwargs)

    return make


@pytest.fixture
def hook(tmp_path: Path) -> Any:
    """A local backend hook with its own home (test_spark_submit.py overrides it with its hook)."""
    from airflow_spark_triton.hooks.local_spark import LocalSparkHook

    return LocalSparkHook(spark_triton_conn_id=None, home=str(tmp_path / "home"))


# -- Local backend: every test must leave no process behind ------------------------------------
# A process counts as started by the test when it did not exist before the test and its command
# line, working directory or environment points into pytest's temporary root (where each test's
# cluster home lives). Leftovers are killed, by pid, so one leak does not cascade into other
# tests, and the test fails. Opt in with ``pytest.mark.usefixtures("no_process_left_behind")``.

PROCESS_SETTLE_S = 30.0  # executors and Python workers exit a few seconds after their application ends


def _process_snapshot() -> set[tuple[int, float]]:
    return {(p.info["pid"], p.info["create_time"]) for p in psutil.process_iter(["pid", "create_time"])}


def processes_started_under(root: Path, before: set[tuple[int, float]]) -> list[psutil.Process]:
    return [p for p in processes_under(root) if (p.pid, _create_time(p)) not in before]


def _create_time(proc: psutil.Process) -> float | None:
    with contextlib.suppress(psutil.Error):
        return proc.create_time()
    return None


@pytest.fixture
def no_process_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    root = tmp_path_factory.getbasetemp()
    before = _process_snapshot()
    yield
    deadline = time.monotonic() + PROCESS_SETTLE_S
    left = processes_started_under(root, before)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = processes_started_under(root, before)
    if left:
        report = describe(left)
        for proc in left:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(left, timeout=10)
        pytest.fail(f"processes started by this test are still running:\n{report}")
