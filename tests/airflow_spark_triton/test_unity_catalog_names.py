"""Unity Catalog names (``catalog.schema.table``): the Databricks provider's asset and lineage naming.

The expected values are computed with the Databricks provider's own functions (``create_asset``,
``convert_asset_to_openlineage``), so an asset of this package and one of the provider's operators
for the same table are the same asset, and never ``file:///<cwd>/main.default.t``.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from airflow_spark_triton.assets import delta_table_asset, table_uri, unity_catalog_name
from airflow_spark_triton.lineage import dataset_name
from airflow_spark_triton.operators.inference import TritonInferenceOperator
from spark_jobs.contract import RunReport

HOST = "adb-1234567890123456.7.azuredatabricks.net"


@pytest.mark.parametrize(
    ("table", "parts"),
    [
        ("main.default.documents", ("main", "default", "documents")),
        ("Main.Sales.Orders", ("main", "sales", "orders")),
        ("`my-cat`.default.t", ("my-cat", "default", "t")),
        ("/data/main.default.t", None),
        ("s3://bucket/main.default.t", None),
        ("default.t", None),
        ("documents", None),
    ],
)
def test_a_three_part_name_is_a_table_name_and_anything_with_a_path_is_not(table, parts):
    assert unity_catalog_name(table) == parts


def test_the_asset_uri_of_a_uc_name_is_the_databricks_providers():
    from airflow.providers.databricks.assets.databricks import create_asset

    expected = create_asset(host=HOST, catalog="main", schema="default", table="documents").uri
    assert table_uri("main.default.documents", f"https://{HOST}/") == expected
    asset = delta_table_asset("main.default.documents", name="documents", workspace_host=HOST)
    assert (asset.name, asset.uri) == ("documents", expected)
    assert "file://" not in asset.uri


def test_a_uc_name_without_the_workspace_host_is_refused_not_taken_for_a_path():
    with pytest.raises(ValueError, match=r"'main\.default\.t' is a Unity Catalog name.*workspace_host"):
        table_uri("main.default.t")


def test_paths_keep_their_file_uri():
    assert table_uri("/data/main.default.t") == "file:///data/main.default.t"
    assert table_uri("s3://bucket/t") == "s3://bucket/t"


def test_lineage_of_a_uc_name_matches_the_providers_converter():
    from airflow.providers.databricks.assets.databricks import convert_asset_to_openlineage

    from airflow_spark_triton.lineage import openlineage_available

    if openlineage_available():  # the converter returns None without the OpenLineage provider
        asset = delta_table_asset("main.default.documents", workspace_host=HOST)
        expected = convert_asset_to_openlineage(asset, None)
        assert dataset_name("main.default.documents", HOST) == (expected.namespace, expected.name)
    assert dataset_name("main.default.documents", HOST) == (f"databricks://{HOST}", "main.default.documents")
    assert dataset_name("main.default.documents") == ("databricks", "main.default.documents")


def test_the_operator_names_uc_tables_in_its_workspace(monkeypatch):
    conn = {"conn_type": "databricks", "host": f"https://{HOST}", "password": "dapi-not-used"}
    monkeypatch.setenv("AIRFLOW_CONN_DBX_UC", json.dumps(conn))
    op = TritonInferenceOperator(
        task_id="t",
        cluster_id="c",
        conn_id="dbx_uc",
        input_table="main.raw.documents",
        output_table="main.ml.embeddings",
        model="m:M",
        logical_date="2026-01-01",
    )
    lineage = op.get_openlineage_facets_on_complete(None)
    namespace = f"databricks://{HOST}"
    assert [(d.namespace, d.name) for d in lineage.inputs] == [(namespace, "main.raw.documents")]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [
        (namespace, "main.ml.embeddings"),
        (namespace, "main.ml.embeddings_rejects"),
    ]

    asset = delta_table_asset("main.ml.embeddings", name="embeddings", workspace_host=HOST)
    op.outlets = [asset]
    events = {asset: SimpleNamespace(extra=None)}
    report = RunReport(
        "r", "2026-01-01", "m:M", "main.raw.documents", "main.ml.embeddings", None, rows_scored=3,
        model_version="3",
    )  # fmt: skip
    op._annotate_outlets({"outlet_events": events}, report)
    assert events[asset].extra["table_uri"] == asset.uri == f"databricks://{HOST}/main/ml/embeddings"
    assert events[asset].extra["model_version"] == "3"  # the registry version the run served


def test_the_job_side_refuses_to_take_a_uc_name_for_a_path():
    from spark_jobs.delta_io import DeltaRsIO, DeltaSparkIO, is_table_name

    assert is_table_name("main.default.t") and not is_table_name("/x/main.default.t")
    assert not DeltaSparkIO._is_path("main.default.t")  # read by name, written with saveAsTable
    with pytest.raises(ValueError, match=r"'main\.default\.t' is a catalog name"):
        DeltaRsIO(None).table_version("main.default.t")
