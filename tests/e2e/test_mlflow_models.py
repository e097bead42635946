"""An MLflow registry model served by the nightly pipeline on the local backend, pinned per DAG run.

A real MLflow 3 tracking store and registry (``sqlite:///`` in a temporary directory, the standard
``MLFLOW_TRACKING_URI``) holds two versions of a small pyfunc model with a signature whose code is
logged with it (``code_paths``: importable only from the model's files); alias ``champion`` names
version 1. A test DAG built with the ``gpu_batch_inference`` factory serves
``models:/nightly_scorer@champion`` through the real local backend (a Spark standalone cluster,
PyTriton, Delta through delta-rs), run with ``dag.test()``:

- the first date's DAG run: its inference task's first try pins version 1, scores, and fails (a
  ``min_rows`` it cannot meet on that try); its retry callback moves ``champion`` to version 2, as a
  promotion in the middle of a run would; the retry of the same DAG run still serves version 1.
  The outputs equal ``mlflow.pyfunc.load_model(...).predict`` of version 1 and the report (the
  XCom) names version 1;
- the next date's DAG run serves version 2;
- side by side: ``mlflow.pyfunc.spark_udf`` of version 1 on a local Spark session of the same
  pyspark gives the same outputs as the Triton path.
"""

from __future__ import annotations

import datetime as dt
import os
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from airflow_spark_triton.demo.mlflow_models import local_store, log_text_scorer
from tests.conftest import session_processes, stop_spark

# A test here starts a Spark cluster and runs up to two jobs (a try and its retry): on a busy machine
# that is more than the suite's 900 s per-test guard, which is not a wait this module chose.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

NAME = "nightly_scorer"
DAY_1, DAY_2 = dt.date(2026, 11, 24), dt.date(2026, 11, 25)
TEXTS = ["a banana for anna", "hello world", "la casa azul", "", "  spaced   out ", "zzz", None, "alpha beta"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    """Two logged versions, ``champion`` on 1; ``MLFLOW_TRACKING_URI`` set for the module."""
    uri = local_store(tmp_path_factory.mktemp("mlflow"))
    before = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    started = time.monotonic()
    versions = [log_text_scorer(uri, NAME, 1.0, alias="champion"), log_text_scorer(uri, NAME, 2.0)]
    print(f"logged 2 versions in {time.monotonic() - started:.1f} s")
    try:
        yield uri, versions
    finally:
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """The input: TEXTS (one None: rejected) with weights on both days, under column ``body``."""
    root = tmp_path_factory.mktemp("mlflow-tables")
    rows = [
        {"id": i + 100 * n, "body": text, "weight": 0.5 + i, "date": day.isoformat()}
        for n, day in enumerate((DAY_1, DAY_2))
        for i, text in enumerate(TEXTS)
    ]
    schema = pa.schema(
        [("id", pa.int64()), ("body", pa.string()), ("weight", pa.float64()), ("date", pa.string())]
    )
    write_deltalake(str(root / "docs"), pa.Table.from_pylist(rows, schema), partition_by=["date"])
    return str(root / "docs"), str(root / "scores")


@pytest.fixture(scope="module")
def dags(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mlflow-dags")
    (folder / "nightly_mlflow_scores.py").write_text(
        textwrap.dedent(
            f"""
            import os
            from datetime import datetime, timedelta
            from airflow.sdk import DAG, Param
            from airflow_spark_triton.schedules import nightly
            from airflow_spark_triton.task_group import gpu_batch_inference


            def promote(context):
                # A model owner promotes version 2 while this DAG run is between two tries.
                if context["params"]["promote_on_retry"]:
                    from mlflow import MlflowClient

                    uri = os.environ["MLFLOW_TRACKING_URI"]
                    MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias(
                        "{NAME}", "champion", "2"
                    )


            with DAG(
                dag_id="nightly_mlflow_scores", schedule=nightly(), start_date=datetime(2026, 1, 1),
                catchup=False, render_template_as_native_obj=True,
                params={{
                    "input_table": Param("", type="string"), "output_table": Param("", type="string"),
                    "first_try_min_rows": Param(0, type="integer"),
                    "promote_on_retry": Param(False, type="boolean"),
                }},
            ):
                gpu_batch_inference(
                    "score",
                    cluster_spec={{"num_workers": 1, "executor_cores": 1}},
                    input_table="{{{{ params.input_table }}}}",
                    output_table="{{{{ params.output_table }}}}",
                    model="models:/{NAME}@champion",
                    input_columns={{"text": "body"}},  # weight: the column of its own name
                    batch_size=4,
                    min_rows="{{{{ params.first_try_min_rows if ti.try_number == 1 else 0 }}}}",
                    retries=1,
                    retry_delay=timedelta(seconds=1),
                    on_retry_callback=promote,
                )
            """
        )
    )
    return folder


def run(dags: Path, day: dt.date, tables: tuple[str, str], **params: object) -> dict:
    from airflow_spark_triton.dag_runner import run_dag

    started = time.monotonic()
    conf = {"input_table": tables[0], "output_table": tables[1], **params}
    result = run_dag(dags, "nightly_mlflow_scores", day, conf)
    print(f"{day}: {result.state} in {time.monotonic() - started:.1f} s")
    assert result.state == "success", result.task_states
    assert session_processes() == []
    return result.xcoms["score.infer"]


def served(tables: tuple[str, str], day: dt.date) -> pd.DataFrame:
    partition = [("date", "=", day.isoformat())]
    out = DeltaTable(tables[1]).to_pandas(partitions=partition)
    docs = DeltaTable(tables[0]).to_pandas(partitions=partition)
    return out.merge(docs, on="id").sort_values("id").reset_index(drop=True)


def expected(version: str, frame: pd.DataFrame) -> pd.DataFrame:
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(f"models:/{NAME}/{version}")
    return model.predict(pd.DataFrame({"text": frame["body"], "weight": frame["weight"]}))


def assert_equal(out: pd.DataFrame, want: pd.DataFrame) -> None:
    assert out["length"].tolist() == want["length"].tolist()
    np.testing.assert_allclose(out["score"].to_numpy(), want["score"].to_numpy(), rtol=1e-12)
    assert out["label"].tolist() == want["label"].tolist()


def test_a_retry_after_a_promotion_serves_the_version_pinned_at_the_first_try(
    airflow_db, store, tables, dags
):
    from mlflow import MlflowClient

    uri, _ = store
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    # Try 1 pins version 1 and fails on min_rows; the retry callback promotes version 2; try 2 of
    # the same DAG run serves the pinned version 1.
    first = run(dags, DAY_1, tables, first_try_min_rows=100, promote_on_retry=True)
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "2"  # promoted mid-run
    assert first["model"] == f"models:/{NAME}@champion" and first["model_version"] == "1"
    assert (first["rows_read"], first["rows_scored"], first["rows_rejected"]) == (8, 6, 2)  # None, ""
    assert "model_download" in first["timings_s"]
    day_1 = served(tables, DAY_1)
    assert set(day_1["model"]) == {f"mlflow_{NAME}_v1"}
    assert_equal(day_1, expected("1", day_1))
    assert all(label.startswith("v1:") for label in day_1["label"])


def test_the_next_dag_run_serves_the_promoted_version(airflow_db, store, tables, dags):
    """The next date's DAG run resolves the alias again: the promotion reaches it."""
    from mlflow import MlflowClient

    uri, _ = store
    # Where the first test ran, its retry callback promoted version 2 already; alone, promote here.
    MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias(NAME, "champion", "2")
    second = run(dags, DAY_2, tables)
    assert second["model_version"] == "2"
    day_2 = served(tables, DAY_2)
    assert set(day_2["model"]) == {f"mlflow_{NAME}_v2"}
    assert_equal(day_2, expected("2", day_2))
    assert all(label.startswith("v2:") for label in day_2["label"])


def test_spark_udf_of_the_same_version_gives_the_same_outputs(store, tables):
    """The peer users would otherwise pick, on a local Spark of the same pyspark (run after the
    pipeline test, whose output it compares with)."""
    import mlflow.pyfunc
    from pyspark.sql import SparkSession

    day_1 = served(tables, DAY_1)
    if len(day_1) == 0:
        pytest.skip("needs the pipeline test's output")
    spark = (
        SparkSession.builder.master("local[1]")
        .appName("mlflow-spark-udf")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    try:
        udf = mlflow.pyfunc.spark_udf(
            spark,
            f"models:/{NAME}/1",
            result_type="length long, score double, label string",
            env_manager="local",
        )
        frame = spark.createDataFrame(day_1[["id", "body", "weight"]].rename(columns={"body": "text"}))
        peer = (
            frame.select("id", udf("text", "weight").alias("p"))
            .select("id", "p.length", "p.score", "p.label")
            .toPandas()
            .sort_values("id")
            .reset_index(drop=True)
        )
    finally:
        stop_spark(spark)
    assert peer["id"].tolist() == day_1["id"].tolist()
    assert_equal(day_1, peer)
