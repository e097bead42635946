"""Which backend a connection selects, and what a missing connection means (issue #11)."""

from __future__ import annotations

import asyncio
import json
from unittest import mock

import pytest
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from airflow_spark_triton.backends import registry
from airflow_spark_triton.backends.databricks.backend import DatabricksBackend
from airflow_spark_triton.backends.local.backend import LocalSparkBackend
from airflow_spark_triton.backends.registry import (
    DEFAULT_CONN_ID,
    BackendConnectionNotFound,
    aget_backend,
    connection_type,
    get_backend,
)
from airflow_spark_triton.backends.spark_submit.backend import SparkSubmitBackend

CONNECTIONS = {
    "st_databricks": (
        {"conn_type": "databricks", "host": "https://x.cloud.databricks.com"},
        DatabricksBackend,
    ),
    "st_spark": ({"conn_type": "spark", "host": "spark://127.0.0.1", "port": 7077}, SparkSubmitBackend),
    "st_local": ({"conn_type": "spark_triton_local", "extra": {"home": "/tmp/x"}}, LocalSparkBackend),
}


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(f"AIRFLOW_CONN_{DEFAULT_CONN_ID.upper()}", raising=False)
    for conn_id, (connection, _) in CONNECTIONS.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
    monkeypatch.setenv("AIRFLOW_CONN_ST_ODD", json.dumps({"conn_type": "http", "host": "x"}))


@pytest.fixture
def warnings(monkeypatch: pytest.MonkeyPatch) -> mock.Mock:
    log = mock.Mock()
    monkeypatch.setattr(registry, "log", log)
    registry._warn_local_fallback.cache_clear()  # a fresh process, as each Airflow task is
    return log.warning


@pytest.mark.parametrize("conn_id", sorted(CONNECTIONS))
def test_the_connection_type_selects_the_backend(connections, conn_id):
    expected = CONNECTIONS[conn_id][1]
    hook = get_backend(conn_id)
    assert type(hook) is expected
    assert getattr(hook, expected.conn_name_attr) == conn_id
    assert type(asyncio.run(aget_backend(conn_id))) is expected


def test_a_missing_default_connection_means_the_local_backend_with_one_warning(connections, warnings):
    """Once per process (per task), however often the task looks its backend up (issue #27: the
    notice was in the task log five times)."""
    assert connection_type(DEFAULT_CONN_ID, warn=False) == "spark_triton_local"
    warnings.assert_not_called()  # the run page in the API server looks runs up quietly
    assert connection_type(DEFAULT_CONN_ID) == "spark_triton_local"
    assert isinstance(get_backend(), LocalSparkBackend)
    assert isinstance(asyncio.run(aget_backend()), LocalSparkBackend)
    assert warnings.call_count == 1
    assert DEFAULT_CONN_ID in warnings.call_args.args


@pytest.mark.parametrize("lookup", ["sync", "async"])
def test_any_other_missing_connection_fails_naming_it(connections, warnings, lookup):
    with pytest.raises(BackendConnectionNotFound) as raised:
        if lookup == "sync":
            get_backend("spark_triton_typo")
        else:
            asyncio.run(aget_backend("spark_triton_typo"))
    assert isinstance(raised.value, AirflowNotFoundException)
    message = str(raised.value)
    assert "'spark_triton_typo' does not exist" in message
    assert f"Only {DEFAULT_CONN_ID!r} falls back" in message
    warnings.assert_not_called()


def test_an_unsupported_connection_type_is_named(connections):
    with pytest.raises(ValueError, match=r"connection 'st_odd' has type 'http'"):
        get_backend("st_odd")


def test_the_async_lookup_makes_no_blocking_connection_call(connections, monkeypatch):
    def blocking(*_args, **_kwargs):
        raise AssertionError("synchronous connection lookup inside the event loop")

    monkeypatch.setattr(BaseHook, "get_connection", classmethod(blocking))
    assert isinstance(asyncio.run(aget_backend("st_spark")), SparkSubmitBackend)
    with pytest.raises(AssertionError, match="synchronous"):
        get_backend("st_spark")
