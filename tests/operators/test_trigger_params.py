"""Trigger params are data: settings a run's conf changed must pass the ``[spark_triton]`` allow-lists.

The operators render their fields with Airflow's own template machinery here (the same call the
task runner makes), once per conf; a last test runs a DAG with ``dag.test()`` to show a refusal
fails the task before a model module is imported or a cluster is created.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk import DAG, Param
from airflow.sdk.definitions.param import process_params

from airflow_spark_triton.operators.cluster import CreateGpuClusterOperator, DeleteClusterOperator
from airflow_spark_triton.operators.inference import TritonInferenceOperator
from airflow_spark_triton.operators.trigger_params import TriggerParamError

PACKAGED = "spark_jobs.models.hashing_embedder:MODEL"


def nightly_like_dag(native: bool = True) -> DAG:
    """The shape of dags/nightly_embeddings.py: every guarded setting comes from a param."""
    with DAG(
        dag_id=f"trigger_params_{native}",
        schedule=None,
        start_date=dt.datetime(2026, 1, 1),
        render_template_as_native_obj=native,
        params={
            "model": Param(PACKAGED, type="string"),
            "model_options": Param({}, type="object"),
            "conn_id": Param("spark_triton_default", type="string"),
            "spark_conf": Param({"spark.sql.shuffle.partitions": "4"}, type="object"),
            "cluster_settings": Param({}, type="object"),
            "num_workers": Param(2, type="integer"),
        },
    ) as dag:
        CreateGpuClusterOperator(
            task_id="create",
            conn_id="{{ params.conn_id }}",
            cluster_spec="{{ dict(params.cluster_settings, num_workers=params.num_workers, "
            "spark_conf=params.spark_conf, model=params.model) }}",
        )
        TritonInferenceOperator(
            task_id="infer",
            conn_id="{{ params.conn_id }}",
            cluster_id="c1",
            input_table="/t/in",
            output_table="/t/out",
            model="{{ params.model }}",
            model_options="{{ params.model_options }}",
        )
        DeleteClusterOperator(task_id="delete", conn_id="{{ params.conn_id }}", cluster_id="c1")
    return dag


def render(dag: DAG, task_id: str, conf: dict[str, Any]) -> Any:
    """Render one task as the task runner does for a run with ``conf``; returns the rendered task."""
    task = dag.get_task(task_id).prepare_for_execution()
    context = {
        "dag_run": SimpleNamespace(conf=conf, run_id="r1"),
        "params": process_params(dag, task, conf, suppress_exception=False),
        "ds": "2026-11-26",
    }
    task.render_template_fields(context, dag.get_template_env())
    return task


@pytest.mark.parametrize("native", [True, False])
def test_the_dags_own_defaults_and_allowed_params_render(native: bool) -> None:
    dag = nightly_like_dag(native)
    allowed = {
        "model": "spark_jobs.models.minilm:MODEL",
        "model_options": {"encode_batch_size": 32},
        "num_workers": 4,
        "spark_conf": {"spark.sql.shuffle.partitions": "64", "spark.sql.adaptive.enabled": "false"},
        "cluster_settings": {"node_type_id": "g5.2xlarge", "compute": "all_purpose"},
    }
    for conf in ({}, allowed):
        for task_id in ("create", "infer", "delete"):
            render(dag, task_id, conf)
    assert render(dag, "infer", allowed).model == "spark_jobs.models.minilm:MODEL"


@pytest.mark.parametrize(
    ("task_id", "conf", "named"),
    [
        ("infer", {"model": "os:system"}, ["'model' = 'os:system'", "allowed_models", "params: model"]),
        ("create", {"model": "os:system"}, ["'cluster_spec'['model']", "allowed_models"]),
        (
            "create",
            {"cluster_settings": {"init_script": "/proc/self/environ"}},
            [
                "['init_script'] = '/proc/self/environ'",
                "allowed_init_script_dirs",
                "params: cluster_settings",
            ],
        ),
        (
            "create",
            {"spark_conf": {"spark.driver.extraJavaOptions": "-javaagent:/tmp/agent.jar"}},
            ["['spark.driver.extraJavaOptions']", "carries code", "allowed_spark_conf", "params: spark_conf"],
        ),
        (
            "create",
            {"cluster_settings": {"spark_env_vars": {"PYTHONPATH": "/tmp/evil"}}},
            ["['PYTHONPATH']", "allowed_spark_env_vars"],
        ),
        (
            "create",
            {"cluster_settings": {"aws_attributes": {"instance_profile_arn": "arn:admin"}}},
            ["['aws_attributes']", "allowed_cluster_settings"],
        ),
        ("infer", {"model_options": {"trust_remote_code": True}}, ["['trust_remote_code']", "carries code"]),
        *[
            (task, {"conn_id": "prod_admin"}, ["'conn_id' = 'prod_admin'", "allowed_conn_ids"])
            for task in ("create", "infer", "delete")
        ],
    ],
)
@pytest.mark.parametrize("native", [True, False])
def test_code_from_the_conf_is_refused_naming_param_and_option(
    task_id: str, conf: dict[str, Any], named: list[str], native: bool
) -> None:
    with pytest.raises(TriggerParamError) as refused:
        render(nightly_like_dag(native), task_id, conf)
    message = str(refused.value)
    for text in (*named, f"Task {task_id!r}", "Nothing was imported, read, created or sent"):
        assert text in message, message


def test_the_deployment_can_allow_more(monkeypatch: pytest.MonkeyPatch) -> None:
    dag = nightly_like_dag()
    monkeypatch.setenv("AIRFLOW__SPARK_TRITON__ALLOWED_MODELS", "spark_jobs.models.*, team_models.*")
    monkeypatch.setenv("AIRFLOW__SPARK_TRITON__ALLOWED_CONN_IDS", "team_*")
    monkeypatch.setenv("AIRFLOW__SPARK_TRITON__ALLOWED_SPARK_CONF", "spark.driver.extraJavaOptions")
    conf = {
        "model": "team_models.churn:MODEL",
        "conn_id": "team_dev",
        "spark_conf": {"spark.driver.extraJavaOptions": "-Dteam=1"},
    }
    for task_id in ("create", "infer", "delete"):
        render(dag, task_id, conf)


def test_what_the_dag_author_wrote_is_not_restricted() -> None:
    """Literal settings and param defaults are the author's, even when a conf is present."""
    with DAG(
        dag_id="author_code",
        schedule=None,
        start_date=dt.datetime(2026, 1, 1),
        params={"model": Param("team_models.churn:MODEL", type="string"), "other": Param("x")},
    ) as dag:
        CreateGpuClusterOperator(
            task_id="create",
            conn_id="prod_workspace",
            cluster_spec={
                "init_script": "/opt/team/init.sh",
                "spark_conf": {"spark.driver.extraJavaOptions": "-Dauthor=1"},
                "spark_env_vars": {"PYTHONPATH": "/opt/team"},
                "model": "{{ params.model }}",
            },
        )
    render(dag, "create", {"other": "y"})
    with pytest.raises(TriggerParamError, match="allowed_models"):
        render(dag, "create", {"model": "team_models.other:MODEL"})


def test_a_template_that_needs_the_conf_counts_as_the_triggers() -> None:
    """``dag_run.conf['model']`` cannot render without a conf: the value is the trigger's."""
    with DAG(dag_id="conf_direct", schedule=None, start_date=dt.datetime(2026, 1, 1)) as dag:
        TritonInferenceOperator(
            task_id="infer",
            cluster_id="c1",
            input_table="/t/in",
            output_table="/t/out",
            model="{{ dag_run.conf['model'] }}",
        )
    assert render(dag, "infer", {"model": PACKAGED}).model == PACKAGED
    with pytest.raises(TriggerParamError, match="params: model"):
        render(dag, "infer", {"model": "evil.module:MODEL"})


@pytest.fixture
def canary_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An importable module that leaves a file behind when imported."""
    marker = tmp_path / "imported"
    package = tmp_path / "modules"
    package.mkdir()
    (package / "tp_canary_model.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\nMODEL = None\n"
    )
    monkeypatch.syspath_prepend(str(package))
    sys.modules.pop("tp_canary_model", None)
    return marker


def test_a_refused_run_fails_before_any_import_or_cluster(
    airflow_db: Path, tmp_path: Path, canary_module: Path
) -> None:
    """Through ``dag.test()``: the create task fails at rendering, nothing is imported or created."""
    from airflow_spark_triton.dag_runner import run_dag

    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "guarded.py").write_text(
        textwrap.dedent(
            """
            from datetime import datetime
            from airflow.sdk import DAG, Param
            from airflow_spark_triton.task_group import gpu_batch_inference

            with DAG(
                dag_id="guarded_pipeline", schedule=None, start_date=datetime(2026, 1, 1),
                render_template_as_native_obj=True,
                params={"model": Param("spark_jobs.models.hashing_embedder:MODEL", type="string")},
            ):
                gpu_batch_inference(
                    "embed", cluster_spec={"num_workers": 1}, input_table="/t/in",
                    output_table="/t/out", model="{{ params.model }}",
                )
            """
        )
    )
    clusters = Path(os.environ["AIRFLOW_SPARK_TRITON_HOME"]) / "clusters"
    before = set(clusters.glob("*")) if clusters.exists() else set()
    result = run_dag(
        dags, "guarded_pipeline", dt.date(2026, 11, 26), {"model": "tp_canary_model:MODEL"}, retries=0
    )
    assert result.state == "failed"
    assert result.task_states["embed.create_cluster"] == "failed"
    assert result.task_states["embed.infer"] == "upstream_failed"
    assert not canary_module.exists(), "the refused model module was imported"
    after = set(clusters.glob("*")) if clusters.exists() else set()
    assert after == before, f"a cluster was created: {after - before}"


HF_DIR_REFERENCE = "hf:text2text-generation:/models/t5-small"


@pytest.mark.parametrize("reference", [HF_DIR_REFERENCE, "hf:text-classification:someone/any-weights"])
def test_an_hf_reference_from_the_conf_is_refused_by_default(reference: str) -> None:
    """A hub id loads weights the trigger chose on every node; a directory reads worker files."""
    for task_id, setting in (("infer", "'model'"), ("create", "'cluster_spec'['model']")):
        with pytest.raises(TriggerParamError, match="allowed_models") as refused:
            render(nightly_like_dag(), task_id, {"model": reference})
        assert f"{setting} = {reference!r}" in str(refused.value)


def test_the_deployment_can_allow_hf_references_but_a_glob_never_admits_a_path_escape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIRFLOW__SPARK_TRITON__ALLOWED_MODELS", "spark_jobs.models.*, hf:*:/models/*")
    dag = nightly_like_dag()
    assert render(dag, "infer", {"model": HF_DIR_REFERENCE}).model == HF_DIR_REFERENCE
    with pytest.raises(TriggerParamError, match="carries code"):
        render(dag, "infer", {"model": "hf:text2text-generation:/models/../home/someone/weights"})
    with pytest.raises(TriggerParamError, match="allowed_models"):
        render(dag, "infer", {"model": "hf:text2text-generation:google-t5/t5-small"})


@pytest.mark.parametrize(
    "reference",
    ["models:/team_scorer@champion", "models:/main.ml.scorer/3", "runs:/0a1b/model", "/models/scorer"],
)
def test_an_mlflow_reference_from_the_conf_is_refused_by_default(reference: str) -> None:
    """Loading an MLflow model unpickles its Python on every node: a conf may not choose one."""
    for task_id, setting in (("infer", "'model'"), ("create", "'cluster_spec'['model']")):
        with pytest.raises(TriggerParamError, match="allowed_models") as refused:
            render(nightly_like_dag(), task_id, {"model": reference})
        assert f"{setting} = {reference!r}" in str(refused.value)


def test_the_deployment_can_allow_registry_models_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__SPARK_TRITON__ALLOWED_MODELS", "spark_jobs.models.*, models:/team_*")
    dag = nightly_like_dag()
    assert (
        render(dag, "infer", {"model": "models:/team_scorer@champion"}).model
        == "models:/team_scorer@champion"
    )
    for refused in ("models:/other_scorer@champion", "runs:/0a1b/model"):
        with pytest.raises(TriggerParamError, match="allowed_models"):
            render(dag, "infer", {"model": refused})


def test_the_create_tasks_preflight_holds_its_inference_tasks_conf_to_the_allow_lists(
    canary_module: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The create task renders its inference tasks' settings for their pre-flight checks: what the
    conf set there is refused before the model is resolved (imported) or its directory read."""
    from airflow_spark_triton.operators import backend_cache
    from tests.backends.fake import FakeBackend

    backend = FakeBackend()
    monkeypatch.setattr(backend_cache, "get_backend", lambda conn_id: backend)
    with DAG(
        dag_id="hand_wired",
        schedule=None,
        start_date=dt.datetime(2026, 1, 1),
        params={"model": Param(PACKAGED, type="string"), "model_options": Param({}, type="object")},
    ) as dag:
        create = CreateGpuClusterOperator(task_id="create", cluster_spec={"num_workers": 1})
        infer = TritonInferenceOperator(
            task_id="infer",
            cluster_id=create.output,
            input_table="/t/in",
            output_table="/t/out",
            model="{{ params.model }}",
            model_options="{{ params.model_options }}",
        )
        create >> infer
    for conf, named in (
        ({"model": "tp_canary_model:MODEL"}, "'model' = 'tp_canary_model:MODEL'"),
        ({"model_options": {"model_path": "/etc"}}, "'model_options'['model_path']"),
    ):
        task = render(dag, "create", conf)  # its own settings are the DAG's
        context = {
            "dag_run": SimpleNamespace(conf=conf, run_id="r1"),
            "params": process_params(dag, task, conf, suppress_exception=False),
            "logical_date": dt.datetime(2026, 11, 24, tzinfo=dt.UTC),
        }
        with pytest.raises(TriggerParamError, match="Task 'infer'") as refused:
            task.execute(context)
        assert named in str(refused.value)
    assert not canary_module.exists(), "the refused model module was imported"
    assert backend.calls == [], "the backend was asked before the refusal"
