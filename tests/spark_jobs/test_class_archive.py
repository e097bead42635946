"""An executor dumps its class-data archive on the job's request, whole, while the application runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_spark_triton.backends.local import jvm_archive
from spark_jobs.class_archive import EXECUTOR_ARCHIVE_ENV, dump_executor_archive
from tests.conftest import stop_spark

pytestmark = pytest.mark.slow


def test_one_executor_dumps_a_whole_archive_into_the_requested_directory(tmp_path: Path):
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local-cluster[1,1,1024]")
        .appName("class-archive-test")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.executor.extraJavaOptions", jvm_archive.DUMP_ON_REQUEST)
        .config(f"spark.executorEnv.{EXECUTOR_ARCHIVE_ENV}", str(tmp_path))
        .getOrCreate()
    )
    try:
        assert session.sparkContext.parallelize(range(10), 2).sum() == 45
        outcome = dump_executor_archive(session)
    finally:
        stop_spark(session)
    (archive,) = jvm_archive.recorded_files(tmp_path, ("executor",))
    assert "dumped its class-data archive" in outcome and str(archive) in outcome, outcome
    assert jvm_archive.complete(archive) and archive.stat().st_size > 10_000_000
