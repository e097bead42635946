"""Node-local bookkeeping of Triton servers: one JSON record per server, under a per-node state dir.

Records are how every later actor finds a server without asking Spark: the inference client (which
port on this host), the stop stage, the next job on the node (stale servers) and cluster teardown
(kill by pid). A pid alone can be reused by the OS, so each record also keeps the process
create_time and process group, and every check and kill goes through :mod:`spark_jobs.processes`:
the recorded server itself, or a member of its group created after it, never a stranger.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil

from spark_jobs.file_lock import file_lock
from spark_jobs.json_files import read_json
from spark_jobs.processes import ProcessRecord, group_members, is_alive, stop_groups

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
    with file_lock(directory / ".lock"):
        yield


def server_process(record: Mapping[str, Any]) -> ProcessRecord | None:
    """The identity of a server record (``pid``, ``create_time``, ``pgid``); None if it has none.

    A bare ``{"pid", "pgid"}`` (a server stopped by its starter before it wrote its record) has no
    create time. A live pid is taken as it is now. A gone one leaves only its group, whose members
    then all count (create time 0): nothing dates them, and Linux does not reuse the number of a
    group that still has members, so moments after the starter saw the pid the group is its own.
    """
    try:
        if record.get("create_time") is not None:
            return ProcessRecord.from_dict(record)
        pid = int(record["pid"])
        pgid = int(record.get("pgid") or pid)
    except (KeyError, TypeError, ValueError):
        return None
    try:
        return replace(ProcessRecord.of(pid), pgid=pgid)
    except psutil.NoSuchProcess:
        return ProcessRecord(pid, 0.0, pgid)


def process_matches(record: Mapping[str, Any]) -> bool:
    """True while the recorded process is the one we started (same pid and same create_time)."""
    return record.get("create_time") is not None and is_alive(server_process(record))


def kill_group(record: Mapping[str, Any], grace_s: float = 15.0) -> bool:
    """SIGTERM the server's process group (server, tritonserver, stubs), SIGKILL after ``grace_s``.

    Returns True if something was running. The group is the server's own session, created at
    start, so this reaches the tritonserver child even when the server process is already gone;
    a process that only shares the group's number (created before the server) is left alone.
    """
    process = server_process(record)
    if process is None or not group_members(process):
        return False
    stop_groups([process], grace_s)
    return True


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
