"""On Databricks the pre-flight reads a ``catalog.schema.table``'s columns from Unity Catalog (the
emulator's ``tables/get``, answered with databricks-sdk's ``TableInfo``) and an ``hf:`` model's
directory on a volume through the Files API; a failure leaves no cluster and no run behind."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_spark_triton.backends.table_schema import TableNotFound
from airflow_spark_triton.cluster_spec import GpuClusterSpec
from airflow_spark_triton.preflight import PreflightError, preflight
from spark_jobs.contract import InferenceJobConfig

ARRAY_FLOAT = json.dumps({"type": "array", "elementType": "float", "containsNull": True})
TABLE = "main.sales.tickets"
MODEL_DIR = "/Volumes/main/default/spark_triton/models/t5"


def job(**overrides: Any) -> InferenceJobConfig:
    values = {
        "input_table": TABLE,
        "output_table": "main.sales.ticket_translations",
        "model": f"hf:text2text-generation:{MODEL_DIR}",
        "logical_date": "2026-11-24",
        "input_columns": {"text": "body"},
        "model_options": {"max_new_tokens": 16},
    }
    return InferenceJobConfig(**{**values, **overrides})


@pytest.fixture
def seeded(emulator, make_backend):
    emulator.add_table(
        TABLE, [("id", '"long"'), ("body", '"string"'), ("vec", ARRAY_FLOAT), ("date", '"timestamp"')]
    )
    backend = make_backend()
    backend.hook.upload_bytes(json.dumps({"model_type": "t5"}).encode(), f"{MODEL_DIR}/config.json")
    backend.hook.upload_bytes(b"{}", f"{MODEL_DIR}/tokenizer.json")
    return backend


def test_unity_catalog_columns_are_sparks_types(seeded, emulator):
    columns = seeded.describe_table(TABLE)
    assert columns == {
        "id": "long",
        "body": "string",
        "vec": {"type": "array", "elementType": "float", "containsNull": True},
        "date": "timestamp",
    }
    (call,) = emulator.calls("GET", f"2.1/unity-catalog/tables/{TABLE}")
    assert call.status == 200
    assert seeded.describe_table("/Volumes/main/default/raw/tickets") is None  # a path: the job checks it
    with pytest.raises(TableNotFound, match=r"main\.sales\.nothing does not exist in Unity Catalog"):
        seeded.describe_table("main.sales.nothing")


def test_a_fitting_job_passes_and_a_misfit_fails_naming_the_column(seeded):
    preflight(job(), seeded)
    with pytest.raises(
        PreflightError, match=r"column 'vec' is array<float>, model input 'text' .* needs text"
    ):
        preflight(job(input_columns={"text": "vec"}), seeded)
    with pytest.raises(PreflightError, match=r"input table main\.sales\.missing does not exist"):
        preflight(job(input_table="main.sales.missing"), seeded)


def test_a_volume_model_directory_is_read_through_the_files_api(seeded):
    seeded.hook.delete_file(f"{MODEL_DIR}/tokenizer.json")
    with pytest.raises(PreflightError, match=r"has none of tokenizer\.json"):
        preflight(job(), seeded)
    # a directory on the nodes' own disk cannot be read before a cluster exists: left to the nodes
    preflight(job(model="hf:text2text-generation:/local_disk0/models/t5"), seeded)


@pytest.mark.parametrize("compute", ["job", "all_purpose"])
def test_a_preflight_failure_in_the_create_task_leaves_no_cluster_and_no_run(
    seeded, emulator, monkeypatch, compute
):
    import datetime as dt

    from airflow.sdk import DAG

    from airflow_spark_triton.operators import backend_cache
    from airflow_spark_triton.task_group import gpu_batch_inference

    monkeypatch.setattr(backend_cache, "get_backend", lambda conn_id: seeded)
    with DAG("uc_probe", schedule=None, start_date=dt.datetime(2026, 1, 1)) as dag:
        gpu_batch_inference(
            "g",
            cluster_spec=GpuClusterSpec(num_workers=1, node_type_id="g5.xlarge", compute=compute),
            input_table=TABLE,
            output_table="main.sales.out",
            model=f"hf:text2text-generation:{MODEL_DIR}",
            input_columns={"text": "id"},
        )
    context = {"params": {}, "logical_date": dt.datetime(2026, 11, 24, tzinfo=dt.UTC)}
    with pytest.raises(PreflightError, match="column 'id' is bigint, model input 'text'"):
        dag.get_task("g.create_cluster").execute(context)
    assert emulator.calls("POST", "2.1/clusters/create") == []
    assert emulator.calls("POST", "2.2/jobs/runs/submit") == []
