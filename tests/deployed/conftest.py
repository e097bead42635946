"""One running Airflow per test module, with the project's DAGs and a user's DAGs beside them.

The deployment gets its own data and state directories (under the test session's root, so the
session's leak check covers every process it starts) and a canary secret in an unrelated
connection: the scenarios run first, and the last test checks the canary reached no file.

``test_nightly_deployed.py`` runs every scenario on the quick profile (LocalExecutor, SQLite: the
``deployment`` fixture here); ``test_celery_deployed.py`` runs the scheduled, backfill and kill -9
scenarios again on the production-like one (CeleryExecutor, two workers, Redis, PostgreSQL), with
its own ``deployment`` from :func:`deploy`.
"""

from __future__ import annotations

import datetime as dt
import secrets
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, ROOT
from tests.faults.nightly import Tables, make_tables
from tests.harness.airflow_stack import LOCAL, AirflowStack

PER_DAY = 40
REUSED_DAGS = ("reused_sync", "reused_deferrable", "reused_deferrable_timeout")  # tests/harness/dags


@dataclass(frozen=True)
class Deployment:
    stack: AirflowStack
    tables: Tables
    state_home: Path
    data_dir: Path
    canary: str
    yesterday: dt.date

    def day(self, days_before_yesterday: int) -> dt.date:
        return self.yesterday - dt.timedelta(days=days_before_yesterday)


def deploy(name: str, profile: str = LOCAL) -> Iterator[Deployment]:
    """A started deployment under ``ROOT/<name>`` on ``profile`` (see the harness), stopped after."""
    root = ROOT / name
    root.mkdir(parents=True, exist_ok=True)
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    documents = make_tables(root, [yesterday - dt.timedelta(days=n) for n in range(10)], PER_DAY).input
    # The nightly DAG's default tables (its params' defaults under SPARK_TRITON_DATA_DIR).
    tables = Tables(documents, root / "data/document_embeddings", root / "data/document_embeddings_rejects")
    canary = f"canary-{secrets.token_hex(8)}"
    dags = [*sorted((REPO / "dags").glob("*.py")), REPO / "tests/harness/dags/reused_operators.py"]
    env = {
        "SPARK_TRITON_DATA_DIR": str(root / "data"),
        "AIRFLOW_SPARK_TRITON_HOME": str(root / "spark_triton"),
        # An unrelated connection of the worker: its password must reach no file the runs write.
        "AIRFLOW_CONN_WAREHOUSE_CANARY": f"postgres://etl:{canary}@warehouse.invalid:5432/dw",
    }
    stack = AirflowStack(root / "airflow", dags, env, profile=profile)
    try:
        stack.start()
        for dag_id in REUSED_DAGS:  # unscheduled: unpausing them starts nothing until a test triggers
            stack.cli("dags", "unpause", dag_id)
        yield Deployment(stack, tables, root / "spark_triton", root / "data", canary, yesterday)
    finally:
        stack.stop()
        for restart in stack.restarts:  # an Airflow component crashed (not a test failure: see _supervise)
            warnings.warn(f"Airflow component restarted during the deployed tests: {restart}", stacklevel=1)


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    """The quick profile: LocalExecutor and SQLite."""
    yield from deploy("deployed")
