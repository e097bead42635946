"""A small local Spark for the tests of the code that runs on the cluster."""

from __future__ import annotations

import os
import sysconfig

import pytest

from spark_jobs.contract import InferenceJobConfig
from tests.conftest import stop_spark


@pytest.fixture(scope="module")
def spark():
    """One local[2] session per test module, stopped (JVM included) when the module is done.

    Module- rather than session-scoped: a process holds one SparkContext, so a later module that builds
    its own cluster (``local-cluster[...]`` in test_triton_fleet.py) would otherwise be handed this
    local session by ``getOrCreate`` and silently test the wrong thing.
    """
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("spark-jobs-tests")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    yield session
    stop_spark(session)


@pytest.fixture(scope="module")
def cluster_spark():
    """Two executors in their own JVMs on this machine: the smallest cluster with more than one executor.

    Executors get the state dir and the interpreter's libpython first on LD_LIBRARY_PATH, as the
    backends give them, so Triton servers started from tasks behave as on a real cluster.
    """
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local-cluster[2,1,1024]")
        .appName("spark-jobs-cluster-tests")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.executorEnv.SPARK_TRITON_STATE_DIR", os.environ["SPARK_TRITON_STATE_DIR"])
        .config("spark.executorEnv.LD_LIBRARY_PATH", sysconfig.get_config_var("LIBDIR"))
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    yield session
    stop_spark(session)


TINY_MODEL = "spark_jobs.models.hashing_embedder:MODEL"


def fleet_job(run_id: str, **overrides) -> InferenceJobConfig:
    """A job for the fleet tests on ``cluster_spark``: they start servers and score, never read tables."""
    values = {
        "input_table": "/unused/in",
        "output_table": "/unused/out",
        "model": TINY_MODEL,
        "logical_date": "2026-11-24",
        "expected_executors": 2,
        "run_id": run_id,
        "server_ready_timeout_s": 120,
        **overrides,
    }
    return InferenceJobConfig(**values)
