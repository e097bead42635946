"""Process helpers for the local backend: start detached, recognise our own processes, stop them.

A pid alone is not an identity: the OS reuses pids, and a teardown that kills a reused pid kills
a stranger. Every process we start is therefore remembered as a :class:`ProcessRecord` (pid plus
create time) and every signal goes through :func:`stop_groups`, which checks that identity first.

This module imports no Airflow or Spark: the run supervisor imports it in a bare interpreter.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

# psutil derives create_time from boot time + clock ticks; two reads of one process agree far
# more closely than this, and a reused pid starts at least a clock tick (10 ms) later.
CREATE_TIME_TOLERANCE_S = 0.005

# Popen objects of children started by this process, kept so they are neither garbage collected
# while running (ResourceWarning) nor left as zombies: stop_groups reaps them through psutil.
_CHILDREN: dict[int, subprocess.Popen] = {}


@dataclass(frozen=True)
class ProcessRecord:
    """Who a process is, not just where: pid, its process group, and its create time."""

    pid: int
    create_time: float
    pgid: int | None = None

    @property
    def group(self) -> int:
        return self.pgid if self.pgid is not None else self.pid

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProcessRecord:
        pgid = data.get("pgid")
        return cls(int(data["pid"]), float(data["create_time"]), int(pgid) if pgid is not None else None)

    @classmethod
    def of(cls, pid: int) -> ProcessRecord:
        """Snapshot a live process; raises psutil.NoSuchProcess if it is already gone."""
        proc = psutil.Process(pid)
        try:
            pgid: int | None = os.getpgid(pid)
        except ProcessLookupError:
            pgid = None
        return cls(pid, proc.create_time(), pgid)


def _same_process(proc: psutil.Process, record: ProcessRecord) -> bool:
    return abs(proc.create_time() - record.create_time) < CREATE_TIME_TOLERANCE_S


def is_alive(record: ProcessRecord | None) -> bool:
    """True while the recorded process runs; a zombie or a reused pid counts as gone."""
    if record is None:
        return False
    forget_child(record.pid)  # reap it if it is our exited child, so it stops showing as a zombie
    try:
        proc = psutil.Process(record.pid)
        return _same_process(proc, record) and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


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
    with open(log_path, "ab") as log_file:
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


def group_members(record: ProcessRecord) -> list[psutil.Process]:
    """Live processes in the record's process group that belong to it.

    The leader counts when pid and create time match. Other members count only if they were
    created after the leader: while a group has members Linux does not hand its id out as a
    new pid, so a member born after our leader descends from it even if the leader is gone.
    """
    members = []
    for proc in psutil.process_iter(["pid", "create_time", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE or os.getpgid(proc.pid) != record.group:
                continue
            if proc.pid == record.pid:
                if _same_process(proc, record):
                    members.append(proc)
            elif proc.info["create_time"] >= record.create_time - CREATE_TIME_TOLERANCE_S:
                members.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
            continue
    return members


def _signal_group(record: ProcessRecord, sig: signal.Signals) -> None:
    """Signal the group only if the leader is ours, else signal the verified members one by one."""
    if is_alive(record) and record.group == record.pid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(record.group, sig)
        return
    for proc in group_members(record):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            proc.send_signal(sig)


def _reap_our_children() -> None:
    for pid in list(_CHILDREN):
        forget_child(pid)


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.2) -> bool:
    """Poll ``predicate`` until it is true or ``timeout_s`` passed; returns whether it became true."""
    retrying = Retrying(
        stop=stop_after_delay(timeout_s),
        wait=wait_fixed(interval_s),
        retry=retry_if_result(lambda ok: not ok),
        retry_error_callback=lambda _state: False,
    )
    return bool(retrying(predicate))


def stop_groups(records: Sequence[ProcessRecord], grace_s: float = 15.0, kill_wait_s: float = 10.0) -> bool:
    """SIGTERM each recorded process group, SIGKILL what is left after ``grace_s``.

    All groups get SIGTERM first and share one grace period, so stopping N workers costs one
    grace period, not N. Returns True when nothing of any group is left.
    """
    live = [r for r in records if group_members(r)]
    for record in live:
        _signal_group(record, signal.SIGTERM)

    def all_gone() -> bool:
        _reap_our_children()
        return not any(group_members(r) for r in live)

    if live and not wait_until(all_gone, grace_s):
        for record in live:
            _signal_group(record, signal.SIGKILL)
        wait_until(all_gone, kill_wait_s)
    return all_gone()


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


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialise read-modify-write of state files among hook instances in different processes.

    flock locks belong to the open file, so this is not reentrant, even within one process.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def iter_descendants(record: ProcessRecord) -> Iterator[psutil.Process]:
    if not is_alive(record):
        return
    with contextlib.suppress(psutil.NoSuchProcess):
        yield from psutil.Process(record.pid).children(recursive=True)
