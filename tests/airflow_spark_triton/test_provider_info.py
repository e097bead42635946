"""Provider registration: the metadata validates against Airflow's own schema and the CLI sees it."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import airflow
import jsonschema
import pytest

from airflow_spark_triton import get_provider_info
from airflow_spark_triton.provider_info import LOCAL_CONN_TYPE, PACKAGE

SCHEMA = Path(airflow.__file__).resolve().parent / "provider_info.schema.json"


def json_output(stdout: str):
    """The CLI's JSON document: its last line starting with '[' (warnings may be printed before it)."""
    return json.loads([line for line in stdout.splitlines() if line.startswith("[")][-1])


def airflow_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airflow", *args],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=180,
    )


def test_provider_info_validates_against_airflows_schema():
    info = get_provider_info()
    jsonschema.validate(info, json.loads(SCHEMA.read_text()))
    assert info["package-name"] == PACKAGE
    for key in ("integrations", "operators", "hooks", "triggers", "connection-types", "extra-links"):
        assert info[key], key
    hook_modules = {m for h in info["hooks"] for m in h["python-modules"]}
    assert "airflow_spark_triton.hooks.databricks_gpu" in hook_modules


def test_everything_the_provider_info_names_imports():
    from airflow.sdk import BaseHook, BaseOperatorLink

    info = get_provider_info()
    for section in ("operators", "hooks", "triggers"):
        for entry in info[section]:
            for module in entry["python-modules"]:
                importlib.import_module(module)
    for entry in info["connection-types"]:
        module, _, name = entry["hook-class-name"].rpartition(".")
        hook = getattr(importlib.import_module(module), name)
        assert issubclass(hook, BaseHook) and hook.conn_type == entry["connection-type"] == LOCAL_CONN_TYPE
        assert set(entry["conn-fields"]) == {"home", "python", "worker_memory"}
    for path in info["extra-links"]:
        module, _, name = path.rpartition(".")
        assert issubclass(getattr(importlib.import_module(module), name), BaseOperatorLink)
    from airflow.plugins_manager import AirflowPlugin

    for plugin in info["plugins"]:
        module, _, name = plugin["plugin-class"].rpartition(".")
        assert issubclass(getattr(importlib.import_module(module), name), AirflowPlugin)


def test_local_hook_reads_form_fields_with_or_without_prefix(airflow_db, monkeypatch):
    from airflow_spark_triton.hooks.local_spark import LocalSparkHook

    extra = {"extra__spark_triton_local__home": "/srv/st", "worker_memory": "2g"}
    monkeypatch.setenv(
        "AIRFLOW_CONN_ST_FORM_TEST", json.dumps({"conn_type": LOCAL_CONN_TYPE, "extra": extra})
    )
    hook = LocalSparkHook(spark_triton_conn_id="st_form_test")
    assert str(hook.home) == "/srv/st"
    assert hook.worker_memory == "2g"


@pytest.mark.usefixtures("airflow_db")
def test_airflow_providers_list_shows_the_provider():
    result = airflow_cli("providers", "list", "-o", "json")
    assert result.returncode == 0, result.stderr
    packages = {p["package_name"]: p for p in json_output(result.stdout)}
    assert PACKAGE in packages
    from airflow_spark_triton import __version__

    assert packages[PACKAGE]["version"] == __version__

    links = airflow_cli("providers", "links", "-o", "json")
    assert "airflow_spark_triton.links.InferenceRunLink" in links.stdout, links.stderr
    hooks = airflow_cli("providers", "hooks", "-o", "json")
    assert LOCAL_CONN_TYPE in hooks.stdout, hooks.stderr
    # The run pages' plugin loads through the package's entry point, with no user setup.
    plugins = {p["name"]: p for p in json_output(airflow_cli("plugins", "-o", "json").stdout)}
    assert plugins["spark_triton_runs"]["fastapi_apps"][0]["url_prefix"] == "/spark-triton"


@pytest.mark.usefixtures("airflow_db")
def test_airflow_connections_add_accepts_the_local_conn_type():
    extra = json.dumps({"home": "/tmp/spark_triton_cli", "worker_memory": "1g"})
    added = airflow_cli(
        "connections", "add", "spark_triton_cli_test", "--conn-type", LOCAL_CONN_TYPE, "--conn-extra", extra
    )
    assert added.returncode == 0, added.stderr
    assert "Successfully added" in added.stdout
    got = airflow_cli("connections", "get", "spark_triton_cli_test", "-o", "json")
    assert got.returncode == 0, got.stderr
    record = json_output(got.stdout)[0]
    assert record["conn_type"] == LOCAL_CONN_TYPE
    assert "/tmp/spark_triton_cli" in json.dumps(record)
    airflow_cli("connections", "delete", "spark_triton_cli_test")
