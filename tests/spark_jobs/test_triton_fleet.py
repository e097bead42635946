"""One Triton server per node on a real two-executor Spark cluster: start, serve, stop.

How it fails (a server that cannot load its model, dies, hangs or outlives its driver): tests/faults.
"""

from __future__ import annotations

import numpy as np
import psutil
import pytest

from spark_jobs import node_state
from spark_jobs.models.hashing_embedder import embed
from spark_jobs.models.references import resolve_model
from tests.spark_jobs.conftest import TINY_MODEL, fleet_job

pytestmark = pytest.mark.slow


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_one_server_per_node_serves_both_executors_and_stops(cluster_spark):
    from spark_jobs.inference import triton_predict_udf
    from spark_jobs.triton_fleet import start_servers, stop_servers

    config = fleet_job("fleet-ok")
    servers = start_servers(cluster_spark, config)
    try:
        assert len(servers) == 1, "two executors on one host must share one server"
        record = servers[0]
        assert node_state.process_matches(record)
        texts = [f"document number {i} about spark" for i in range(40)]
        df = cluster_spark.createDataFrame(
            [(i, t) for i, t in enumerate(texts)], "id long, text string"
        ).repartition(4)
        from spark_jobs.triton_fleet import server_request

        predict = triton_predict_udf(
            resolve_model(TINY_MODEL), server_request(cluster_spark, config), 8, timeout_s=60
        )
        rows = sorted(df.select("id", predict("text").alias("e")).collect())
        got = np.array([r.e for r in rows], dtype=np.float32)
        np.testing.assert_allclose(got, embed(texts), rtol=1e-5, atol=1e-6)
    finally:
        stopped = stop_servers(cluster_spark, config)
    assert [s["pid"] for s in stopped if s["stopped"]] == [record["pid"]]
    assert not node_state.process_matches(record)
    assert not node_state.record_path(node_state.state_dir(), "fleet-ok").exists()


def test_launch_then_start_waits_for_the_launched_server_on_the_nodes(cluster_spark):
    """The job launches its servers before it reads the input; the start stage waits for those
    same processes instead of starting others."""
    from spark_jobs.triton_fleet import launch_servers, start_servers, stop_servers

    config = fleet_job("fleet-launch")
    try:
        launched = launch_servers(cluster_spark, config)
        assert len({r["pid"] for r in launched}) == 1, "two executors on one host launch one server"
        assert sum(r["launched"] for r in launched) == 1
        servers = start_servers(cluster_spark, config)
        assert [s["pid"] for s in servers] == [launched[0]["pid"]]
    finally:
        stopped = stop_servers(cluster_spark, config)
    assert [s["pid"] for s in stopped if s["stopped"]] == [launched[0]["pid"]]
    assert gone(launched[0]["pid"])


def test_a_server_stopped_while_it_loads_is_gone():
    """A run canceled between launch and start (or a date whose rows were all rejected) stops a
    server that has no record yet, by the pid its launch wrote."""
    from spark_jobs import triton_node as node
    from tests.spark_jobs.test_multi_gpu_server import request

    launched = node.launch_local_server(request(0, "fleet-loading"))
    try:
        assert launched["launched"]
        assert not node_state.record_path(node_state.state_dir(), "fleet-loading").exists()
    finally:
        stopped = node.stop_local_server("fleet-loading")
    assert (stopped["pid"], stopped["stopped"], stopped["running"]) == (launched["pid"], True, False)
    assert gone(launched["pid"])
