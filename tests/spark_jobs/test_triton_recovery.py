"""A server that dies, hangs or outlives its job is replaced or stopped; the job never hangs on it."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from spark_jobs import node_state
from spark_jobs.job_config import InferenceJobConfig
from spark_jobs.json_files import read_json, write_json_atomic
from spark_jobs.models.base import resolve_model
from spark_jobs.models.hashing_embedder import embed
from tests.spark_jobs.conftest import TINY_MODEL, fleet_job

pytestmark = pytest.mark.slow


def score(spark, config: InferenceJobConfig, texts: list[str]) -> np.ndarray:
    from spark_jobs.inference import triton_predict_udf
    from spark_jobs.triton_fleet import server_request

    df = spark.createDataFrame(list(enumerate(texts)), "id long, text string").repartition(2)
    udf = triton_predict_udf(
        resolve_model(TINY_MODEL), server_request(spark, config), 8, config.inference_timeout_s
    )
    rows = sorted(df.select("id", udf("text").alias("e")).collect())
    return np.array([r.e for r in rows], dtype=np.float32)


@pytest.mark.parametrize("fault", ["kill -9", "hang"])
def test_a_dead_or_hung_server_is_replaced_and_the_job_completes(cluster_spark, fault):
    from spark_jobs.triton_fleet import start_servers, stop_servers

    config = fleet_job(f"recover-{fault.split()[0]}", inference_timeout_s=5)
    texts = [f"row {i} of the recovery test" for i in range(24)]
    (first,) = start_servers(cluster_spark, config)
    try:
        os.killpg(first["pgid"], signal.SIGKILL if fault == "kill -9" else signal.SIGSTOP)
        got = score(cluster_spark, config, texts)
        np.testing.assert_allclose(got, embed(texts), rtol=1e-5, atol=1e-6)
        current = read_json(node_state.record_path(node_state.state_dir(), config.run_id))
        assert current["pid"] != first["pid"], "a new server must have replaced the broken one"
        assert not node_state.process_matches(first)
    finally:
        stop_servers(cluster_spark, config)
        node_state.kill_group(first, grace_s=1)


def test_a_server_left_by_a_dead_driver_is_stopped_by_the_next_start(cluster_spark):
    from spark_jobs.triton_fleet import start_servers, stop_servers

    directory = node_state.state_dir()
    orphan_config = fleet_job("orphaned")
    (orphan,) = start_servers(cluster_spark, orphan_config)
    # Pretend its driver is gone: point the record at a port nothing listens on.
    record = node_state.record_path(directory, "orphaned")
    write_json_atomic(record, {**read_json(record), "driver": f"127.0.0.1:{node_state.free_port()}"})
    try:
        start_servers(cluster_spark, fleet_job("next-run"))
        assert not node_state.process_matches(orphan)
        assert not record.exists()
    finally:
        stop_servers(cluster_spark, fleet_job("next-run"))
        stop_servers(cluster_spark, orphan_config)
