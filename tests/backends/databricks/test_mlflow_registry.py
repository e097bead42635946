"""MLflow models on Databricks, on the emulator: an alias pinned once per DAG run through the connection,
the pinned version in the job, its requirements as the run's libraries, and the token nowhere.

The emulator serves Unity Catalog's model versions (databricks-sdk ``catalog.ModelVersionsAPI``) and
their files (Files API ``/Models/...``), the workspace registry and runs (MLflow's REST, checked with
``ml.ModelRegistryAPI`` / ``ml.ExperimentsAPI`` where they have the call) and DBFS reads. The
Airflow side runs here without MLflow importable, as the light install has it.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_spark_triton.backends.base import BackendConfigError
from airflow_spark_triton.cluster_spec import GpuClusterSpec
from airflow_spark_triton.operators.inference import MODEL_VERSION_KEY, TritonInferenceOperator
from airflow_spark_triton.preflight import PreflightError, preflight
from spark_jobs.contract import InferenceJobConfig
from spark_jobs.models.mlflow_pyfunc import parse_reference
from tests.hooks.conftest import ARTIFACT_ROOT, CONN_ID, TOKEN

TAGS = {"airflow_dag_id": "nightly_scores", "airflow_task_id": "create_cluster", "airflow_run_id": "r1"}
UC_NAME = "main.ml.scorer"
SIGNATURE = (
    "signature:\n"
    '  inputs: \'[{"type": "string", "name": "text"}, {"type": "double", "name": "weight"}]\'\n'
    '  outputs: \'[{"type": "long", "name": "length"}, {"type": "double", "name": "score"}]\'\n'
)


def model_files(sklearn: str) -> dict[str, bytes]:
    """What MLflow 3 logs for a pyfunc model (the files the Airflow side reads)."""
    return {
        "MLmodel": (
            "artifact_path: model\nflavors:\n  python_function:\n    loader_module: mlflow.pyfunc.model\n"
            "    python_version: 3.11.9\nmlflow_version: 3.17.2\n" + SIGNATURE
        ).encode(),
        "requirements.txt": f"mlflow==3.17.2\ncloudpickle==3.1.1\nscikit-learn=={sklearn}\n".encode(),
        "python_env.yaml": b"python: 3.11.9\nbuild_dependencies:\n- pip\ndependencies:\n- -r requirements.txt\n",
        "python_model.pkl": b"\x80\x05 not read by the Airflow side",
    }


class Store:
    """The task state store as the operator uses it (get, set, delete)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self.values.get(key)

    def set(self, key: str, value: Any) -> None:
        self.values[key] = json.loads(json.dumps(value))

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


@pytest.fixture(autouse=True)
def no_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """The light install: nothing on the Airflow side of Databricks may need MLflow."""
    monkeypatch.setitem(sys.modules, "mlflow", None)


@pytest.fixture
def registry_conn(emulator, monkeypatch: pytest.MonkeyPatch):
    """The connection with a registry extra: ``databricks-uc`` (the default) or ``databricks``."""

    def make(registry: str | None) -> str:
        extra = {"mlflow_registry_uri": registry} if registry else {}
        conn = {**emulator.connection(), "extra": {"artifact_root": ARTIFACT_ROOT, **extra}}
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))
        return CONN_ID

    return make


def operator(model: str) -> TritonInferenceOperator:
    return TritonInferenceOperator(
        task_id="score",
        cluster_id="unused",
        input_table="/Volumes/main/default/data/in",
        output_table="/Volumes/main/default/data/out",
        model=model,
        conn_id=CONN_ID,
        logical_date="2026-11-24",
    )


def alias_calls(emulator) -> int:
    return len(emulator.calls("GET", "2.1/unity-catalog/models/main.ml.scorer/aliases/"))


def test_a_uc_alias_is_pinned_once_and_the_job_gets_that_version_and_its_requirements(
    emulator, registry_conn, make_backend, caplog, tmp_path
):
    caplog.set_level(logging.DEBUG)
    registry_conn(None)  # databricks-uc by default
    emulator.add_model_version("databricks-uc", UC_NAME, 1, model_files("1.5.2"))
    emulator.add_model_version("databricks-uc", UC_NAME, 2, model_files("1.6.0"))
    emulator.set_model_alias("databricks-uc", UC_NAME, "champion", 1)

    # The inference task's first try pins the alias, in the task state store of its DAG run.
    store, op = Store(), operator(f"models:/{UC_NAME}@champion")
    op._pin_model_version({"task_state_store": store})
    assert store.values[MODEL_VERSION_KEY] == {"model": f"models:/{UC_NAME}@champion", "version": "1"}
    assert alias_calls(emulator) == 1

    # A promotion moves the alias; a retry of the same DAG run still serves version 1.
    emulator.set_model_alias("databricks-uc", UC_NAME, "champion", 2)
    retry = operator(f"models:/{UC_NAME}@champion")
    retry._pin_model_version({"task_state_store": store})
    assert retry.job_config().model_version == "1" and alias_calls(emulator) == 1

    backend = make_backend()
    job = retry.job_config()
    model = preflight(job, backend)  # the signature, read through the Files API (/Models/...)
    assert model is not None and [t.name for t in model.inputs] == ["text", "weight"]
    # The create task checks what the alias names then (its cluster libraries on all-purpose compute).
    compute_id = backend.prepare_job_compute(GpuClusterSpec(num_workers=1, model=job.model), TAGS)
    asked = alias_calls(emulator)
    backend.submit_job(compute_id, job, "t-uc")
    assert alias_calls(emulator) == asked  # the run never asks the alias: it has its version

    (task,) = emulator.calls("POST", "2.2/jobs/runs/submit")[-1].body["tasks"]
    sent = InferenceJobConfig.from_args(task["spark_python_task"]["parameters"])
    assert (sent.model, sent.model_version, sent.model_registry_uri) == (
        f"models:/{UC_NAME}@champion", "1", "databricks-uc",
    )  # fmt: skip
    pypi = [lib["pypi"]["package"] for lib in task["libraries"] if "pypi" in lib]
    assert pypi == ["mlflow==3.17.2", "cloudpickle==3.1.1", "scikit-learn==1.5.2"]  # version 1's pins

    # The next DAG run (a new task state store) pins the promoted version.
    nightly = operator(f"models:/{UC_NAME}@champion")
    nightly._pin_model_version({"task_state_store": Store()})
    assert nightly.job_config().model_version == "2"

    # The token: only in the Authorization header of each request, nowhere else.
    written = [p for p in Path(emulator.home).rglob("*") if p.is_file()]
    assert written and not [p for p in written if TOKEN.encode() in p.read_bytes()]
    assert TOKEN not in json.dumps([r.body for r in emulator.requests], default=str)
    assert TOKEN not in json.dumps(task) and TOKEN not in caplog.text
    assert TOKEN not in json.dumps(store.values)


def test_the_workspace_registry_and_a_runs_model_are_read_through_dbfs(emulator, registry_conn, make_backend):
    registry_conn("databricks")
    emulator.add_model_version("databricks", "scorer", 1, model_files("1.5.2"))
    emulator.add_model_version("databricks", "scorer", 3, model_files("1.6.0"))
    emulator.set_model_alias("databricks", "scorer", "champion", 3)
    backend = make_backend()
    registry = backend.model_registry()
    assert registry.pin(parse_reference("models:/scorer@champion")).version == "3"
    assert registry.pin(parse_reference("models:/scorer/latest")).version == "3"

    job = InferenceJobConfig(
        input_table="/Volumes/main/default/data/in", output_table="/Volumes/main/default/data/out",
        model="models:/scorer@champion", model_version="3", logical_date="2026-11-24",
    )  # fmt: skip
    assert [t.name for t in preflight(job, backend).outputs] == ["length", "score"]
    backend.submit_job(backend.prepare_job_compute(GpuClusterSpec(num_workers=1), TAGS), job, "t-ws")
    (task,) = emulator.calls("POST", "2.2/jobs/runs/submit")[-1].body["tasks"]
    assert "scikit-learn==1.6.0" in [lib["pypi"]["package"] for lib in task["libraries"] if "pypi" in lib]
    assert (
        InferenceJobConfig.from_args(task["spark_python_task"]["parameters"]).model_registry_uri
        == "databricks"
    )
    assert emulator.calls("GET", "2.0/dbfs/read")

    emulator.add_run_model("0a1b2c", "model", model_files("1.4.0"))
    run_job = job.replace(model="runs:/0a1b2c/model", model_version=None)
    assert preflight(run_job, backend) is not None


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (f"models:/{UC_NAME}@nightly", "Unity Catalog has no alias 'nightly' of model 'main.ml.scorer'"),
        (f"models:/{UC_NAME}/7", "has no version 7"),
        ("models:/scorer@champion", "a Unity Catalog model is named <catalog>.<schema>.<model>"),
    ],
)
def test_a_missing_alias_or_version_fails_the_task_naming_it(emulator, registry_conn, model, message):
    registry_conn(None)
    emulator.add_model_version("databricks-uc", UC_NAME, 1, model_files("1.5.2"))
    with pytest.raises(PreflightError, match=message):
        operator(model)._pin_model_version({"task_state_store": Store()})


def test_an_unknown_registry_extra_is_named(emulator, registry_conn, make_backend):
    registry_conn("databricks-unity")
    with pytest.raises(BackendConfigError, match=r"'databricks-uc' .* or 'databricks'"):
        make_backend().model_registry()
