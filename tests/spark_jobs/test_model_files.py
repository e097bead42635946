"""The job's driver prepares a registry model: the pinned version, downloaded once, shipped to the nodes.

A real MLflow 3 store (``sqlite:///`` in a temporary directory) holds two versions of the demo text
scorer; ``champion`` names version 2 while the job is pinned to version 1, as a promotion between
a DAG run's start and its job would. Spark is not needed to prepare: the driver's one Spark call,
``addArchive``, is recorded.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from airflow_spark_triton.demo.mlflow_models import local_store, log_text_scorer
from spark_jobs.contract import InferenceJobConfig
from spark_jobs.model_files import SPARK_FILES_PREFIX, prepare_model

NAME = "prepared_scorer"


@pytest.fixture(scope="module")
def registry_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    uri = local_store(tmp_path_factory.mktemp("mlflow"))
    log_text_scorer(uri, NAME, 1.0)
    log_text_scorer(uri, NAME, 2.0, alias="champion")
    return uri


def test_the_pinned_version_is_shipped_and_the_servers_get_its_files(registry_uri):
    archives: list[str] = []
    spark = SimpleNamespace(sparkContext=SimpleNamespace(addArchive=archives.append))
    job = InferenceJobConfig(
        input_table="/i", output_table="/o", logical_date="2026-11-24",
        model=f"models:/{NAME}@champion", model_version="1", model_registry_uri=registry_uri,
    )  # fmt: skip
    prepared = prepare_model(spark, job, lambda columns: {})

    assert prepared.version == "1"  # the pin, not what champion names now (2)
    assert prepared.model.name == f"mlflow_{NAME}_v1"
    assert prepared.server_job.model == f"{SPARK_FILES_PREFIX}mlflow_{NAME}_v1"
    # The servers load files: no registry reference, so no version to carry (the contract refuses one).
    assert prepared.server_job.model_version is None
    assert InferenceJobConfig.from_json(prepared.server_job.to_json()) == prepared.server_job
    [archive] = archives
    path, fragment = archive.split("#")
    assert fragment == f"mlflow_{NAME}_v1"
    with zipfile.ZipFile(path) as shipped:
        assert "MLmodel" in shipped.namelist()
    assert Path(path).is_file()


def test_a_model_directory_is_read_where_it_is(registry_uri, tmp_path):
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(f"models:/{NAME}/2", dst_path=str(tmp_path)))
    archives: list[str] = []
    spark = SimpleNamespace(sparkContext=SimpleNamespace(addArchive=archives.append))
    job = InferenceJobConfig(input_table="/i", output_table="/o", logical_date="2026-11-24", model=str(local))
    prepared = prepare_model(spark, job, lambda columns: {})
    assert prepared.server_job.model == str(local) and prepared.version is None
    assert archives == []
