"""One backend per task instance: built at first use, once, whatever the number of backend calls."""

from __future__ import annotations

import copy

import pytest

from airflow_spark_triton.operators import backend_cache
from airflow_spark_triton.operators.cluster import CreateGpuClusterOperator, DeleteClusterOperator
from tests.backends.fake import FakeBackend
from tests.operators.test_cluster import context as create_context
from tests.operators.test_inference import Store
from tests.operators.test_inference import context as infer_context
from tests.operators.test_inference import operator as infer_operator


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The connection ids a backend was built for, in order (each build looks the connection up)."""
    conn_ids: list[str] = []
    fake = FakeBackend()

    def get_backend(conn_id: str) -> FakeBackend:
        conn_ids.append(conn_id)
        return fake

    monkeypatch.setattr(backend_cache, "get_backend", get_backend)
    return conn_ids


def test_each_task_instance_builds_its_backend_once_at_execute_time(built: list[str]) -> None:
    create = CreateGpuClusterOperator(
        task_id="create", cluster_spec={"num_workers": 1, "compute": "all_purpose"}
    )
    infer = infer_operator(poll_interval_s=0.01)
    delete = DeleteClusterOperator(task_id="delete", cluster_id="c")
    assert built == [], "never at construction: Airflow serializes and copies operators first"

    cluster_id = create.execute(create_context())  # find, create, wait: three backend calls
    infer.cluster_id = cluster_id
    infer.execute(infer_context(Store()))  # submit, status polls, links, report
    delete.cluster_id = cluster_id
    delete.execute({})
    assert built == ["spark_triton_default"] * 3


def test_a_copy_shares_the_backend_and_a_new_conn_id_gets_its_own(built: list[str]) -> None:
    op = DeleteClusterOperator(task_id="delete", cluster_id="c")
    backend = op.backend
    assert copy.deepcopy(op).backend is backend and built == ["spark_triton_default"]
    op.conn_id = "other"  # a template rendered to another connection
    op.backend.delete_cluster("c")
    assert built == ["spark_triton_default", "other"]
