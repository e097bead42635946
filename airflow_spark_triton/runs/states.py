"""The states of a run, shared by the Airflow-free supervisor (``status.json``) and the backend contract.

One enum for both sides, in a module with no third-party import, so
:mod:`airflow_spark_triton.backends.base` can re-export it without pulling in the supervisor.
"""

from __future__ import annotations

from enum import StrEnum


class RunLifecycle(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({RunLifecycle.SUCCESS, RunLifecycle.FAILED, RunLifecycle.CANCELED})
UNFINISHED_STATES = (RunLifecycle.PENDING, RunLifecycle.RUNNING)
# What status.json may become from each state: a finished run never changes again.
RUN_TRANSITIONS = {
    None: {RunLifecycle.PENDING},
    RunLifecycle.PENDING: {RunLifecycle.RUNNING, RunLifecycle.FAILED, RunLifecycle.CANCELED},
    RunLifecycle.RUNNING: set(TERMINAL_STATES),
}
