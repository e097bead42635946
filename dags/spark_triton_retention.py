"""Daily retention of what finished inference runs left behind (``[spark_triton] retention_days``).

Removes, for each connection below, the state directories (records, logs, reports) of deleted local
clusters and detached spark-submit attachments, and on Databricks the reports, job cluster
definitions and code versions under ``artifact_root``, once nothing of them changed for
``retention_days`` (default 30); never anything of a live cluster or an unfinished run. What it
removes and why is in the task log. The connections are set here, in code: a trigger's conf
cannot point it at another connection.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_spark_triton.operators.retention import RemoveExpiredOperator

CONN_IDS = ["spark_triton_default"]  # the backends the nightly DAGs use

with DAG(
    dag_id="spark_triton_retention",
    description="Remove expired cluster state, logs, reports and uploaded artifacts",
    schedule="0 3 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["maintenance"],
    default_args={"owner": "data-platform", "retries": 1},
    doc_md=__doc__,
) as dag:
    RemoveExpiredOperator(task_id="remove_expired", conn_ids=CONN_IDS)
