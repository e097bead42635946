"""The same nightly DAG with a ``databricks`` connection, against the REST emulator.

The emulator validates every request body with databricks-sdk and executes the submitted run on
the local Spark backend, so the output checked here is real.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from deltalake import DeltaTable

from airflow_spark_triton.demo.sample_documents import sample_documents
from spark_jobs.delta_io import write_pandas_table
from tests.conftest import REPO, session_processes
from tests.databricks_emulator import DatabricksEmulator

pytestmark = pytest.mark.slow

TOKEN = "dapi0123456789abcdef0123456789abcdef"
CONN_ID = "databricks_e2e"
DAY = dt.date(2026, 11, 24)


@pytest.fixture
def emulator(tmp_path, monkeypatch):
    emu = DatabricksEmulator(TOKEN, local_spark=True, home=tmp_path / "emulator").start()
    connection = {
        **emu.connection(),
        "extra": {"artifact_root": "/Volumes/main/default/spark_triton", "poll_interval_s": 1},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(connection))
    try:
        yield emu
    finally:
        emu.stop()


def test_nightly_dag_on_databricks_creates_submits_once_and_permanently_deletes(
    airflow_db, emulator, tmp_path
):
    from airflow_spark_triton.dag_runner import run_dag

    documents = tmp_path / "documents"
    write_pandas_table(str(documents), sample_documents([DAY], 40), ["date"])
    conf = {
        "conn_id": CONN_ID,
        "input_table": str(documents),
        "output_table": str(tmp_path / "embeddings"),
        "model": "spark_jobs.models.hashing_embedder:MODEL",
        "num_workers": 2,
    }
    result = run_dag(REPO / "dags", "nightly_embeddings", DAY, conf, retries=0)

    assert result.state == "success", result.task_states
    cluster_id = result.xcoms["create_cluster"]
    (create,) = emulator.calls("POST", "2.1/clusters/create")
    conf_sent = create.body["spark_conf"]
    assert conf_sent["spark.executor.resource.gpu.amount"] == "1"
    assert conf_sent["spark.task.resource.gpu.amount"] == "1"
    assert create.body["custom_tags"]["airflow_dag_id"] == "nightly_embeddings"
    assert create.body["init_scripts"], "the init script must be attached"
    uploads = {call.path.rsplit("/", 1)[-1] for call in emulator.calls("PUT")}
    assert "batch_inference.py" in uploads and any(name.endswith(".whl") for name in uploads)
    assert any(name.endswith(".sh") for name in uploads)
    assert len(emulator.calls("POST", "2.2/jobs/runs/submit")) == 1
    deletes = emulator.calls("POST", "2.1/clusters/permanent-delete")
    assert [d.body["cluster_id"] for d in deletes] == [cluster_id]
    assert all(TOKEN not in json.dumps(call.body) for call in emulator.requests)
    assert TOKEN not in json.dumps(result.xcoms, default=str)

    report = result.xcoms["embed_documents"]
    assert (report["rows_read"], report["rows_scored"], report["rows_rejected"]) == (40, 37, 3)
    output = DeltaTable(str(tmp_path / "embeddings")).to_pandas(partitions=[("date", "=", DAY.isoformat())])
    assert len(output) == 37 and output["id"].is_unique
    assert session_processes() == []
