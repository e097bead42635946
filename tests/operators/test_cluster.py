"""CreateGpuClusterOperator and DeleteClusterOperator against the in-memory backend."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from airflow_spark_triton.backends.base import ClusterError
from airflow_spark_triton.cluster_spec import ClusterSpecError
from airflow_spark_triton.operators import backend_cache
from airflow_spark_triton.operators.cluster import CreateGpuClusterOperator, DeleteClusterOperator
from tests.backends.fake import FakeBackend
from tests.operators.test_inference import Store


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> FakeBackend:
    fake = FakeBackend()
    monkeypatch.setattr(backend_cache, "get_backend", lambda conn_id: fake)
    return fake


def context(store: Store | None = None) -> dict[str, Any]:
    ti = SimpleNamespace(dag_id="d", task_id="create", run_id="r", map_index=-1, try_number=1, stats_tags={})
    return {"ti": ti, "task_state_store": store if store is not None else Store()}


def create(**kwargs: Any) -> CreateGpuClusterOperator:
    return CreateGpuClusterOperator(task_id="create", cluster_spec={"num_workers": 2}, **kwargs)


def test_create_waits_and_returns_the_cluster_tagged_with_its_run(backend: FakeBackend) -> None:
    cluster_id = create(tags={"team": "ml"}).execute(context())
    assert backend.clusters[cluster_id]["state"] == "RUNNING"
    assert backend.clusters[cluster_id]["tags"] == {
        "team": "ml", "airflow_dag_id": "d", "airflow_run_id": "r", "airflow_task_id": "create"
    }  # fmt: skip


def test_a_retried_create_reuses_the_cluster_its_earlier_try_made(backend: FakeBackend) -> None:
    first = create().execute(context())
    assert create().execute(context()) == first
    assert [call for call, _ in backend.calls].count("create_cluster") == 1


def test_a_cluster_that_never_becomes_usable_is_deleted_and_the_task_fails(backend: FakeBackend) -> None:
    backend.cluster_error = "init script exited 1"
    with pytest.raises(ClusterError, match="init script exited 1"):
        create().execute(context())
    (cluster_id,) = backend.clusters
    assert backend.clusters[cluster_id]["state"] == "DELETED"


def test_a_templated_spec_is_coerced_and_a_bad_one_fails_naming_the_setting(backend: FakeBackend) -> None:
    op = CreateGpuClusterOperator(task_id="create", cluster_spec={"num_workers": "{{ params.n }}"})
    op.render_template_fields({"params": {"n": 3}})
    cluster_id = op.execute(context())
    assert backend.clusters[cluster_id]["spec"].num_workers == 3
    bad = CreateGpuClusterOperator(task_id="create", cluster_spec={"num_workers": "three"})
    with pytest.raises(ClusterSpecError, match=r"cluster setting 'num_workers' must be int, got 'three'"):
        bad.execute(context(Store()))


def test_delete_is_safe_after_a_create_that_made_nothing(backend: FakeBackend) -> None:
    DeleteClusterOperator(task_id="delete", cluster_id="None").execute(context())
    assert backend.calls == []
    cluster_id = create().execute(context())
    DeleteClusterOperator(task_id="delete", cluster_id=cluster_id).execute(context())
    DeleteClusterOperator(task_id="delete", cluster_id=cluster_id).execute(context())  # a retried teardown
    assert backend.clusters[cluster_id]["state"] == "DELETED"


def test_a_create_that_did_not_answer_deletes_the_cluster_its_tags_find(backend: FakeBackend) -> None:
    """The request went through but the answer was lost (the backend gave up): the cluster carrying
    this try's tags is the try's own, and the failed setup's teardown would never delete it."""
    made = backend.create_cluster

    def create_without_answer(spec, tags):
        made(spec, tags)
        raise ClusterError("clusters/create failed on every attempt; last: 503")

    backend.create_cluster = create_without_answer  # type: ignore[method-assign]
    with pytest.raises(ClusterError, match="failed on every attempt"):
        create().execute(context())
    (cluster_id,) = backend.clusters
    assert backend.clusters[cluster_id]["state"] == "DELETED"
