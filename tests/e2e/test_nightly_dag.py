"""The nightly DAG for real on the local backend: Airflow, Spark standalone, PyTriton and Delta.

One run of the DAG (a module fixture) and what it must leave: the date scored, the cluster deleted,
the asset event with the consumer DAG queued, the run's links and lineage. Small data and the tiny
hashing model keep it to a couple of minutes; the demo runs the same DAG with all-MiniLM-L6-v2.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from deltalake import DeltaTable

from airflow_spark_triton.demo.sample_documents import sample_documents
from spark_jobs.delta_io import write_pandas_table
from spark_jobs.models.hashing_embedder import embed
from tests.conftest import REPO, session_processes

pytestmark = pytest.mark.slow

TINY = "spark_jobs.models.hashing_embedder:MODEL"
DAY = dt.date(2026, 11, 24)
PER_DAY = 60
BROKEN = 3


def date_rows(table: Path, day: dt.date = DAY):
    return DeltaTable(str(table)).to_pandas(partitions=[("date", "=", day.isoformat())])


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("nightly")
    documents = root / "documents"
    write_pandas_table(str(documents), sample_documents([DAY - dt.timedelta(days=1), DAY], PER_DAY), ["date"])
    return {"input": documents, "output": root / "embeddings", "rejects": root / "embeddings_rejects"}


def run_nightly(tables: dict[str, Path], retries: int | None = None, **params):
    from airflow_spark_triton.dag_runner import run_dag

    conf = {
        "input_table": str(tables["input"]),
        "output_table": str(tables["output"]),
        "model": TINY,
        "num_workers": 2,
        "batch_size": 16,
        **params,
    }
    return run_dag(REPO / "dags", "nightly_embeddings", DAY, conf, retries=retries)


def assert_cluster_gone(cluster_id: str) -> None:
    from airflow_spark_triton.backends.local.backend import LocalSparkBackend

    hook = LocalSparkBackend(spark_triton_conn_id=None)
    state = json.loads((hook.cluster_dir(cluster_id) / "cluster.json").read_text())["state"]
    assert state == "DELETED"
    assert session_processes() == []


@dataclass(frozen=True)
class NightlyRun:
    tables: dict[str, Path]
    result: Any  # airflow_spark_triton.dag_runner.DagRunResult


@pytest.fixture(scope="module")
def nightly(airflow_db, tables) -> NightlyRun:
    """The nightly DAG run once, with its asset's consumer DAG unpaused (so the event queues it)."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    from airflow_spark_triton.dag_runner import load_dag

    consumer = load_dag(REPO / "dags", "embeddings_consumer")  # serialized, so it can be unpaused
    with create_session() as session:
        session.get(DagModel, consumer.dag_id).is_paused = False
    return NightlyRun(tables, run_nightly(tables))


def test_nightly_dag_scores_the_date_and_deletes_the_cluster(nightly):
    tables, result = nightly.tables, nightly.result

    assert result.state == "success", result.task_states
    assert set(result.task_states.values()) == {"success"}
    report = result.xcoms["embed_documents"]
    assert report["rows_read"] == PER_DAY
    assert (report["rows_scored"], report["rows_rejected"]) == (PER_DAY - BROKEN, BROKEN)
    assert report["delta_engine"] == "delta-rs"
    assert len(report["servers"]) == 1 and report["servers_stopped"][0]["running"] is False

    documents = date_rows(tables["input"])
    output = date_rows(tables["output"]).merge(documents[["id", "text"]], on="id")
    assert len(output) == PER_DAY - BROKEN and output["id"].is_unique
    np.testing.assert_allclose(
        np.stack(output["embedding"].to_numpy()), embed(output["text"].tolist()), rtol=1e-5, atol=1e-6
    )
    rejects = date_rows(tables["rejects"])
    assert sorted(rejects["reason"]) == ["text is empty", "text is null", "text is whitespace only"]
    assert_cluster_gone(result.xcoms["create_cluster"])
    # Failures, kills, reruns and backfills of this DAG: tests/faults (make faults).


def test_the_run_emits_the_asset_event_and_queues_the_consumer(nightly):
    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airflow_spark_triton.backends.local.backend import LocalSparkBackend
    from airflow_spark_triton.dag_runner import load_dag, run_dag
    from airflow_spark_triton.links import REPORT_SUMMARY_XCOM_KEY, RUN_PAGE_XCOM_KEY, RUN_XCOM_KEY
    from airflow_spark_triton.ui.urls import ti_query
    from spark_jobs.contract import summary_path

    tables, result = nightly.tables, nightly.result
    documents, output = tables["input"], tables["output"]
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
    # The links are the run pages in the Airflow UI (same-origin paths: the UI drops file:// links).
    query = ti_query("nightly_embeddings", result.run_id, "embed_documents")
    assert links[RUN_PAGE_XCOM_KEY] == f"/spark-triton/run?{query}"
    assert links[REPORT_SUMMARY_XCOM_KEY] == f"/spark-triton/run/report?{query}"
    assert links[RUN_XCOM_KEY] == {"run_id": report["run_id"], "conn_id": "spark_triton_default"}
    backend = LocalSparkBackend(spark_triton_conn_id=None)
    text = summary_path(backend.report_path(report["run_id"])).read_text()
    assert f"{report['rows_read']} / {report['rows_scored']} / {report['rows_rejected']}" in text

    # The job's progress file ends in its final state, with every row to score counted.
    progress = backend.get_run_progress(report["run_id"])
    assert progress["phase"] == "success"
    assert progress["rows_done"] == progress["rows_total"] == report["rows_scored"]
    assert progress["history"][-1][1] == report["rows_scored"]

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
