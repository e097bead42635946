"""One node's PyTriton server, run as its own process in its own session.

It is started detached from the Spark task that asked for it (so the task can finish while the
server keeps serving), and it watches what it depends on: if the executor JVM that started it or
the job's driver goes away, it stops itself. That is the safety net for a driver killed before its
``finally`` could stop the servers.

Usage: ``python -m spark_jobs.triton_server --model MOD:ATTR --record PATH ...``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil

from spark_jobs import node_state
from spark_jobs.json_files import write_json_atomic
from spark_jobs.models.base import InferFn, ServedModel
from spark_jobs.models.references import resolve_model
from spark_jobs.models.wire import encode_outputs, triton_outputs
from spark_jobs.processes import ProcessRecord, group_members

log = logging.getLogger("spark_jobs.triton_server")
# How long tritonserver waits on SIGTERM for open HTTP/gRPC connections and in-flight requests
# before it unloads the model. A server is stopped when its job is done (nothing in flight) or when
# it is being replaced (its requests are lost either way), but the Python workers' clients keep
# their keep-alive connections open, so the default 5 s was always waited out in full: measured
# 7.2 s per stop at 5, most of the job's ``servers_stop``.
EXIT_TIMEOUT_S = 1

# PyTriton runs each model instance as a Triton Python-backend stub. Triton initialises a model's
# instances in parallel; instance 0 starts the model's data channel (a process of its own) and then
# a handshake server on a Unix socket, and every other instance asks it for the channel's config
# (``pytriton.proxy.communication.get_config_from_handshake_server``). That call waits at most 1 s for
# the socket file and gives up at once if the server is not listening yet (the file exists between
# its bind and its listen). On a busy node either happens and the model fails to load; both were
# seen in CI with two CPU instances per server and three test processes on 2 cores: "Timeout
# occurred while waiting for config file ...-config.sock", then "ConnectionRefusedError". Multi-GPU
# nodes (one instance per GPU) race the same way. The stubs run the proxy files PyTriton sends with
# the load request, so ``communication.py`` goes with a patient version of that call appended.
HANDSHAKE_WAIT_S = 60
_HANDSHAKE_CALL = b"def get_config_from_handshake_server("
_PATIENT_HANDSHAKE = f"""

# Appended by airflow-spark-triton (spark_jobs/triton_server.py): wait up to {HANDSHAKE_WAIT_S} s for
# instance 0's handshake server, through a missing socket file and a refused connection.
_pytriton_get_config_from_handshake_server = get_config_from_handshake_server


def get_config_from_handshake_server(socket_path, timeout_s=1.0):
    deadline = time.time() + max(timeout_s, {HANDSHAKE_WAIT_S})
    while True:
        try:
            return _pytriton_get_config_from_handshake_server(socket_path, max(deadline - time.time(), 0.01))
        except (TimeoutError, ConnectionRefusedError, FileNotFoundError):
            if time.time() >= deadline:
                raise
            time.sleep(0.05)
""".encode()


def patient_handshake(files: dict[str, bytes]) -> dict[str, bytes]:
    """PyTriton's proxy files with :data:`_PATIENT_HANDSHAKE` appended to ``communication.py``.

    Raises ``RuntimeError`` when the installed PyTriton's ``communication.py`` does not define the
    call exactly once, so an upgrade that changes it is noticed by the test of this function; a
    server then logs it and loads the files as they are."""
    (name,) = [n for n in files if n.endswith("/communication.py")]
    if files[name].count(_HANDSHAKE_CALL) != 1:
        raise RuntimeError(f"PyTriton's {name} does not define {_HANDSHAKE_CALL.decode()!r} exactly once")
    return {**files, name: files[name] + _PATIENT_HANDSHAKE}


def _send_patient_proxy_files() -> None:
    """Make every model this process binds load with ``patient_handshake``'s proxy files."""
    from pytriton.models.model import Model

    original = Model.get_proxy_model_files
    if getattr(original, "patient_handshake", False):
        return

    def get_proxy_model_files(self: Model) -> dict[str, bytes]:
        files = original(self)
        try:
            return patient_handshake(files)
        except (RuntimeError, ValueError) as exc:  # a PyTriton we do not know: serve, with its race
            log.warning("instances keep PyTriton's own handshake wait: %s", exc)
            return files

    get_proxy_model_files.patient_handshake = True  # type: ignore[attr-defined]
    Model.get_proxy_model_files = get_proxy_model_files  # type: ignore[method-assign]


def _pytriton_tensors(model: ServedModel):
    from pytriton.model_config import Tensor

    inputs = [Tensor(name=t.name, dtype=t.numpy_dtype.type, shape=t.shape) for t in model.inputs]
    outputs = [Tensor(name=t.name, dtype=t.numpy_dtype.type, shape=t.shape) for t in triton_outputs(model)]
    return inputs, outputs


def _encoded(model: ServedModel, infer: InferFn) -> InferFn:
    """The loader's infer function, answering in Triton's terms (:func:`spark_jobs.models.wire.encode_outputs`)."""

    def encoded(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        rows = len(next(iter(inputs.values())))
        return encode_outputs(model, infer(**inputs), rows)

    return encoded


def serve(args: argparse.Namespace) -> int:
    log.info("server process for run %s up; importing PyTriton and loading %s", args.run_id, args.model)
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig
    from pytriton.triton import Triton, TritonConfig

    _send_patient_proxy_files()
    model = resolve_model(args.model)
    devices = instance_devices(args.devices)
    options = json.loads(args.model_options)
    inputs, outputs = _pytriton_tensors(model)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        exit_timeout_secs=EXIT_TIMEOUT_S,
    )
    started = time.monotonic()
    # Entering starts tritonserver in its own process; the model loads here meanwhile (torch's
    # import and the weights), so the server's boot costs the start nothing.
    with _no_stragglers(), Triton(config=config) as triton:
        if devices:  # a multi-GPU node: one model copy per device, each loaded there by its instance
            copies = [model.load(options, device=d, instance=i) for i, d in enumerate(devices)]
        else:  # one copy on the model's own default device: the single-GPU and CPU behaviour
            copies = [model.load(options)]
        log.info("model loaded in %.1f s (tritonserver booting meanwhile)", time.monotonic() - started)
        triton.bind(
            model_name=model.name,
            # n instances per copy = n threads of this process sharing that copy (no extra copy)
            infer_func=[batch(_encoded(model, fn)) for fn in copies for _ in range(args.instances)],
            inputs=inputs,
            outputs=outputs,
            config=ModelConfig(
                max_batch_size=model.max_batch_size,
                batcher=DynamicBatcher(
                    max_queue_delay_microseconds=args.max_queue_delay_us,
                    preferred_batch_size=[int(s) for s in args.preferred_batch_sizes.split(",") if s] or None,
                ),
            ),
            strict=False,
        )
        triton.run()
        me = psutil.Process()
        write_json_atomic(
            Path(args.record),
            {
                "run_id": args.run_id,
                "host": socket.gethostname(),
                "model": args.model,
                "model_name": model.name,
                "pid": me.pid,
                "pgid": os.getpgid(0),
                "create_time": me.create_time(),
                "http_port": args.http_port,
                "grpc_port": args.grpc_port,
                "metrics_port": args.metrics_port,
                "driver": args.driver,
                "devices": devices,
                "model_copies": len(copies),
                "instances_per_copy": args.instances,
                "ready_s": round(time.monotonic() - started, 3),
                "workspace": next(
                    (str(w) for c in me.children() if (w := node_state.pytriton_workspace(c))), None
                ),
                "state": "READY",
            },
        )
        log.info("Triton ready for %s on ports http=%s grpc=%s", model.name, args.http_port, args.grpc_port)
        reason = _wait_until_unneeded(stop, args)
        log.info("stopping Triton: %s", reason)
    return 0


@contextlib.contextmanager
def _no_stragglers() -> Iterator[None]:
    """After Triton's own stop, kill what of this server's session is still running, and remove
    what that leaves behind (:func:`spark_jobs.node_state.server_leftovers`).

    tritonserver can exit before a Python-backend stub it started, which then lives on alone (seen
    with two model instances: a stub outlived its server by 10 minutes, and the watchdog test found
    one left). Only in the session this server leads: one started in a test's or a task's group
    must not signal that group. Last, the backend's shared-memory regions named after this server.
    """
    try:
        yield
    finally:
        me = ProcessRecord.of(os.getpid())
        if os.getpgid(0) == me.pid:
            members = [p for p in group_members(me) if p.pid != me.pid]
            if members:
                log.warning("killing %s: still running after Triton stopped", [p.pid for p in members])
                leftovers = node_state.server_leftovers(members)
                for member in members:
                    with contextlib.suppress(psutil.Error):
                        member.kill()
                psutil.wait_procs(members, timeout=10)
                node_state.remove_leftovers(leftovers)
        # Triton is stopped: no region named after this server is in use. tritonserver unlinks a
        # stub's region when it stops that stub; one that crashed on exit (seen in CI: SIGSEGV after
        # its exit timeout) leaves the regions of the stubs that had exited already.
        node_state.remove_leftovers(node_state.backend_segments(me.pid))


def instance_devices(text: str | None) -> list[str]:
    """``--devices cuda:0,cuda:1`` -> one model copy per entry; ``cpu,cpu`` gives two CPU copies."""
    devices = [d.strip() for d in (text or "").split(",") if d.strip()]
    if text is not None and not devices:
        raise ValueError(f"--devices must list torch devices such as 'cuda:0,cuda:1', got {text!r}")
    return devices


def _wait_until_unneeded(stop: threading.Event, args: argparse.Namespace) -> str:
    """Block until asked to stop, or until the executor JVM or the driver that needs us is gone."""
    driver_failures = 0
    while not stop.wait(args.watch_interval_s):
        if args.watch_pid and not psutil.pid_exists(args.watch_pid):
            return f"executor process {args.watch_pid} is gone"
        if args.driver:
            host, _, port = args.driver.rpartition(":")
            try:
                with socket.create_connection((host, int(port)), timeout=5):
                    driver_failures = 0
            except OSError:
                driver_failures += 1
                if driver_failures >= 3:
                    return f"driver {args.driver} unreachable"
    return "stop requested"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--model-options", default="{}")
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--record", required=True, help="JSON file written once the server is ready")
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--max-queue-delay-us", type=int, default=2000)
    parser.add_argument("--preferred-batch-sizes", default="", help="comma-separated, e.g. 64,128")
    parser.add_argument("--instances", type=int, default=1, help="model instances (threads, one model)")
    parser.add_argument(
        "--devices",
        default=None,
        help="comma-separated torch devices, one model copy each (its --instances threads serve it); "
        "default: one copy on the model's own device choice",
    )
    parser.add_argument("--watch-pid", type=int, default=None)
    parser.add_argument("--driver", default=None, help="host:port of the Spark driver to watch")
    parser.add_argument("--watch-interval-s", type=float, default=2.0)
    parser.add_argument("--pid-file", default=None, help="daemonize, writing the server's pid here")
    return parser.parse_args(argv)


def detach(pid_file: Path) -> None:
    """Double fork: the server is re-parented away from the Spark Python worker that launched it.

    Otherwise a stopped server stays a zombie under a reused Python worker for the executor's
    lifetime. The server leads its own session, so one ``killpg`` reaches it, tritonserver and
    the Python-backend stubs; its pid goes to ``pid_file`` so the launcher can watch it start.
    """
    if os.fork() > 0:
        os._exit(0)
    if os.fork() > 0:
        os._exit(0)
    os.setsid()  # pgid == pid: the stopper's killpg(pid) reaches the whole server tree
    tmp = pid_file.with_suffix(".tmp")
    tmp.write_text(str(os.getpid()))
    os.replace(tmp, pid_file)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.pid_file:
        detach(Path(args.pid_file))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    np.set_printoptions(threshold=10)
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
