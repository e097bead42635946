"""Every pre-flight error fails the create task before any cluster exists, and the inference task again
before it submits, naming the column or setting; on the local backend, whose schema check is delta-rs."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from airflow_spark_triton.backends.local.backend import LocalSparkBackend
from airflow_spark_triton.preflight import PreflightError, preflight
from spark_jobs.contract import InferenceJobConfig

DAY = "2026-11-24"
TINY = "spark_jobs.models.hashing_embedder:MODEL"


@pytest.fixture
def backend(tmp_path: Path) -> LocalSparkBackend:
    return LocalSparkBackend(spark_triton_conn_id=None, home=str(tmp_path / "home"))


@pytest.fixture
def tables(tmp_path: Path) -> dict[str, str]:
    """A text table (string dates), one with TIMESTAMP dates, one with integer dates, an image table."""
    paths = {name: str(tmp_path / name) for name in ("docs", "stamped", "numbered", "images")}
    docs = pd.DataFrame({"id": [1, 2], "text": ["a b", "c"], "n": [1, 2], "date": [DAY, DAY]})
    write_deltalake(paths["docs"], docs, partition_by=["date"])
    stamps = pa.array([dt.datetime(2026, 11, 24, 3, tzinfo=dt.UTC)] * 2, pa.timestamp("us", tz="UTC"))
    write_deltalake(paths["stamped"], pa.table({"id": [1, 2], "text": ["a", "b"], "date": stamps}))
    write_deltalake(paths["numbered"], pd.DataFrame({"id": [1], "text": ["a"], "date": [20261124]}))
    images = pa.table({"id": [1], "image": pa.array([b"\x89PNG"], pa.binary()), "date": [DAY]})
    write_deltalake(paths["images"], images)
    return paths


@pytest.fixture
def hf_dir(tmp_path: Path) -> str:
    """What the checks read of a saved text model: config.json and a tokenizer file."""
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"model_type": "t5"}))
    (directory / "tokenizer.json").write_text("{}")
    return str(directory)


def job(table: str, **overrides: Any) -> InferenceJobConfig:
    values = {"input_table": table, "output_table": table + "_out", "model": TINY, "logical_date": DAY}
    return InferenceJobConfig(**{**values, **overrides})


def test_a_job_that_fits_passes_for_every_date_type(backend, tables, hf_dir):
    assert preflight(job(tables["docs"]), backend).name == "hashing_embedder"
    assert preflight(job(tables["stamped"]), backend).name == "hashing_embedder"
    model = f"hf:text2text-generation:{hf_dir}"
    options = {"max_new_tokens": 8, "num_beams": 1, "do_sample": False}
    preflight(
        job(tables["docs"], model=model, model_options=options, input_columns={"text": "text"}), backend
    )


@pytest.mark.parametrize(
    ("table", "overrides", "message"),
    [
        ("docs", {"input_columns": ("body",)}, r"has no column 'body' \(input_columns \(model input 'text'\)"),
        ("docs", {"input_columns": ("n",)}, "column 'n' is bigint, model input 'text' of hashing_embedder needs text"),
        ("docs", {"key_column": "key"}, r"has no column 'key' \(key_column;"),
        ("numbered", {}, r"column 'date' \(date_column\) is bigint; a run selects its date from a DATE, TIMESTAMP"),
        ("docs", {"output_column": "id"}, "output column 'id' .* collides with key_column 'id'"),
        ("docs", {"output_columns": {"embedding": "scored_at"}}, "collides with the column 'scored_at' the job writes"),
        ("docs", {"batch_size": 512}, "'batch_size' is 512, above model hashing_embedder's max_batch_size 128"),
        ("docs", {"keep_columns": ("embedding",)}, "'keep_columns' copies input column 'embedding' to the output table, where output 'embedding' of model hashing_embedder lands"),
        ("docs", {"keep_columns": ("title",)}, r"has no column 'title' \(keep_columns;"),
        ("missing", {}, r"job setting 'input_table': input table .*missing does not exist"),
        ("docs", {"model": "no_such_module:MODEL"}, "job setting 'model': model reference 'no_such_module:MODEL': cannot import"),
        ("docs", {"model": "hf:summarization:/m"}, "unknown task 'summarization'"),
        ("docs", {"model": "hf:text-classification:/nowhere/model"}, r"/nowhere/model has no config\.json"),
        ("images", {"model": "hf:image-classification:google/vit-base", "input_columns": ("id",)}, "column 'id' is bigint, model input 'image' .* needs bytes"),
    ],
)  # fmt: skip
def test_each_error_names_the_column_or_setting(backend, tables, table, overrides, message):
    with pytest.raises(PreflightError, match=message):
        preflight(job(tables.get(table, table), **overrides), backend)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"trust_remote_code": True}, "'trust_remote_code' is not accepted"),
        ({"max_new_tokens": "many"}, "'max_new_tokens' of task 'text2text-generation' must be int"),
        ({"temprature": 0.5}, "takes no option 'temprature'"),
    ],
)
def test_hf_options_are_checked_before_anything_starts(backend, tables, hf_dir, options, message):
    bad = job(tables["docs"], model=f"hf:text2text-generation:{hf_dir}", model_options=options)
    with pytest.raises(PreflightError, match=f"job setting 'model_options': .*{message}"):
        preflight(bad, backend)


def test_a_model_directory_with_its_own_code_is_refused(backend, tables, hf_dir):
    (Path(hf_dir) / "config.json").write_text(json.dumps({"auto_map": {"AutoModel": "x.Y"}}))
    with pytest.raises(PreflightError, match="needs code from its own repository"):
        preflight(job(tables["docs"], model=f"hf:text-generation:{hf_dir}"), backend)


def test_a_preflight_error_fails_without_retrying():
    from airflow.sdk.exceptions import AirflowFailException

    from airflow_spark_triton.backends.base import BackendConfigError

    assert issubclass(PreflightError, AirflowFailException) and issubclass(PreflightError, BackendConfigError)


# -- the operators: the create task checks its inference tasks, which check again -----------------


def nightly_group(tables: dict[str, str], backend: LocalSparkBackend, monkeypatch, **inference: Any) -> Any:
    """A DAG built with gpu_batch_inference whose templated settings come from params, on ``backend``."""
    from airflow.sdk import DAG, Param

    from airflow_spark_triton.operators import backend_cache
    from airflow_spark_triton.task_group import gpu_batch_inference

    monkeypatch.setattr(backend_cache, "get_backend", lambda conn_id: backend)
    params = {"input_table": Param(tables["docs"], type="string"), "batch_size": Param(16, type="integer")}
    with DAG(
        "preflight_probe",
        schedule=None,
        start_date=dt.datetime(2026, 1, 1),
        params=params,
        render_template_as_native_obj=True,
    ) as dag:
        gpu_batch_inference(
            "g",
            cluster_spec={"num_workers": 1},
            input_table="{{ params.input_table }}",
            output_table=tables["docs"] + "_out",
            model=TINY,
            batch_size="{{ params.batch_size }}",
            **inference,
        )
    return dag


def context_of(dag: Any, **params: Any) -> dict[str, Any]:
    values = {name: param.value for name, param in dag.params.items()}
    return {"params": {**values, **params}, "logical_date": dt.datetime(2026, 11, 24, tzinfo=dt.UTC)}


def clusters_of(backend: LocalSparkBackend) -> list[Path]:
    return sorted(backend.clusters_dir.glob("*")) if backend.clusters_dir.exists() else []


@pytest.mark.parametrize(
    ("params", "inference", "message"),
    [
        ({"batch_size": 4096}, {}, "'batch_size' is 4096, above model hashing_embedder's max_batch_size 128"),
        ({}, {"input_columns": {"text": "headline"}}, "has no column 'headline'"),
        ({"input_table": "/no/such/table"}, {}, "input table /no/such/table does not exist"),
    ],
)
def test_the_create_task_fails_before_creating_a_cluster(
    backend, tables, monkeypatch, params, inference, message
):
    dag = nightly_group(tables, backend, monkeypatch, **inference)
    with pytest.raises(PreflightError, match=message):
        dag.get_task("g.create_cluster").execute(context_of(dag, **params))
    assert clusters_of(backend) == [], "no cluster may exist after a pre-flight failure"


def test_the_inference_task_checks_again_before_it_submits(backend, tables, monkeypatch):
    dag = nightly_group(tables, backend, monkeypatch)
    infer = dag.get_task("g.infer")
    infer.input_table, infer.batch_size, infer.logical_date = tables["numbered"], 16, DAY
    submitted = []
    monkeypatch.setattr(backend, "submit_job", lambda *a, **k: submitted.append(a) or "run")
    with pytest.raises(PreflightError, match=r"column 'date' \(date_column\) is bigint"):
        infer.submit_job(
            {"ti": SimpleNamespace(dag_id="d", task_id="g.infer", run_id="r", map_index=-1, try_number=1)}
        )
    assert submitted == [] and clusters_of(backend) == []


def test_settings_that_do_not_render_yet_leave_the_check_to_the_inference_task(backend, tables, monkeypatch):
    dag = nightly_group(tables, backend, monkeypatch)
    infer = dag.get_task("g.infer")
    infer.input_table = "{{ ti.xcom_pull(task_ids='upstream') }}"  # no ti in this context: cannot render
    infer.check_before_cluster(context_of(dag), lambda conn_id: backend)  # the inference task checks later
