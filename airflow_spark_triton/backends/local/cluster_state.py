"""A local cluster's record: where it lives, its states and the moves between them, its owners and
timings. Airflow-free, so the reaper can read and claim it.

Every change of ``state`` goes through :data:`TRANSITIONS` (see :mod:`airflow_spark_triton.runs.records`):
a cluster becomes RUNNING only from PENDING, and nothing leaves DELETING except DELETED, so a late
``wait_for_cluster`` can never bring a cluster that a teardown or the reaper took back to RUNNING.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

import psutil

from airflow_spark_triton.runs import processes as procs
from airflow_spark_triton.runs.processes import ProcessRecord
from airflow_spark_triton.runs.records import JsonRecord
from airflow_spark_triton.runs.supervised import process_record

CLUSTER_FILE = "cluster.json"  # in the cluster's directory, written under LOCK_FILE
LOCK_FILE = ".lock"


class ClusterState(StrEnum):
    """States of a local cluster's record. DELETING blocks new runs while teardown is under way."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DELETING = "DELETING"
    TERMINATED = "TERMINATED"  # failed to come up or became unusable; processes may remain until delete
    DELETED = "DELETED"


LIVE_STATES = (ClusterState.PENDING, ClusterState.RUNNING)

TRANSITIONS = {
    None: {ClusterState.PENDING},  # create
    ClusterState.PENDING: {ClusterState.RUNNING, ClusterState.TERMINATED, ClusterState.DELETING},
    ClusterState.RUNNING: {ClusterState.TERMINATED, ClusterState.DELETING},
    ClusterState.TERMINATED: {ClusterState.DELETING},
    ClusterState.DELETING: {ClusterState.DELETED},  # and DELETING again: a deleter taking over
    ClusterState.DELETED: set(),
}


def cluster_record(cluster_dir: Path) -> JsonRecord:
    """``cluster.json`` of the cluster in ``cluster_dir``, under the lock the backend and reaper share."""
    return JsonRecord(cluster_dir / CLUSTER_FILE, cluster_dir / LOCK_FILE, TRANSITIONS)


def record_timing(record: JsonRecord, name: str, started: float) -> None:
    """Add ``timings_s[name]``: seconds since ``started`` (a ``time.monotonic()``)."""

    def decide(cluster: dict[str, Any]) -> dict[str, Any]:
        return {"timings_s": {**cluster.get("timings_s", {}), name: round(time.monotonic() - started, 3)}}

    record.update_if(decide)


_TASK_RUNNER = "airflow.sdk.execution_time.task_runner"


def owner_records() -> list[ProcessRecord]:
    """The calling process and, inside an Airflow task process, its supervisor (the parent): the
    owners a PENDING cluster records, which its reaper watches (see backends.local.reaper)."""
    owners = [ProcessRecord.of(os.getpid())]
    runner = sys.modules.get(_TASK_RUNNER)
    if getattr(runner, "SUPERVISOR_COMMS", None) is not None and os.getppid() > 1:
        with contextlib.suppress(psutil.Error):
            owners.append(ProcessRecord.of(os.getppid()))
    return owners


def gone_owners(
    cluster: dict[str, Any], alive: Callable[[ProcessRecord], bool] = procs.is_alive
) -> list[int]:
    """Pids of the recorded owners that no longer run."""
    owners = [process_record(o) for o in cluster.get("owners") or []]
    return [o.pid for o in owners if o is not None and not alive(o)]
