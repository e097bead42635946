"""One running Airflow for the deployed scenarios, with the project's DAGs and a user's DAGs beside them.

The deployment gets its own data and state directories (under the test session's root, so the
session's leak check covers every process it starts) and a canary secret in an unrelated
connection: the scenarios run first, and the last test checks the canary reached no file.

Beside it runs a standing Spark standalone cluster, reachable through a ``spark`` connection
(:data:`STANDING_CONN`): the team's shared cluster that the spark-submit backend attaches to. The
backfill scenarios run their dates there, as a team with such a cluster would, instead of starting
a cluster per date: three dates at once on a two-core machine would otherwise run three masters,
three workers and three drivers side by side.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from airflow_spark_triton.backends.local.backend import LocalSparkBackend
from airflow_spark_triton.cluster_spec import GpuClusterSpec
from tests.conftest import REPO, ROOT
from tests.faults.nightly import Tables, make_tables
from tests.harness.airflow_stack import AirflowStack

PER_DAY = 40
REUSED_DAGS = ("reused_sync", "reused_deferrable", "reused_deferrable_timeout")  # tests/harness/dags
STANDING_CONN = "spark_standing"
# Two one-core workers: two of the backfill's runs (one executor each) at a time, the third queued
# by the standalone master until one ends.
STANDING_SPEC = GpuClusterSpec(num_workers=2, executor_cores=1, worker_memory="1g")


@dataclass(frozen=True)
class Deployment:
    stack: AirflowStack
    tables: Tables
    state_home: Path
    data_dir: Path
    canary: str
    yesterday: dt.date
    standing_home: Path  # the standing cluster's own state (its JVMs and Triton records)

    @property
    def standing_conn(self) -> str:
        return STANDING_CONN

    def day(self, days_before_yesterday: int) -> dt.date:
        return self.yesterday - dt.timedelta(days=days_before_yesterday)


@pytest.fixture(scope="package")
def deployment() -> Iterator[Deployment]:
    root = ROOT / "deployed"
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
    standing = LocalSparkBackend(spark_triton_conn_id=None, home=str(root / "standing"))
    cluster_id = standing.create_cluster(STANDING_SPEC, {"purpose": "standing cluster of the deployment"})
    stack = None
    try:
        env[f"AIRFLOW_CONN_{STANDING_CONN.upper()}"] = standing_connection(standing, cluster_id)
        stack = AirflowStack(root / "airflow", dags, env)
        stack.start()  # while the standing cluster's workers register
        standing.wait_for_cluster(cluster_id, 180)
        for dag_id in REUSED_DAGS:  # unscheduled: unpausing them starts nothing until a test triggers
            stack.cli("dags", "unpause", dag_id)
        yield Deployment(
            stack, tables, root / "spark_triton", root / "data", canary, yesterday, standing.home
        )
    finally:
        try:
            if stack is not None:
                stack.stop()
        finally:
            standing.delete_cluster(cluster_id)


def standing_connection(standing: LocalSparkBackend, cluster_id: str) -> str:
    """The ``spark`` connection to the standing cluster, as its team would define it."""
    host, _, port = standing.get_cluster(cluster_id)["master"]["url"].rpartition(":")
    return json.dumps(
        {
            "conn_type": "spark",
            "host": host,
            "port": int(port),
            "extra": {"deploy-mode": "client", "python": sys.executable, "gpus": "false"},
        }
    )
