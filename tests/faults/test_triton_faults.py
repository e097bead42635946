"""Triton server faults, where the job meets them: on a real two-executor Spark (``local-cluster``).

A server killed with -9 or hung (SIGSTOP) mid-job is replaced by the next batch that finds it
unhealthy, and the job completes with every row scored once. A server whose driver or executor is
gone stops itself (its watchdog), and one left behind by a dead driver is reaped by the next start.
The Spark application is shared by the module (one start), so "clusters left" counts the clusters
these tests make themselves: none; the session's leak check covers the shared one at the end.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest

from spark_jobs import node_state
from spark_jobs.contract import InferenceJobConfig
from spark_jobs.json_files import read_json, write_json_atomic
from spark_jobs.models.hashing_embedder import embed
from spark_jobs.models.references import resolve_model
from spark_jobs.processes import group_members
from tests.faults import ledger
from tests.spark_jobs.conftest import TINY_MODEL, fleet_job

pytestmark = [pytest.mark.faults, pytest.mark.slow]

BACKEND = "spark_jobs, local-cluster"


def score(spark, config: InferenceJobConfig, texts: list[str]) -> tuple[list[int], np.ndarray]:
    from spark_jobs.inference import triton_predict_udf
    from spark_jobs.triton_fleet import server_request

    df = spark.createDataFrame(list(enumerate(texts)), "id long, text string").repartition(2)
    udf = triton_predict_udf(
        resolve_model(TINY_MODEL), server_request(spark, config), 8, config.inference_timeout_s
    )
    rows = sorted(df.select("id", udf("text").alias("e")).collect())
    return [r.id for r in rows], np.array([r.e for r in rows], dtype=np.float32)


def servers_of(run_id: str) -> list[str]:
    """Live Triton processes of one run: recorded under its id, or started with ``--run-id``."""
    state_dir = node_state.state_dir()
    live = []
    record = read_json(node_state.record_path(state_dir, run_id))
    if record and node_state.process_matches(record):
        live.append(f"{record['pid']}: recorded server")
    for proc in ledger.processes_under(state_dir, markers=ledger.TRITON_MARKERS):
        if f"--run-id {run_id} " in " ".join(proc.cmdline()) + " ":
            live.append(f"{proc.pid}: {' '.join(proc.cmdline())[:120]}")
    return live


def wait_servers_gone(run_id: str, timeout_s: float = 60) -> float | None:
    deadline = time.monotonic() + timeout_s
    while servers_of(run_id):
        if time.monotonic() > deadline:
            return None
        time.sleep(0.2)
    return time.monotonic()


def record_row(request, fault: str, outcome: str, run_id: str, t0: float, ids_in, ids_out, **details):
    cleaned = wait_servers_gone(run_id)
    written = [str(i) for i in ids_out]
    return ledger.record(
        ledger.FaultRow(
            fault=fault,
            backend=BACKEND,
            outcome=outcome,
            clusters_left=0,
            servers_left=len(servers_of(run_id)),
            rows_lost=len({str(i) for i in ids_in} - set(written)),
            rows_duplicated=len(written) - len(set(written)),
            cleanup_s=None if cleaned is None else round(cleaned - t0, 1),
            test=request.node.nodeid,
            details={"servers": servers_of(run_id), **details},
        )
    )


def assert_clean(row: ledger.FaultRow) -> None:
    assert row.servers_left == 0, row.details["servers"]
    assert row.cleanup_s is not None, "the run's servers never all stopped"
    assert (row.rows_lost, row.rows_duplicated) == (0, 0)


@pytest.mark.parametrize(
    ("fault", "sig"),
    [("Triton server kill -9 mid-job", signal.SIGKILL), ("Triton server hang (SIGSTOP)", signal.SIGSTOP)],
    ids=["kill-9", "hang"],
)
def test_a_dead_or_hung_server_is_replaced_and_the_job_completes(request, cluster_spark, fault, sig):
    from spark_jobs.triton_fleet import start_servers, stop_servers

    config = fleet_job(f"recover-{request.node.callspec.id}", inference_timeout_s=5)
    texts = [f"row {i} of the recovery test" for i in range(24)]
    (first,) = start_servers(cluster_spark, config)
    ids: list[int] = []
    # What the broken server's group holds that outlives it unless the fleet removes it.
    leftovers = node_state.server_leftovers(group_members(node_state.server_process(first)))
    assert any(p.name.startswith(f"pytrtion{first['pid']}-") for p in leftovers), leftovers
    assert Path(first["workspace"]) in leftovers
    try:
        struck = time.monotonic()
        os.killpg(first["pgid"], sig)
        ids, got = score(cluster_spark, config, texts)
        np.testing.assert_allclose(got, embed(texts), rtol=1e-5, atol=1e-6)
        current = read_json(node_state.record_path(node_state.state_dir(), config.run_id))
    finally:
        stop_servers(cluster_spark, config)
        node_state.kill_group(first, grace_s=1)
    row = record_row(
        request, fault, "job succeeded: server replaced", config.run_id, struck, range(len(texts)), ids
    )
    assert current["pid"] != first["pid"], "a new server must have replaced the broken one"
    assert not node_state.process_matches(first)
    assert not [p for p in leftovers if p.exists()], "the replaced server's shared memory or workspace"
    assert_clean(row)


def test_a_server_left_by_a_dead_driver_is_stopped_by_the_next_start(request, cluster_spark):
    from spark_jobs.triton_fleet import start_servers, stop_servers

    directory = node_state.state_dir()
    orphan_config = fleet_job("orphaned")
    (orphan,) = start_servers(cluster_spark, orphan_config)
    # Pretend its driver is gone: point the record at a port nothing listens on.
    record = node_state.record_path(directory, "orphaned")
    write_json_atomic(record, {**read_json(record), "driver": f"127.0.0.1:{node_state.free_port()}"})
    try:
        struck = time.monotonic()
        start_servers(cluster_spark, fleet_job("next-run"))
        reaped = not node_state.process_matches(orphan) and not record.exists()
    finally:
        stop_servers(cluster_spark, fleet_job("next-run"))
        stop_servers(cluster_spark, orphan_config)
    row = record_row(request, "server orphaned by a dead driver", "reaped by the next run's start",
                     "orphaned", struck, [], [])  # fmt: skip
    assert reaped, "the next start must stop a server whose driver is gone"
    assert_clean(row)


@pytest.mark.parametrize("watched", ["executor", "driver"])
def test_server_stops_itself_when_what_it_watches_is_gone(request, tmp_path, watched):
    """The watchdog is the net for a driver or executor killed before it could stop its servers:
    the executor JVM's pid (``--watch-pid``) or the driver's endpoint (``--driver host:port``)."""
    args, stand_in = [], None
    if watched == "executor":
        stand_in = subprocess.Popen(["sleep", "300"])
        args = ["--watch-pid", str(stand_in.pid)]
    else:
        driver = socket.create_server(("127.0.0.1", 0))  # the driver's RPC endpoint, for the server
        args = ["--driver", f"127.0.0.1:{driver.getsockname()[1]}"]
    run_id = f"watch-{watched}"
    record = tmp_path / f"{run_id}.json"
    env = {**os.environ, "LD_LIBRARY_PATH": sysconfig.get_config_var("LIBDIR")}
    ports = [str(node_state.free_port()) for _ in range(3)]
    server = subprocess.Popen(
        [sys.executable, "-m", "spark_jobs.triton_server", "--model", TINY_MODEL, "--run-id", run_id,
         "--record", str(record), "--http-port", ports[0], "--grpc-port", ports[1], "--metrics-port", ports[2],
         "--watch-interval-s", "0.5", *args],
        env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    struck = None
    try:
        deadline = time.monotonic() + 90
        while not record.exists() and time.monotonic() < deadline and server.poll() is None:
            time.sleep(0.2)
        assert record.exists(), "server never became ready"
        struck = time.monotonic()
        if stand_in is not None:
            stand_in.kill()
            stand_in.wait()
        else:
            driver.close()
        code = server.wait(timeout=60)
        stopped = time.monotonic()
        output = server.stdout.read()
        left = node_state.kill_group({"pid": server.pid, "pgid": server.pid})
    finally:
        if stand_in is not None:
            stand_in.kill()
        node_state.kill_group({"pid": server.pid, "pgid": server.pid}, grace_s=5)
    reason = "executor process" if watched == "executor" else "driver"
    ledger.record(
        ledger.FaultRow(
            fault=f"watchdog: {watched} gone",
            backend="Triton server alone",
            outcome=f"server stopped itself ({reason} gone)",
            clusters_left=0,
            servers_left=int(left),
            rows_lost=0,
            rows_duplicated=0,
            cleanup_s=round(stopped - struck, 1),
            test=request.node.nodeid,
        )
    )
    assert code == 0
    expected = "executor process" if watched == "executor" else "unreachable"
    assert f"stopping Triton: {reason}" in output and expected in output, output[-2000:]
    assert not left, "tritonserver outlived its server"
