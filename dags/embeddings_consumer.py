"""Downstream of ``nightly_embeddings``: runs whenever the ``document_embeddings`` asset is updated.

It is scheduled on the same stable asset the producer declares (name ``document_embeddings``); the
table and date to read come from the triggering asset event's ``extra``, which the inference
operator fills with what the run actually wrote.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, task

from airflow_spark_triton.assets import delta_table_asset

DATA_ROOT = os.environ.get("SPARK_TRITON_DATA_DIR", str(Path.home() / "spark_triton_data"))
EMBEDDINGS = delta_table_asset(f"{DATA_ROOT}/document_embeddings", name="document_embeddings")

with DAG(
    dag_id="embeddings_consumer",
    description="Count the new date's embeddings each time nightly_embeddings updates them",
    schedule=[EMBEDDINGS],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["inference", "asset-consumer"],
    default_args={"owner": "data-platform"},
    doc_md=__doc__,
) as dag:

    @task
    def count_new_embeddings(triggering_asset_events=None) -> dict[str, int]:
        from deltalake import DeltaTable

        counts: dict[str, int] = {}
        for event in (triggering_asset_events or {}).get(EMBEDDINGS, []):
            extra = event.extra or {}
            table = extra.get("table") or EMBEDDINGS.uri.removeprefix("file://")
            day = extra.get("logical_date")
            if not day:
                continue
            column = extra.get("date_column", "date")
            rows = DeltaTable(table).to_pyarrow_table(partitions=[(column, "=", day)]).num_rows
            print(f"{table} {column}={day}: {rows} embeddings (run {extra.get('run_id')})")
            counts[f"{table}@{day}"] = rows
        return counts

    count_new_embeddings()
