"""A local cluster's record: where it lives and its states. Airflow-free, so the reaper can read it."""

from __future__ import annotations

from enum import StrEnum

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
