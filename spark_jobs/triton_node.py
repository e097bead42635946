"""This node's Triton server for one run: the code that runs on each node, in Spark tasks.

The launch, start and stop stages of :mod:`spark_jobs.triton_fleet` (the driver side) run one task
per executor, and every inference task asks again (:mod:`spark_jobs.inference`): each of them calls
this module on its own node. Under the node lock (:mod:`spark_jobs.node_state`) the first caller of a
run starts the node's server (``python -m spark_jobs.triton_server``, detached, watching the executor
and the driver), later callers find it, a dead or hung one is replaced, and stop kills it by record.
Several executors on one host share that host's server.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from spark_jobs import node_state
from spark_jobs.json_files import read_json
from spark_jobs.model_files import server_model_location

log = logging.getLogger(__name__)

PORT_ATTEMPTS = 3


class TritonStartError(RuntimeError):
    """A node's server did not become ready; the message names the host and carries its log."""


@dataclass(frozen=True)
class ServerRequest:
    """What a node needs to start its server; pickled into the start stage's closure."""

    run_id: str
    model: str
    model_options_json: str
    ready_timeout_s: float
    driver: str | None
    server_args: tuple[str, ...] = ()  # batcher/instance flags of spark_jobs.triton_server
    gpus: int = 0  # GPUs per executor (spark.executor.resource.gpu.amount): one model copy each
    client_protocol: str = "http"  # how the workers' clients reach it: "http" or "grpc"


# A server on a node without GPUs runs one single-threaded model instance per core, all sharing one
# model copy: as many independent forward passes at once as the in-process UDF's single-threaded
# Python workers, without torch's intra-op threads synchronising over small batches. Measured on
# 2 cores (benchmarks/TUNING.md, "Model instances on CPU"): Triton path / in-process UDF 0.84 with
# one 2-thread instance, 1.14 with two 1-thread instances. Capped, since each instance is a
# Python-backend stub process of its own.
MAX_CPU_INSTANCES = 8
# ... and no dynamic-batcher delay: with one single-threaded instance per core, merging two workers'
# requests into one batch runs them one after the other on one core while the other idles. Measured
# on 2 cores, 3,000 documents (benchmarks/TUNING.md, "Stop, start and queue delay"): Triton path / in-process
# UDF 0.90 and 0.97 with the 2 ms default, 1.07 and 1.07 with none. A GPU keeps the 2 ms default:
# there bigger batches fill the device.
CPU_MAX_QUEUE_DELAY_US = 0


def cpu_instances(request: ServerRequest, devices: list[str]) -> tuple[int, int] | None:
    """(model instances, torch threads each) for this node's server when the job leaves the instances
    to us and the node serves from its CPUs; ``None`` where a GPU serves (one instance per copy)."""
    if request.gpus or devices or "--instances" in request.server_args:
        return None
    cores = len(os.sched_getaffinity(0))
    instances = max(1, min(cores, MAX_CPU_INSTANCES))
    return instances, max(1, cores // instances)


def cpu_server_flags(request: ServerRequest, devices: list[str]) -> tuple[list[str], int | None]:
    """The server flags a CPU node adds to the job's (:func:`cpu_instances`, and no queue delay
    unless the job sets one), and the torch threads of each instance; nothing where a GPU serves."""
    on_cpu = cpu_instances(request, devices)
    if on_cpu is None:
        return [], None
    instances, torch_threads = on_cpu
    flags = ["--instances", str(instances)]
    if "--max-queue-delay-us" not in request.server_args:
        flags += ["--max-queue-delay-us", str(CPU_MAX_QUEUE_DELAY_US)]
    return flags, torch_threads


def _server_env(torch_threads: int | None = None) -> dict[str, str]:
    """PyTriton's Python-backend stub must load this interpreter's libpython, not the system one."""
    env = dict(os.environ)
    # Spark sets OMP_NUM_THREADS to spark.executor.cores in every Python worker (SPARK-28843); the
    # server we launch from one would inherit it and run torch on one executor's cores, not the
    # node's. The server serves every executor on the node: its threads are sized to the node.
    env.pop("OMP_NUM_THREADS", None)
    if torch_threads:
        env["OMP_NUM_THREADS"] = str(torch_threads)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def task_gpu_addresses() -> list[str]:
    """The GPU addresses Spark assigned to the running task (``TaskContext.resources()``), if any."""
    try:
        from pyspark import TaskContext
    except ImportError:
        return []
    context = TaskContext.get()
    info = context.resources().get("gpu") if context is not None else None
    return list(info.addresses) if info is not None else []


def server_devices(request: ServerRequest, existing: dict[str, Any] | None = None) -> list[str]:
    """Torch devices of the node server's model copies: one per GPU of the executor, or none.

    None (``[]``) when the executor has at most one GPU: the server keeps one copy on the model's
    own device choice, as on a CPU-only or single-GPU node. With several, the GPUs are the ones
    Spark gave the executor: the start stage's task asks for all of them (``_one_task_per_executor``)
    so its ``TaskContext`` lists them; a restart from an inference task (which holds one GPU) reuses
    the devices of the server it replaces; a node that never had a server and is first reached by
    an inference task uses GPUs ``0..n-1``, which is what a node-owning executor's discovery
    script reports (Databricks: every GPU of the worker).
    """
    if request.gpus <= 1:
        return []
    addresses = sorted(task_gpu_addresses(), key=lambda a: (len(a), a))  # "2" before "10"
    if len(addresses) >= request.gpus:
        return [f"cuda:{a}" for a in addresses[: request.gpus]]
    if existing and existing.get("devices"):
        return list(existing["devices"])
    log.warning(
        "task holds GPU(s) %s of the executor's %d and no server ran here before; using cuda:0..%d",
        addresses,
        request.gpus,
        request.gpus - 1,
    )
    return [f"cuda:{i}" for i in range(request.gpus)]


def _start_process(request: ServerRequest, directory: Path, record: Path, devices: list[str]) -> int:
    """Launch the server daemon; return its pid (the launcher itself exits at once)."""
    log_path = directory / f"{request.run_id}.log"
    pid_file = directory / f"{request.run_id}.pid"
    pid_file.unlink(missing_ok=True)
    cmd = [
        sys.executable, "-m", "spark_jobs.triton_server",
        "--model", server_model_location(request.model),
        "--model-options", request.model_options_json,
        "--run-id", request.run_id,
        "--record", str(record),
        "--http-port", str(node_state.free_port()),
        "--grpc-port", str(node_state.free_port()),
        "--metrics-port", str(node_state.free_port()),
        "--pid-file", str(pid_file),
    ]  # fmt: skip
    watch_pid = node_state.executor_jvm_pid()
    if watch_pid:
        cmd += ["--watch-pid", str(watch_pid)]
    if request.driver:
        cmd += ["--driver", request.driver]
    cmd += list(request.server_args)
    if devices:
        cmd += ["--devices", ",".join(devices)]
    cpu_flags, torch_threads = cpu_server_flags(request, devices)
    cmd += cpu_flags
    with open(log_path, "ab") as log_file:
        launcher = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=_server_env(torch_threads),
            timeout=60,
        )
    deadline = time.monotonic() + 30  # the daemon writes its pid just after the launcher exits
    while launcher.returncode == 0 and not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if launcher.returncode != 0 or not pid_file.exists():
        raise TritonStartError(
            f"could not launch the Triton server on host {socket.gethostname()}: {_log_tail(log_path)}"
        )
    return int(pid_file.read_text())


def _wait_ready(pid: int, record: Path, timeout_s: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        data = read_json(record)
        if data and data.get("state") == "READY" and data.get("pid") == pid:
            return data
        if not _alive(pid):
            return None
        time.sleep(0.2)
    return None


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def server_healthy(record: dict[str, Any]) -> bool:
    """Alive and answering: a hung server is as useless as a dead one."""
    if not node_state.process_matches(record):
        return False
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{record['http_port']}/v2/health/ready", timeout=5
        ) as reply:
            return reply.status == 200
    except OSError:
        return False


def _driver_reachable(endpoint: str | None) -> bool:
    if not endpoint:
        return True  # nothing to judge by: leave it to the server's own watchdog
    host, _, port = endpoint.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=3):
            return True
    except OSError:
        return False


def _reap_stale(directory: Path, run_id: str) -> list[str]:
    """Stop servers of other runs whose driver is gone: they outlived a crashed or killed job."""
    reaped = []
    for path, record in node_state.iter_records(directory):
        if record.get("run_id") == run_id:
            continue
        if node_state.process_matches(record) and _driver_reachable(record.get("driver")):
            continue  # a concurrent job on a shared cluster: not ours to stop
        node_state.kill_group(record)
        path.unlink(missing_ok=True)
        reaped.append(str(record.get("run_id")))
    if reaped:
        log.warning("stopped Triton servers left behind by runs %s", reaped)
    return reaped


def _pending_launch(directory: Path, run_id: str) -> dict[str, Any] | None:
    """The run's server launched on this node but not ready yet (no record): its pid file names a
    live process of this run (its command line carries ``--run-id``, which a reused pid would not)."""
    pid_file = directory / f"{run_id}.pid"
    try:
        pid = int(pid_file.read_text())
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE or run_id not in process.cmdline():
            return None
        return {"pid": pid, "pgid": pid, "create_time": process.create_time()}
    except (OSError, ValueError, psutil.Error):
        return None


@contextlib.contextmanager
def _this_node(run_id: str) -> Iterator[tuple[Path, Path, str, dict[str, Any] | None]]:
    """Under the node lock: the state dir, the run's record path, the host, and the record as it is."""
    directory = node_state.state_dir()
    with node_state.node_lock(directory):
        record = node_state.record_path(directory, run_id)
        yield directory, record, socket.gethostname(), read_json(record)


def launch_local_server(request: ServerRequest) -> dict[str, Any]:
    """Start this node's server for the run and return at once; :func:`ensure_local_server` waits.

    The job launches its servers before it reads and validates the date, so that the servers load
    the model while Spark reads: the start stage then only waits for what is left. A node whose
    server is healthy or already launched is left as it is.
    """
    with _this_node(request.run_id) as (directory, record, host, existing):
        if existing and server_healthy(existing):
            return {"host": host, "pid": existing["pid"], "launched": False}
        pending = _pending_launch(directory, request.run_id)
        if pending and not existing:
            return {"host": host, "pid": pending["pid"], "launched": False}
        if existing:
            node_state.kill_group(existing)
            record.unlink(missing_ok=True)
        _reap_stale(directory, request.run_id)
        pid = _start_process(request, directory, record, server_devices(request, existing))
        return {"host": host, "pid": pid, "launched": True}


def ensure_local_server(request: ServerRequest) -> dict[str, Any]:
    """This node's ready server for the run: the running one, or a new one if none is healthy.

    Called by the start stage and again by every inference task, so an executor that joined late,
    a task rescheduled to another node, or a server that died or hung mid-job all get a working
    server instead of an error.
    """
    with _this_node(request.run_id) as (directory, record, host, existing):
        if existing and server_healthy(existing):
            return {**existing, "started_here": False}
        if existing:
            log.warning(
                "Triton server %s on host %s is not healthy; restarting it", existing.get("pid"), host
            )
            node_state.kill_group(existing)
            record.unlink(missing_ok=True)
        # Launched earlier by launch_local_server and still loading: wait for that one.
        pending = None if existing else _pending_launch(directory, request.run_id)
        pid = pending["pid"] if pending else None
        if pid is None:
            _reap_stale(directory, request.run_id)
        devices = server_devices(request, existing)
        tail = ""
        last_error = ""
        for _attempt in range(PORT_ATTEMPTS):
            started = time.monotonic()
            if pid is None:
                pid = _start_process(request, directory, record, devices)
            ready = _wait_ready(pid, record, request.ready_timeout_s)
            if ready is not None:
                return {**ready, "started_here": True, "start_s": round(time.monotonic() - started, 3)}
            timed_out = _alive(pid)
            node_state.kill_group({"pid": pid, "pgid": pid})
            record.unlink(missing_ok=True)
            tail = _log_tail(directory / f"{request.run_id}.log")
            last_error = (
                f"not ready after {request.ready_timeout_s:.0f}s" if timed_out else "exited before ready"
            )
            if timed_out or "address already in use" not in tail.lower():
                break
            pid = None
        raise TritonStartError(
            f"Triton server for model {request.model!r} on host {host} {last_error}; server log tail:\n{tail}"
        )


def stop_local_server(run_id: str) -> dict[str, Any]:
    """Stop this node's server for the run, if any; safe to call from every executor and again."""
    with _this_node(run_id) as (directory, record_file, host, found):
        record = found or _pending_launch(directory, run_id)
        if record is None:
            return {"host": host, "stopped": False, "running": False}
        started = time.monotonic()
        was_running = node_state.kill_group(record)
        record_file.unlink(missing_ok=True)
        still = node_state.process_matches(record)
        return {
            "host": host,
            "pid": record.get("pid"),
            "stopped": was_running,
            "running": still,
            "stop_s": round(time.monotonic() - started, 3),
        }
