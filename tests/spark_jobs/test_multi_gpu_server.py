"""Multi-GPU nodes: one Triton server per node, one model copy per GPU (issue #14, item 6).

There is no GPU here, so the real server test loads its copies on ``cpu,cpu``: the same code path
as ``cuda:0,cuda:1`` (one loader call per device, each copy bound as its own PyTriton instance),
minus the placement. Which devices a node's server gets is tested apart, with the task's GPU
addresses stubbed, because Spark only hands out addresses its resource discovery found.
"""

from __future__ import annotations

import json
import socket
import sysconfig
import threading
import time
import urllib.request
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import psutil
import pytest

from spark_jobs import node_state
from spark_jobs import triton_fleet as fleet
from spark_jobs import triton_node as node
from spark_jobs.models.base import ServedModel, TensorSpec
from spark_jobs.models.hashing_embedder import embed
from spark_jobs.models.references import resolve_model
from spark_jobs.processes import group_members
from spark_jobs.triton_node import ServerRequest
from spark_jobs.triton_server import instance_devices, patient_handshake
from tests.spark_jobs.conftest import TINY_MODEL


def request(gpus: int, run_id: str = "multi-gpu") -> ServerRequest:
    return ServerRequest(
        run_id=run_id,
        model=TINY_MODEL,
        model_options_json="{}",
        ready_timeout_s=120,
        driver=None,
        gpus=gpus,
    )


# -- what each model copy is told --------------------------------------------------------------


def recording_model(calls: list[dict]) -> ServedModel:
    def loader(options):
        calls.append(dict(options))
        return lambda **inputs: inputs

    return ServedModel("rec", (TensorSpec("x", "float32"),), TensorSpec("y", "float32"), loader)


def test_each_copy_gets_its_device_and_instance_and_an_explicit_device_is_kept():
    calls: list[dict] = []
    model = recording_model(calls)
    model.load({"a": 1})
    model.load({"a": 1}, device="cuda:1", instance=1)
    model.load({"device": "cuda"}, device="cuda:2", instance=2)  # bare "cuda" would pile onto GPU 0
    model.load({"device": "cpu"}, device="cuda:3", instance=3)  # the user's explicit choice stands
    assert calls == [
        {"a": 1},
        {"a": 1, "device": "cuda:1", "instance": 1},
        {"device": "cuda:2", "instance": 2},
        {"device": "cpu", "instance": 3},
    ]


def test_server_devices_come_from_the_executors_gpus(monkeypatch, caplog):
    addresses: list[str] = []
    monkeypatch.setattr(node, "task_gpu_addresses", lambda: addresses)
    assert node.server_devices(request(0)) == []  # no GPU scheduling: one copy, the model's choice
    addresses[:] = ["0"]
    assert node.server_devices(request(1)) == []  # one GPU: unchanged single-copy behaviour
    addresses[:] = ["0", "1", "10", "2"]  # the start stage's task holds all of the executor's GPUs
    assert node.server_devices(request(4)) == ["cuda:0", "cuda:1", "cuda:2", "cuda:10"]
    addresses[:] = ["3"]  # an inference task (1/tasks_per_gpu of one GPU) restarting a dead server
    assert node.server_devices(request(4), {"devices": ["cuda:4", "cuda:5"]}) == ["cuda:4", "cuda:5"]
    assert node.server_devices(request(2)) == ["cuda:0", "cuda:1"]
    assert "no server ran here before" in caplog.text


def test_server_devices_flag_is_checked():
    assert instance_devices(None) == []
    assert instance_devices("cuda:0, cuda:1") == ["cuda:0", "cuda:1"]
    with pytest.raises(ValueError, match="--devices"):
        instance_devices(" , ")


def test_the_start_task_of_a_multi_gpu_executor_asks_for_all_its_gpus():
    assert fleet.start_task_profile(1, 0) is None  # a default task already takes the executor
    assert fleet.start_task_profile(1, 1) is None
    single = fleet.start_task_profile(4, 1).taskResources
    assert single["cpus"].amount == 4 and "gpu" not in single  # one GPU: the task's share names it
    multi = fleet.start_task_profile(8, 4).taskResources
    assert (multi["cpus"].amount, multi["gpu"].amount) == (8, 4.0)


def proxy_files() -> dict[str, bytes]:
    """The installed PyTriton's proxy files, as its load request sends them."""
    from pytriton.models.model import Model

    return Model.get_proxy_model_files(
        SimpleNamespace(model_version=1, SCRIPT_FILES_TO_COPY=Model.SCRIPT_FILES_TO_COPY)
    )


def communication_module(source: bytes) -> ModuleType:
    module = ModuleType("stub_communication")
    exec(compile(source, "communication.py", "exec"), module.__dict__)
    return module


def late_handshake_server(module: ModuleType, path: Path, config: dict) -> None:
    """Instance 0 on a busy node: the socket file appears after 1.5 s but refuses connections for
    0.5 s more (bound, not yet listening), then the handshake server answers."""

    def serve() -> None:
        time.sleep(1.5)
        bound = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        bound.bind(str(path))
        time.sleep(0.5)
        bound.close()
        path.unlink()
        module.HandshakeServer(path, config).start()

    threading.Thread(target=serve, daemon=True).start()


def test_later_instances_wait_for_the_first_instances_handshake(tmp_path):
    """Only ``communication.py`` changes, by an appended wrapper; the stub's handshake call then gets
    the config from a handshake server that is late and refuses at first, where PyTriton's own call
    gives up. A PyTriton without that call fails here, not as a model that fails to load."""
    files = proxy_files()
    patched = patient_handshake(files)
    changed = [name for name in files if patched[name] != files[name]]
    assert set(patched) == set(files) and changed == ["file:1/communication.py"]
    assert patched[changed[0]].startswith(files[changed[0]])
    with pytest.raises(RuntimeError, match=r"communication\.py"):
        patient_handshake(patched)

    original, patient = communication_module(files[changed[0]]), communication_module(patched[changed[0]])
    config = {"data_socket": "x", "authkey": "y"}
    late_handshake_server(original, tmp_path / "own.sock", config)
    with pytest.raises((TimeoutError, ConnectionRefusedError)):
        original.get_config_from_handshake_server(tmp_path / "own.sock")
    late_handshake_server(patient, tmp_path / "patient.sock", config)
    assert patient.get_config_from_handshake_server(tmp_path / "patient.sock") == config


# -- a real server with two copies -------------------------------------------------------------


@pytest.mark.slow
def test_a_node_server_with_two_model_copies_serves_from_both(monkeypatch):
    """``--devices cpu,cpu`` through the fleet's own launch path: two loader calls, two PyTriton
    instances, concurrent requests answered correctly; stopped by its recorded pid."""
    from pytriton.client import ModelClient

    monkeypatch.setattr(node, "server_devices", lambda _request, _existing=None: ["cpu", "cpu"])
    run_id = "multi-copy"
    record: dict = {}
    try:
        record = node.ensure_local_server(request(2, run_id))
        assert (record["devices"], record["model_copies"]) == (["cpu", "cpu"], 2)
        model = resolve_model(TINY_MODEL)
        url = f"http://127.0.0.1:{record['http_port']}"
        with urllib.request.urlopen(f"{url}/v2/models/{model.name}/config", timeout=10) as reply:
            config = json.load(reply)
        assert sum(int(g["count"]) for g in config["instance_group"]) == 2
        stubs = [p for p in psutil.Process(record["pid"]).children(recursive=True)
                 if p.name() == "triton_python_backend_stub"]  # fmt: skip
        assert len(stubs) == 2, stubs
        for stub in stubs:  # each instance runs the proxy files it was sent: the patient handshake
            proxy_dir = Path(next(a for a in stub.cmdline() if a.endswith("/model.py"))).parent
            sent = patient_handshake(proxy_files())["file:1/communication.py"]
            assert (proxy_dir / "communication.py").read_bytes() == sent

        texts = [f"document {i} on node {i % 3}" for i in range(64)]
        results: dict[int, np.ndarray] = {}
        errors: list[BaseException] = []

        def score(part: int) -> None:
            try:
                with ModelClient(url, model.name, init_timeout_s=60, inference_timeout_s=60) as client:
                    batch = np.array([t.encode() for t in texts[part::4]], dtype=np.object_).reshape(-1, 1)
                    results[part] = client.infer_batch(text=batch)["embedding"]
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=score, args=(p,)) for p in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors, errors
        for part in range(4):
            np.testing.assert_allclose(results[part], embed(texts[part::4]), rtol=1e-5, atol=1e-6)
        # What the stop below must remove: the group is killed, so nothing of it cleans up itself.
        leftovers = node_state.server_leftovers(group_members(node_state.server_process(record)))
        assert sum(p.name.startswith(f"pytrtion{record['pid']}-") for p in leftovers) == 2, leftovers
        assert any((p / "model-store").is_dir() for p in leftovers), leftovers  # PyTriton's workspace
    finally:
        stopped = node.stop_local_server(run_id)
        if record:
            node_state.kill_group(record)  # by pid, should the stop above have missed it
    assert stopped["pid"] == record["pid"] and stopped["stopped"] and not stopped["running"]
    assert not node_state.process_matches(record)
    assert not [p for p in leftovers if p.exists()]


# -- a Spark cluster whose executor has two (invented) GPUs ---------------------------------------


@pytest.mark.slow
def test_an_executor_with_two_gpus_starts_one_server_with_a_copy_on_each(tmp_path):
    """Spark's own GPU scheduling, with GPUs a discovery script invents: the start stage's task gets
    both addresses (3 and 5, so the ``cuda:0..n-1`` fallback cannot pass for them), the node's one
    server loads a copy on each, and the inference tasks (one GPU each) are served by those copies."""
    from pyspark.sql import SparkSession

    from spark_jobs.inference import triton_predict_udf
    from spark_jobs.triton_fleet import server_request, start_servers, stop_servers
    from tests.conftest import REPO, stop_spark
    from tests.spark_jobs.conftest import fleet_job

    script = tmp_path / "gpus.sh"
    script.write_text('#!/bin/sh\necho \'{"name": "gpu", "addresses": ["3", "5"]}\'\n')
    script.chmod(0o755)
    spark = (
        SparkSession.builder.master("local-cluster[1,2,1024]")
        .appName("spark-jobs-two-gpus")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.worker.resource.gpu.amount", "2")
        .config("spark.worker.resource.gpu.discoveryScript", str(script))
        # what GpuClusterSpec(executor_cores=2, gpus_per_executor=2).stage_level_scheduling_conf() says
        .config("spark.executor.cores", "2")
        .config("spark.executor.resource.gpu.amount", "2")
        .config("spark.task.resource.gpu.amount", "1")
        .config("spark.executorEnv.SPARK_TRITON_STATE_DIR", node_state.state_dir().as_posix())
        .config("spark.executorEnv.PYTHONPATH", str(REPO))  # the server imports this test's model
        .config("spark.executorEnv.LD_LIBRARY_PATH", sysconfig.get_config_var("LIBDIR"))
        .getOrCreate()
    )
    config = fleet_job("two-gpus", model="tests.spark_jobs.device_echo_model:MODEL", expected_executors=1)
    servers: list[dict] = []
    try:
        servers = start_servers(spark, config)
        assert [(s["devices"], s["model_copies"]) for s in servers] == [(["cuda:3", "cuda:5"], 2)]
        predict = triton_predict_udf(
            resolve_model(config.model), server_request(spark, config), 4, timeout_s=60
        )
        df = spark.createDataFrame([(float(i),) for i in range(64)], "x float").repartition(4)
        answered = {row.g for row in df.select(predict("x").alias("g")).collect()}
        assert answered <= {3.0, 5.0} and answered, answered  # every row scored by one of the two copies
    finally:
        stop_servers(spark, config)
        for record in servers:
            node_state.kill_group(record, grace_s=5)  # by pid, should the stop stage have missed it
        stop_spark(spark)
    assert not any(node_state.process_matches(record) for record in servers)
