"""The nightly DAG for real on the local backend: Airflow, Spark standalone, PyTriton and Delta.

Small data and the tiny hashing model keep it to a couple of minutes; the demo runs the same DAG
with all-MiniLM-L6-v2.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

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


def test_nightly_dag_scores_the_date_and_deletes_the_cluster(airflow_db, tables):
    result = run_nightly(tables)

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
