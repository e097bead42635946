"""Processes on this machine: start detached, recognise our own, stop them with escalation.

A pid alone is not an identity: the OS reuses pids, and a teardown that kills a reused pid kills
a stranger. Every process we start is therefore remembered as a :class:`ProcessRecord` (pid plus
create time) and every signal goes through :func:`stop_groups`, which checks that identity first.
Identity and group stops live in :mod:`spark_jobs.processes`, shared with the cluster side (the
Triton server records); this module adds what only the Airflow side does: starting detached
children and reaping them.

This module imports no Airflow or Spark: the run supervisor imports it in a bare interpreter.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import psutil

from spark_jobs import processes as _shared
from spark_jobs.processes import (
    CREATE_TIME_TOLERANCE_S,
    ProcessRecord,
    belongs,
    group_members,
    wait_until,
)

__all__ = [
    "CREATE_TIME_TOLERANCE_S",
    "ProcessRecord",
    "belongs",
    "forget_child",
    "group_members",
    "is_alive",
    "iter_descendants",
    "log_tail",
    "read_tail",
    "start_detached",
    "stop_groups",
    "wait_child",
    "wait_until",
]

# Popen objects of children started by this process, kept so they are neither garbage collected
# while running (ResourceWarning) nor left as zombies: is_alive and stop_groups reap them.
_CHILDREN: dict[int, subprocess.Popen] = {}


def is_alive(record: ProcessRecord | None) -> bool:
    """True while the recorded process runs; a zombie or a reused pid counts as gone."""
    alive = _shared.is_alive(record)
    if record is not None and not alive:
        # Reap it if it is our exited child, so it stops showing as a zombie. After the check, not
        # before: a child that exited between a reap and the check stayed a zombie (seen in CI).
        forget_child(record.pid)
    return alive


def start_detached(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log_path: Path,
    cwd: Path | None = None,
) -> ProcessRecord:
    """Start ``argv`` in its own session so it outlives the Airflow task that started it.

    The new session makes the process a group leader (pgid == pid): one ``killpg`` then reaches
    it and every child it forks (executors of a worker, the Python driver of spark-submit),
    and a signal sent to the Airflow task's group never reaches it.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # Owner-only (0600), like the records: a process's output may name paths, settings and errors.
    with os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log_file:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
            close_fds=True,
        )
    _CHILDREN[proc.pid] = proc
    try:
        return ProcessRecord.of(proc.pid)
    except psutil.NoSuchProcess:
        # Exited (and not yet reaped? then it would still exist) before we could look: record
        # a create time no live process can match, so nothing is ever signalled in its name.
        return ProcessRecord(proc.pid, 0.0, proc.pid)


def wait_child(pid: int, timeout_s: float) -> int | None:
    """Exit code of a child started by :func:`start_detached`, or None if still running."""
    proc = _CHILDREN.get(pid)
    if proc is None:
        raise KeyError(f"process {pid} was not started by this process")
    try:
        code = proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        return None
    _CHILDREN.pop(pid, None)
    return code


def forget_child(pid: int) -> int | None:
    """Reap a child we started, if it has exited; returns its exit code."""
    proc = _CHILDREN.get(pid)
    if proc is None or proc.poll() is None:
        return None
    _CHILDREN.pop(pid, None)
    return proc.returncode


def _reap_our_children() -> None:
    for pid in list(_CHILDREN):
        forget_child(pid)


def stop_groups(records: Sequence[ProcessRecord], grace_s: float = 15.0, kill_wait_s: float = 10.0) -> bool:
    """:func:`spark_jobs.processes.stop_groups`, then reap the children of ours it stopped."""
    try:
        return _shared.stop_groups(records, grace_s, kill_wait_s)
    finally:
        _reap_our_children()


def read_tail(path: Path, max_bytes: int = 1 << 20) -> str:
    """The last ``max_bytes`` of a log: driver logs of long runs grow to many megabytes."""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - max_bytes))
        return handle.read().decode(errors="replace")


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = read_tail(path)
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def iter_descendants(record: ProcessRecord) -> Iterator[psutil.Process]:
    if not is_alive(record):
        return
    with contextlib.suppress(psutil.NoSuchProcess):
        yield from psutil.Process(record.pid).children(recursive=True)
