"""``airflow dags list-import-errors`` on the real CLI, with this session's Airflow home and dags folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO


def json_output(stdout: str):
    """The CLI's JSON document: its last line starting with '[' (warnings may be printed before it)."""
    return json.loads([line for line in stdout.splitlines() if line.startswith("[")][-1])


def airflow_json(*args: str):
    """Run the ``airflow`` CLI on the project's dags folder and parse its JSON output."""
    env = {**os.environ, "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags")}
    result = subprocess.run(
        [sys.executable, "-m", "airflow", *args, "-o", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json_output(result.stdout)


def test_airflow_dags_list_import_errors_is_empty(airflow_db):
    assert airflow_json("dags", "list-import-errors", "--local") == []
    dag_ids = {d["dag_id"] for d in airflow_json("dags", "list", "--local")}
    assert {"nightly_embeddings", "nightly_digits", "embeddings_consumer"} <= dag_ids


def test_new_dags_are_wired_as_documented(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    digits = bag.get_dag("nightly_digits")
    assert digits.get_task("classify_digits.create_cluster").is_setup
    assert digits.get_task("classify_digits.delete_cluster").is_teardown
    infer = digits.get_task("classify_digits.infer")
    assert infer.model == "spark_jobs.models.digits_classifier:MODEL"
    assert [a.name for a in infer.outlets] == ["digit_predictions"]

    producer = bag.get_dag("nightly_embeddings").get_task("embed_documents")
    (asset,) = producer.outlets
    assert asset.name == "document_embeddings" and asset.uri.startswith("file:///")
    consumer = bag.get_dag("embeddings_consumer")
    assert asset in list(consumer.timetable.asset_condition.objects)
