"""Process identity and group stops: the one place both sides decide which processes are ours.

A pid alone is not an identity: the OS reuses pids, and a teardown that kills a reused pid kills
a stranger. A process we start is therefore remembered as a :class:`ProcessRecord` (pid, process
group, create time) and every signal goes through :func:`stop_groups`, which checks that identity
first. :func:`belongs` is the one identity check: the recorded process itself (same pid and create
time), or a member of its process group created after it.

Shipped to the cluster with ``spark_jobs`` (the node-local Triton server records) and imported by
the Airflow side (``airflow_spark_triton.runs.processes``), so it needs nothing but psutil.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import psutil

# psutil derives create_time from boot time + clock ticks; two reads of one process agree far
# more closely than this, and a reused pid starts at least a clock tick (10 ms) later.
CREATE_TIME_TOLERANCE_S = 0.005


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
        """From a mapping with ``pid``, ``create_time`` and optionally ``pgid``; other keys are ignored."""
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


def belongs(proc: psutil.Process, record: ProcessRecord, create_time: float | None = None) -> bool:
    """Whether ``proc`` is the recorded process or, in its process group, a process it started.

    The recorded pid counts when its create time matches. Another member of the record's group
    counts only if it was created after the recorded leader: while a group has members Linux does
    not hand its id out as a new pid, so a member born after our leader descends from it even if
    the leader is gone, and one born before it is a stranger that happens to share the number.
    ``create_time``: ``proc``'s, when the caller already has it.
    """
    created = proc.create_time() if create_time is None else create_time
    if proc.pid == record.pid:
        return abs(created - record.create_time) < CREATE_TIME_TOLERANCE_S
    return created >= record.create_time - CREATE_TIME_TOLERANCE_S


def is_alive(record: ProcessRecord | None) -> bool:
    """True while the recorded process runs; a zombie or a reused pid counts as gone."""
    if record is None:
        return False
    try:
        proc = psutil.Process(record.pid)
        return belongs(proc, record) and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def group_members(record: ProcessRecord) -> list[psutil.Process]:
    """Live processes in the record's process group that :func:`belongs` says are its own."""
    members = []
    for proc in psutil.process_iter(["pid", "create_time", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE or os.getpgid(proc.pid) != record.group:
                continue
            if belongs(proc, record, proc.info["create_time"]):
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


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.2) -> bool:
    """Poll ``predicate`` until it is true or ``timeout_s`` passed; returns whether it became true."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)
    return True


def stop_groups(records: Sequence[ProcessRecord], grace_s: float = 15.0, kill_wait_s: float = 10.0) -> bool:
    """SIGTERM each recorded process group, SIGKILL what is left after ``grace_s`` (at once, with
    no SIGTERM, when ``grace_s`` is 0).

    All groups get SIGTERM first and share one grace period, so stopping N groups costs one
    grace period, not N. Only what :func:`belongs` to a record is ever signalled. Returns True
    when nothing of any group is left.
    """
    live = [r for r in records if group_members(r)]
    if grace_s > 0:
        for record in live:
            _signal_group(record, signal.SIGTERM)

    def all_gone() -> bool:
        return not any(group_members(r) for r in live)

    if live and (grace_s <= 0 or not wait_until(all_gone, grace_s)):
        for record in live:
            _signal_group(record, signal.SIGKILL)
        wait_until(all_gone, kill_wait_s, interval_s=0.05)  # SIGKILL takes effect within ms
    return all_gone()
