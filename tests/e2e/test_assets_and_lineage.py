"""The nightly DAG's inference task updates its Delta asset, and the consumer DAG is queued for it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from airflow_spark_triton.demo.sample_documents import sample_documents
from spark_jobs.delta_io import write_pandas_table
from tests.conftest import REPO

pytestmark = pytest.mark.slow

TINY = "spark_jobs.models.hashing_embedder:MODEL"
DAY = dt.date(2026, 11, 26)
PER_DAY = 40


def test_nightly_run_emits_the_asset_event_and_queues_the_consumer(airflow_db, tmp_path):
    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
    from airflow.models.dag import DagModel
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airflow_spark_triton.dag_runner import load_dag, run_dag
    from airflow_spark_triton.links import REPORT_SUMMARY_XCOM_KEY, RUN_PAGE_XCOM_KEY

    documents, output = tmp_path / "documents", tmp_path / "embeddings"
    write_pandas_table(str(documents), sample_documents([DAY], PER_DAY), ["date"])
    consumer = load_dag(REPO / "dags", "embeddings_consumer")  # serialize both DAGs, then unpause
    with create_session() as session:
        session.get(DagModel, consumer.dag_id).is_paused = False

    conf = {"input_table": str(documents), "output_table": str(output), "model": TINY, "batch_size": 16}
    result = run_dag(REPO / "dags", "nightly_embeddings", DAY, conf, retries=0)
    assert result.state == "success", result.task_states
    report = result.xcoms["embed_documents"]

    producer = load_dag(REPO / "dags", "nightly_embeddings")
    (asset,) = producer.get_task("embed_documents").outlets
    with create_session() as session:
        model = session.scalar(select(AssetModel).where(AssetModel.name == "document_embeddings"))
        assert model is not None and model.uri == asset.uri
        events = session.scalars(
            select(AssetEvent).where(
                AssetEvent.asset_id == model.id, AssetEvent.source_run_id == result.run_id
            )
        ).all()
        assert len(events) == 1
        extra = events[0].extra
        assert extra["table"] == str(output) and extra["logical_date"] == DAY.isoformat()
        assert extra["output_version"] == report["output_version"]
        assert extra["rows_scored"] == report["rows_scored"] > 0
        queued = session.scalars(select(AssetDagRunQueue).where(AssetDagRunQueue.asset_id == model.id)).all()
        assert "embeddings_consumer" in {q.target_dag_id for q in queued}

        links = {
            row.key: XComModel.deserialize_value(row)
            for row in session.scalars(
                XComModel.get_many(
                    run_id=result.run_id, dag_ids="nightly_embeddings", task_ids="embed_documents"
                )
            )
        }
    assert links[RUN_PAGE_XCOM_KEY].startswith("file://") and links[RUN_PAGE_XCOM_KEY].endswith("driver.log")
    summary = links[REPORT_SUMMARY_XCOM_KEY]
    assert summary.endswith("report.md")
    text = Path(summary.removeprefix("file://")).read_text()
    assert f"{report['rows_read']} / {report['rows_scored']} / {report['rows_rejected']}" in text

    # The job's progress file ends in its final state, with every row to score counted.
    from airflow_spark_triton.backends.local.backend import LocalSparkBackend

    progress = LocalSparkBackend(spark_triton_conn_id=None).get_run_progress(report["run_id"])
    assert progress["phase"] == "success"
    assert progress["rows_done"] == progress["rows_total"] == report["rows_scored"]

    # The consumer's task reads the new date's output from the event's extra.
    consumed = run_dag(REPO / "dags", "embeddings_consumer", DAY)
    assert consumed.state == "success"

    # Lineage of the task as rendered for the run: input in, output and rejects out.
    task = producer.get_task("embed_documents")
    task.input_table, task.output_table = str(documents), str(output)
    lineage = task.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("file", str(documents))]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [
        ("file", str(output)),
        ("file", f"{output}_rejects"),
    ]
