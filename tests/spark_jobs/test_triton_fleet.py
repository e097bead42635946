"""One Triton server per node on a real two-executor Spark cluster: start, serve, stop, fail cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import time

import numpy as np
import pytest

from spark_jobs import node_state
from spark_jobs.models.base import resolve_model
from spark_jobs.models.hashing_embedder import embed
from tests.spark_jobs.conftest import TINY_MODEL, fleet_job

pytestmark = pytest.mark.slow


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


def test_server_that_cannot_load_its_model_fails_the_start_naming_the_host(cluster_spark):
    from spark_jobs.triton_fleet import stop_servers

    config = fleet_job("fleet-bad", model="spark_jobs.models.does_not_exist:MODEL", server_ready_timeout_s=60)
    with pytest.raises(Exception, match=r"on host .*exited before ready"):
        from spark_jobs.triton_fleet import start_servers

        start_servers(cluster_spark, config)
    assert stop_servers(cluster_spark, config) == []


def test_server_stops_itself_when_the_process_it_watches_is_gone(tmp_path):
    """The watchdog is the net for a driver or executor killed before it could stop its servers."""
    watched = subprocess.Popen(["sleep", "300"])
    record = tmp_path / "w.json"
    env = {**os.environ, "LD_LIBRARY_PATH": sysconfig.get_config_var("LIBDIR")}
    ports = [str(node_state.free_port()) for _ in range(3)]
    server = subprocess.Popen(
        [sys.executable, "-m", "spark_jobs.triton_server", "--model", TINY_MODEL, "--run-id", "w",
         "--record", str(record), "--http-port", ports[0], "--grpc-port", ports[1], "--metrics-port", ports[2],
         "--watch-pid", str(watched.pid), "--watch-interval-s", "0.5"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not record.exists() and time.monotonic() < deadline and server.poll() is None:
            time.sleep(0.2)
        assert record.exists(), "server never became ready"
        watched.kill()
        watched.wait()
        assert server.wait(timeout=60) == 0
        assert not node_state.kill_group({"pid": server.pid, "pgid": server.pid}), (
            "tritonserver outlived its server"
        )
    finally:
        watched.kill()
        node_state.kill_group({"pid": server.pid, "pgid": server.pid}, grace_s=5)
