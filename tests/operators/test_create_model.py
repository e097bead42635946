"""The create task learns the served model (``GpuClusterSpec.model``) from the group and the nightly DAG,
so it can check the model's declared requirements before any inference run."""

from __future__ import annotations

import datetime as dt
import importlib.util
from typing import Any

import pytest

from airflow_spark_triton.cluster_spec import GpuClusterSpec
from tests.conftest import REPO


def group_create_task(cluster_spec: Any, **inference: Any) -> Any:
    from airflow.sdk import DAG

    from airflow_spark_triton.task_group import gpu_batch_inference

    with DAG("g", schedule=None, start_date=dt.datetime(2026, 1, 1)):
        group = gpu_batch_inference(
            "embed", cluster_spec=cluster_spec, input_table="/in", output_table="/out", **inference
        )
    return {t.task_id: t for t in group}["embed.create_cluster"]


@pytest.mark.parametrize(
    ("cluster_spec", "expected"),
    [
        ({"compute": "all_purpose"}, "pkg.mod:MODEL"),
        (GpuClusterSpec(num_workers=3), "pkg.mod:MODEL"),
        ({"model": "other.mod:MODEL"}, "other.mod:MODEL"),  # the spec's own model wins
        (GpuClusterSpec(model="other.mod:MODEL"), "other.mod:MODEL"),
        ({"model": None}, None),  # explicitly nothing to check
    ],
)
def test_the_groups_create_task_gets_the_inference_model(cluster_spec, expected) -> None:
    create = group_create_task(cluster_spec, model="pkg.mod:MODEL")
    assert create._spec().model == expected
    given = cluster_spec.num_workers if isinstance(cluster_spec, GpuClusterSpec) else 2
    assert create._spec().num_workers == given  # the rest of the spec is untouched


def test_a_templated_model_stays_a_template_for_the_create_task_to_render() -> None:
    create = group_create_task({"compute": "job"}, model="{{ params.model }}")
    assert create.cluster_spec["model"] == "{{ params.model }}"
    assert "cluster_spec" in create.template_fields


def test_the_nightly_dags_create_task_renders_the_model_param_into_its_spec() -> None:
    module_spec = importlib.util.spec_from_file_location(
        "nightly_dag_model", REPO / "dags" / "nightly_embeddings.py"
    )
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    dag = module.dag
    create = dag.get_task("create_cluster")
    params = {name: param.value for name, param in dag.params.items()}
    for model in (params["model"], "spark_jobs.models.hashing_embedder:MODEL"):
        rendered = create.render_template(
            create.cluster_spec, {"params": {**params, "model": model}}, jinja_env=dag.get_template_env()
        )
        assert GpuClusterSpec.from_dict(rendered).model == model
    assert params["model"] == dag.get_task("embed_documents").render_template(
        dag.get_task("embed_documents").model, {"params": params}, jinja_env=dag.get_template_env()
    )
