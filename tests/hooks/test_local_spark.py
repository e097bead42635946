"""The ``spark_triton_local`` connection's hook: the settings the local backend reads from it."""

from __future__ import annotations

import sys
from types import SimpleNamespace

from airflow_spark_triton.hooks.local_spark import LocalSparkHook
from airflow_spark_triton.runs.records import HOME_ENV


def test_the_hook_is_the_connection_types_hook():
    assert LocalSparkHook.conn_type == "spark_triton_local"
    assert LocalSparkHook.conn_name_attr == "spark_triton_conn_id"
    assert LocalSparkHook.default_conn_name == "spark_triton_default"
    assert set(LocalSparkHook.get_ui_field_behaviour()["hidden_fields"]) == {
        "host", "schema", "login", "password", "port"
    }  # fmt: skip


def test_settings_come_from_the_connection_then_env_then_default(tmp_path, monkeypatch):
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "from-env"))
    assert LocalSparkHook(None).home == tmp_path / "from-env"
    assert LocalSparkHook(None).python == sys.executable
    assert LocalSparkHook(None).worker_memory is None
    monkeypatch.delenv(HOME_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert LocalSparkHook(None).home == tmp_path / "user" / ".airflow_spark_triton"

    extras = {"home": str(tmp_path / "from-conn"), "python": "/opt/py/bin/python", "worker_memory": "3g"}
    monkeypatch.setattr(
        LocalSparkHook,
        "get_connection",
        classmethod(lambda cls, conn_id: SimpleNamespace(extra_dejson=extras)),
    )
    hook = LocalSparkHook("my_local")
    assert (hook.home, hook.python, hook.worker_memory) == (
        tmp_path / "from-conn",
        "/opt/py/bin/python",
        "3g",
    )


def test_a_missing_connection_means_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "env-home"))
    hook = LocalSparkHook("spark_triton_no_such_connection")
    assert hook.extras == {}
    assert hook.home == tmp_path / "env-home"
