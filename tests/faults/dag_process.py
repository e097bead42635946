"""Run one DAG with ``dag.test()`` in a process of its own, so a test can signal it like a worker.

``dag.test()`` runs each task through the Task SDK's runner in this process, and that runner installs
the SIGTERM handler that calls the task's ``on_kill``: a SIGTERM to this process is what an Airflow
worker's task process gets when the task is killed.

Usage: ``python -m tests.faults.dag_process SPEC.json RESULT.json``; SPEC holds ``dags_folder``,
``dag_id``, ``date``, ``conf``, ``retries`` and optional ``task_overrides`` (numbers of seconds for
``*_timeout``/``*_s`` attributes are passed as they are). The environment is the caller's.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path


def main(spec_path: str, result_path: str) -> int:
    from airflow_spark_triton.dag_runner import run_dag

    spec = json.loads(Path(spec_path).read_text())
    result = run_dag(
        spec["dags_folder"],
        spec["dag_id"],
        dt.date.fromisoformat(spec["date"]),
        spec.get("conf"),
        retries=spec.get("retries"),
        task_overrides=spec.get("task_overrides"),
    )
    out = {
        "run_id": result.run_id,
        "state": result.state,
        "task_states": result.task_states,
        "xcoms": result.xcoms,
    }
    Path(result_path).write_text(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
