"""A local cluster's record: where it lives, its states and the moves between them. Airflow-free, so
the reaper can read and claim it.

Every change of ``state`` goes through :data:`TRANSITIONS` (see :mod:`airflow_spark_triton.runs.records`):
a cluster becomes RUNNING only from PENDING, and nothing leaves DELETING except DELETED, so a late
``wait_for_cluster`` can never bring a cluster that a teardown or the reaper took back to RUNNING.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from airflow_spark_triton.runs.records import JsonRecord

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
