"""A small local Spark for the tests of the code that runs on the cluster."""

from __future__ import annotations

import pytest

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
