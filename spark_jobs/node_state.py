"""Node-local bookkeeping of Triton servers: one JSON record per server, under a per-node state dir.

Records are how every later actor finds a server without asking Spark: the inference client (which
port on this host), the stop stage, the next job on the node (stale servers) and cluster teardown
(kill by pid). A pid alone can be reused by the OS, so each record also keeps the process
create_time and a kill only happens when both match.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from spark_jobs.json_files import read_json

STATE_DIR_ENV = "SPARK_TRITON_STATE_DIR"


def state_dir() -> Path:
    """Where this node keeps its server records: set per cluster by the backend, else a local default."""
    configured = os.environ.get(STATE_DIR_ENV)
    if configured:
        path = Path(configured)
    elif Path("/local_disk0").is_dir():  # Databricks' node-local disk
        path = Path("/local_disk0/spark_triton")
    else:
        path = Path(tempfile.gettempdir()) / "spark_triton"
    path.mkdir(parents=True, exist_ok=True)
    return path


def record_path(directory: Path, run_id: str) -> Path:
    return directory / f"{run_id}.json"


def iter_records(directory: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(directory.glob("*.json")):
        record = read_json(path)
        if record is not None:
            yield path, record


@contextlib.contextmanager
def node_lock(directory: Path) -> Iterator[None]:
    """Serialises server start/stop among the executors that share one node."""
    with open(directory / ".lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def process_matches(record: dict[str, Any]) -> bool:
    """True while the recorded process is the one we started (same pid and same create_time)."""
    try:
        proc = psutil.Process(int(record["pid"]))
        return abs(proc.create_time() - float(record["create_time"])) < 0.01 and proc.status() != "zombie"
    except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, ValueError):
        return False


def kill_group(record: dict[str, Any], grace_s: float = 15.0) -> bool:
    """SIGTERM the server's process group (server, tritonserver, stubs), SIGKILL after ``grace_s``.

    Returns True if something was running. The group is the server's own session, created at
    start, so this reaches the tritonserver child even when the server process is already gone.
    """
    pgid = int(record.get("pgid") or record["pid"])
    members = _group_members(pgid)
    if process_matches(record):
        members.add(int(record["pid"]))
    if not members:
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _group_members(pgid):
        time.sleep(0.2)
    if _group_members(pgid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        _wait_gone(pgid, 10.0)
    return True


def _group_members(pgid: int) -> set[int]:
    members = set()
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
            if os.getpgid(proc.info["pid"]) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.add(proc.info["pid"])
    return members


def _wait_gone(pgid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _group_members(pgid):
        time.sleep(0.1)


def free_port() -> int:
    """A port free right now on 127.0.0.1; callers retry if someone takes it before they bind."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def executor_jvm_pid() -> int | None:
    """The executor JVM above this Python worker: when it exits, the job on this node is over."""
    with contextlib.suppress(psutil.Error):
        for parent in psutil.Process().parents():
            if parent.name() == "java" or "java" in Path(parent.exe()).name:
                return parent.pid
    return None
