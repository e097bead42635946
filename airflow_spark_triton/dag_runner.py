"""Run one DAG of a dags folder in-process with ``dag.test()``: the demo and the end-to-end tests use it.

``dag.test()`` needs the DAG serialized in the metadata DB first; doing that here (parse the folder,
sync the bundle, store the DAG) keeps both callers on the same path as a deployed scheduler.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DagRunResult:
    dag_id: str
    run_id: str
    state: str
    task_states: dict[str, str]
    xcoms: dict[str, Any]


def load_dag(dags_folder: str | Path, dag_id: str):
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=str(dags_folder))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    dag = bag.get_dag(dag_id)
    if dag is None:
        raise LookupError(f"no DAG {dag_id!r} in {dags_folder}")
    sync_bag_to_db(bag, "dags-folder", None)
    return dag


def run_dag(
    dags_folder: str | Path,
    dag_id: str,
    logical_date: dt.date,
    conf: dict[str, Any] | None = None,
    retries: int | None = None,
    task_overrides: dict[str, dict[str, Any]] | None = None,
) -> DagRunResult:
    """Run the DAG once for ``logical_date``; returns task states and each task's return value.

    ``retries`` overrides every task's retries, e.g. 0 to see a failure at once instead of after
    the DAG's retry delay (``dag.test()`` honours retry delays in real time). ``task_overrides``
    sets operator attributes that are no DAG params, per task id, e.g.
    ``{"embed_documents": {"execution_timeout": timedelta(seconds=60)}}``.
    """
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    dag = load_dag(dags_folder, dag_id)
    if retries is not None:
        for task in dag.tasks:
            task.retries = retries
    for task_id, attributes in (task_overrides or {}).items():
        task = dag.get_task(task_id)
        for name, value in attributes.items():
            if not hasattr(task, name):
                raise AttributeError(f"task {task_id!r} has no attribute {name!r} to override")
            setattr(task, name, value)
    when = dt.datetime(logical_date.year, logical_date.month, logical_date.day, tzinfo=dt.UTC)
    dag_run = dag.test(logical_date=when, run_conf=conf)
    with create_session() as session:
        tis = dag_run.get_task_instances(session=session)
        task_states = {ti.task_id: str(ti.state) for ti in tis}
        rows = session.scalars(XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_id, key="return_value"))
        xcoms = {row.task_id: XComModel.deserialize_value(row) for row in rows}
    return DagRunResult(dag_id, dag_run.run_id, str(dag_run.state), task_states, xcoms)
