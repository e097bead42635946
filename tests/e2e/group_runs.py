"""Run a DAG built with ``gpu_batch_inference`` once with ``dag.test()``, for the end-to-end tests."""

from __future__ import annotations

import datetime as dt
from typing import Any

from tests.conftest import REPO, session_processes


def run_group_dag(dag_id: str, group: str, day: dt.date, conf: dict[str, Any]) -> dict[str, Any]:
    """Run ``dag_id`` of ``dags/`` for ``day`` without retries; check that the group's three tasks ran,
    the run succeeded and left no process; return the inference task's report."""
    from airflow_spark_triton.dag_runner import run_dag

    result = run_dag(REPO / "dags", dag_id, day, conf, retries=0)
    assert result.state == "success", result.task_states
    assert set(result.task_states) == {
        f"{group}.{task}" for task in ("create_cluster", "infer", "delete_cluster")
    }
    assert session_processes() == []
    return result.xcoms[f"{group}.infer"]
