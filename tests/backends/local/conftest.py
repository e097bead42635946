"""Local backend fixtures: a backend with its own home, the per-test process leak check, and the
canary secrets of the no-secrets tests (tests/backends/spark_submit/conftest.py shares them)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from airflow_spark_triton.runs import processes as procs
from airflow_spark_triton.runs.processes import ProcessRecord
from tests.processes import describe, processes_under
from tests.runs.test_env import CANARY, SECRETS


@pytest.fixture
def backend(tmp_path: Path):
    """A local backend with its own home, no connection lookup."""
    from airflow_spark_triton.backends.local.backend import LocalSparkBackend

    return LocalSparkBackend(spark_triton_conn_id=None, home=str(tmp_path / "home"))


@pytest.fixture
def canary(monkeypatch: pytest.MonkeyPatch) -> str:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    return CANARY


#: A cluster spec's own secret (``spark_env_vars``), unlike the worker's secrets of ``canary``: it must
#: reach the job's processes, but only through their environments.
SPEC_CANARY = "spec-canary-0d5e1b9a"
SPEC_SECRET = {"SPARK_TRITON_CANARY_TOKEN": SPEC_CANARY}


@pytest.fixture
def secrets_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """The deployment's key for sealed spark_env_vars (``[spark_triton] secrets_key``)."""
    from cryptography.fernet import Fernet

    key = Fernet.generate_key().decode()
    monkeypatch.setenv("AIRFLOW__SPARK_TRITON__SECRETS_KEY", key)
    return key


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str]]:
    """The environment of every process a backend would start (none is started)."""
    envs: list[dict[str, str]] = []

    def fake_start(argv, *, env, **_kwargs):
        envs.append(dict(env))
        return ProcessRecord.of(os.getpid())

    monkeypatch.setattr(procs, "start_detached", fake_start)
    return envs


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
