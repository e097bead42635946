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
import shutil
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


# Stopping a server costs nothing graceful would buy: it is stopped when its run is done with it
# (nothing in flight) or when it is being replaced (its requests are lost either way). A SIGTERM
# waits for tritonserver's exit timeout, the model unload and the Python teardown of torch:
# measured 5.3 s per stop in the bench (MiniLM), 6.7 s on a busy node. So the group is killed at
# once, and what a graceful exit would have cleaned up is removed here (:func:`server_leftovers`).
# The server's own watchdog (its executor or driver gone) still exits gracefully.
STOP_GRACE_S = 0.0
# Shared memory of a PyTriton server's group: the Python backend's regions (``pytrtion<pid>-...``,
# 4 MB per model instance) and the tensor store's blocks (``psm_...``, Python's shared_memory).
# They live in RAM until unlinked; a killed group never unlinks them.
SHM_DIR = Path("/dev/shm")
SERVER_SHM_PREFIXES = ("pytrtion", "psm_")


def kill_group(record: Mapping[str, Any], grace_s: float = STOP_GRACE_S) -> bool:
    """Stop the server's process group (server, tritonserver, stubs) and remove its leftovers.

    SIGTERM, then SIGKILL after ``grace_s`` (none by default: see :data:`STOP_GRACE_S`). Returns
    True if something was running. The group is the server's own session, created at start, so this
    reaches the tritonserver child even when the server process is already gone; a process that only
    shares the group's number (created before the server) is left alone.
    """
    process = server_process(record)
    members = group_members(process) if process is not None else []
    if not members:
        remove_leftovers(recorded_leftovers(record))  # the whole group was killed (kill -9 of it)
        return False
    leftovers = server_leftovers(members)
    if stop_groups([process], grace_s):
        remove_leftovers(leftovers | recorded_leftovers(record))
    return True


def server_leftovers(members: list[psutil.Process]) -> set[Path]:
    """What a killed server group leaves behind, read from its live members before the kill: the
    shared-memory segments they map (:data:`SERVER_SHM_PREFIXES`) and PyTriton's workspace (a copy
    of tritonserver, 22 MB, and the model store), the directory tritonserver runs from."""
    found: set[Path] = set()
    for member in members:
        with contextlib.suppress(OSError, psutil.Error):
            for line in Path(f"/proc/{member.pid}/maps").read_text().splitlines():
                mapped = line.split(maxsplit=5)[5:]  # the pathname column, when there is one
                path = Path(mapped[0]) if mapped else None
                if path and path.parent == SHM_DIR and path.name.startswith(SERVER_SHM_PREFIXES):
                    found.add(path)
            workspace = pytriton_workspace(member)
            if workspace is not None:
                found.add(workspace)
    return found


def pytriton_workspace(process: psutil.Process) -> Path | None:
    """PyTriton's workspace, if ``process`` is a tritonserver it runs: the binary runs from a copy
    at ``<workspace>/tritonserver/bin/tritonserver``, next to the workspace's ``model-store``."""
    with contextlib.suppress(psutil.Error, IndexError):
        if process.name() == "tritonserver":
            workspace = Path(process.cmdline()[0]).parents[2]
            if (workspace / "model-store").is_dir():
                return workspace
    return None


def backend_segments(server_pid: int) -> set[Path]:
    """The Python backend's shared-memory regions of the server with this pid (``pytrtion<pid>-``)."""
    return set(SHM_DIR.glob(f"pytrtion{server_pid}-*"))


def recorded_leftovers(record: Mapping[str, Any]) -> set[Path]:
    """What a server group killed as a whole leaves, from its record alone: the Python backend's
    segments, named after the server's pid (``pytrtion<pid>-``), and the workspace the server
    recorded. Only once that pid is free: a reused pid may be another server's, with its own."""
    try:
        pid = int(record["pid"])
    except (KeyError, TypeError, ValueError):
        return set()
    if psutil.pid_exists(pid):
        return set()
    found = backend_segments(pid)
    workspace = Path(str(record.get("workspace") or ""))
    if record.get("workspace") and (workspace / "model-store").is_dir():
        found.add(workspace)
    return found


def remove_leftovers(leftovers: set[Path]) -> None:
    """Unlink the segments and remove the workspace of a group that is gone (never a live one's)."""
    for path in leftovers:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


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
