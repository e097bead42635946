"""RemoveExpiredOperator: the retention period from ``[spark_triton] retention_days``, each connection's
backend asked once, counts (not paths) in XCom; the DAG that runs it daily parses."""

from __future__ import annotations

import datetime as dt

import pytest

from airflow_spark_triton.backends.base import BackendConfigError
from airflow_spark_triton.operators import retention
from airflow_spark_triton.operators.retention import RemoveExpiredOperator, configured_retention_days

OPTION_ENV = "AIRFLOW__SPARK_TRITON__RETENTION_DAYS"


class Recorder:
    def __init__(self, conn_id: str, calls: list[tuple[str, dt.timedelta]]) -> None:
        self.conn_id, self.calls = conn_id, calls

    def remove_expired(self, older_than: dt.timedelta) -> list[str]:
        self.calls.append((self.conn_id, older_than))
        return [f"/state/{self.conn_id}/{n}" for n in range(12)]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dt.timedelta]]:
    seen: list[tuple[str, dt.timedelta]] = []
    monkeypatch.setattr(retention, "get_backend", lambda conn_id: Recorder(conn_id, seen))
    return seen


def test_the_configured_period_applies_to_every_connection(calls, monkeypatch):
    monkeypatch.setenv(OPTION_ENV, "7")
    operator = RemoveExpiredOperator(task_id="remove_expired", conn_ids=["spark_triton_default", "dbx"])
    assert operator.execute({}) == {"spark_triton_default": 12, "dbx": 12}
    assert calls == [("spark_triton_default", dt.timedelta(days=7)), ("dbx", dt.timedelta(days=7))]


def test_the_default_is_thirty_days_and_the_dag_author_may_set_another(calls, monkeypatch):
    monkeypatch.delenv(OPTION_ENV, raising=False)
    assert configured_retention_days() == 30
    RemoveExpiredOperator(task_id="r", retention_days=2).execute({})
    assert calls == [("spark_triton_default", dt.timedelta(days=2))]


@pytest.mark.parametrize("value", ["0", "-3", "soon", "1.5"])
def test_a_bad_period_fails_naming_the_setting(calls, monkeypatch, value):
    monkeypatch.setenv(OPTION_ENV, value)
    with pytest.raises(BackendConfigError, match=r"\[spark_triton\] retention_days must be a whole number"):
        RemoveExpiredOperator(task_id="r").execute({})
    with pytest.raises(BackendConfigError, match="retention_days must be a whole number"):
        RemoveExpiredOperator(task_id="r", retention_days=0).execute({})
    assert calls == []


def test_the_retention_dag_runs_the_operator_daily(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import REPO

    bag = DagBag(dag_folder=str(REPO / "dags" / "spark_triton_retention.py"))
    assert bag.import_errors == {}
    dag = bag.get_dag("spark_triton_retention")
    (task,) = dag.tasks
    assert isinstance(task, RemoveExpiredOperator) and task.conn_ids == ["spark_triton_default"]
    assert task.retention_days is None  # the deployment's [spark_triton] retention_days
    assert not dag.params  # nothing a trigger's conf could point elsewhere
