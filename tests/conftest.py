"""Session-wide isolation: Airflow, data and clusters of a test run live under one temporary root.

The environment is set at import time, before anything imports Airflow, so no test touches the
user's ``~/airflow``. At the end of the session, a check fails the run if any Spark JVM, Triton
server or job driver that belongs to this session is still alive: the shutdown guarantee, tested.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from tests.processes import describe, processes_under

ROOT = Path(tempfile.mkdtemp(prefix="spark-triton-tests-"))
REPO = Path(__file__).resolve().parents[1]
os.environ.update(
    {
        "AIRFLOW_HOME": str(ROOT / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW_SPARK_TRITON_HOME": str(ROOT / "spark_triton"),
        "SPARK_TRITON_DATA_DIR": str(ROOT / "data"),
        "SPARK_TRITON_STATE_DIR": str(ROOT / "triton_state"),
        # The drivers' class-data archive: recorded by the session's first run, mapped by the rest.
        "SPARK_TRITON_JVM_CACHE": str(ROOT / "jvm_cache"),
        "HF_HUB_OFFLINE": "1",
        # Spark's Python workers run `python3` from PATH unless told otherwise; CI has no venv on PATH.
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
    }
)


def _interrupt(signum: int, _frame: object) -> None:
    """A SIGTERM'd test run (CI's timeout, a person's kill) still runs its fixtures' teardowns,
    which stop the clusters, servers and Airflow components they started."""
    raise KeyboardInterrupt(f"signal {signum}")


signal.signal(signal.SIGTERM, _interrupt)

LEAK_MARKERS = (
    "tritonserver",
    "triton_python_backend_stub",
    "org.apache.spark.deploy",
    "SparkSubmit",
    "triton_server",
    # the deployed tests' Airflow components and the task processes of their LocalExecutor
    "airflow api-server",
    "airflow scheduler",
    "airflow dag-processor",
    "airflow triggerer",
    "airflow worker",
    # the celery profile (tests/harness/services.py): Celery workers (setproctitle'd `[celeryd: ...]`,
    # their pool processes `airflow supervisor: <ti id>` while they run a task), PostgreSQL, Redis
    "[celeryd:",
    "airflow celery",
    "airflow supervisor",
    "postgres",
    "redis-server",
    "airflow_spark_triton.backends.local.reaper",  # each local cluster's reaper (see that module)
)


def session_processes(root: Path = ROOT) -> list[str]:
    """Marked processes whose command line, environment or working directory points into this
    session's root, and their marked descendants (a server that overwrote its environment with its
    process title: PostgreSQL's backends)."""
    found = {proc.pid: proc for proc in processes_under(root, markers=LEAK_MARKERS)}
    for proc in list(found.values()):
        with contextlib.suppress(psutil.Error):
            for child in proc.children(recursive=True):
                if any(marker in " ".join(child.cmdline()) for marker in LEAK_MARKERS):
                    found.setdefault(child.pid, child)
    return describe(found.values()).splitlines()


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata DB for tests that run DAGs."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
    )
    return Path(os.environ["AIRFLOW_HOME"])


@pytest.fixture(scope="session", autouse=True)
def no_processes_left_behind():
    yield
    deadline = time.monotonic() + 20  # a stopping server may need a few seconds to exit
    left = session_processes()
    while left and time.monotonic() < deadline:
        time.sleep(1)
        left = session_processes()
    assert not left, "processes left running by this test session:\n" + "\n".join(left)


def stop_spark(spark) -> None:
    """Stop the session and its py4j gateway JVM, which otherwise lives until the interpreter exits."""
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    spark.stop()
    if gateway is None:
        return
    proc = getattr(gateway, "proc", None)
    gateway.shutdown()
    if proc is not None:
        proc.stdin.close()  # the gateway JVM exits when its stdin closes
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    SparkContext._gateway = None
    SparkContext._jvm = None


# The longest modules first. `make test` runs xdist with --dist loadscope --no-loadscope-reorder:
# each module goes whole to one process, in collection order, so these start at once on their own
# processes and the short modules fill in the end, instead of a long module starting last and
# running alone (xdist's default order is by test count, which puts these few-test modules last).
LONGEST_FIRST = (
    "tests/deployed/test_nightly_deployed.py",
    "tests/deployed/test_celery_deployed.py",
    "tests/faults/test_local_dag_faults.py",
    "tests/e2e/test_write_modes.py",  # eight local-backend runs on one cluster: ~8 min on a busy 2-core box
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest modules, then the other modules with slow tests, then the rest. Whole modules move,
    and a stable sort keeps each module's own order (the deployed scenarios rely on it)."""

    def module(item: pytest.Item) -> str:
        return item.nodeid.split("::", 1)[0]

    slow = {module(item) for item in items if item.get_closest_marker("slow")}

    def rank(item: pytest.Item) -> int:
        path = module(item)
        if path in LONGEST_FIRST:
            return LONGEST_FIRST.index(path)
        return len(LONGEST_FIRST) + (0 if path in slow else 1)

    items.sort(key=rank)
