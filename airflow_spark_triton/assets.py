"""Airflow Assets for the Delta tables the operators write, so downstream DAGs can be scheduled on them.

A table is named by a path (``/data/embeddings``), a URI (``s3://bucket/t``, ``dbfs:/...``) or, on
Databricks, a Unity Catalog name (``catalog.schema.table``). The asset URI is ``file://<absolute
path>`` for a local path, the URI as given for a URI, and the Databricks provider's form
``databricks://<workspace host>/<catalog>/<schema>/<table>`` for a Unity Catalog name (the form its
``UnityTableIdentity`` and OpenLineage converter use, so assets of this package and of the Databricks
provider's operators are the same asset). A UC name is never taken for a relative path: that made
``file:///<cwd>/main.default.t``, an asset no producer on Databricks ever updates.

Outlets must be known when the DAG file is parsed, but ``output_table`` is usually templated
(``{{ params.output_table }}``). So a DAG declares one *stable* asset per logical output, built from
the parameter's default (see :func:`delta_table_asset`), and the operator attaches what the run
actually wrote (table, date, Delta version, counts) to the asset event's ``extra``. Consumers read
the table and date from the triggering event, which stays correct when a run overrides the table.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from spark_jobs.table_names import table_name_parts

if TYPE_CHECKING:
    from airflow.sdk import Asset

ASSET_GROUP = "delta_table"
DATABRICKS_SCHEME = "databricks"


def unity_catalog_name(table: str) -> tuple[str, str, str] | None:
    """``(catalog, schema, table)`` of a ``catalog.schema.table`` name (back-quotes removed), or None
    for a path or URI. Lower-cased, as Unity Catalog stores names and the Databricks provider keys them."""
    parts = table_name_parts(table)  # the job reads a name by the same pattern
    if parts is None:
        return None
    catalog, schema, name = (part.strip("`").lower() for part in parts)
    return catalog, schema, name


def workspace_host(host: str) -> str:
    """The bare host of a Databricks workspace URL or host (``https://x.cloud.databricks.com/`` -> host)."""
    host = str(host).strip()
    parsed = urlsplit(host if "://" in host else f"https://{host}")
    return (parsed.hostname or "").lower()


def _uc_uri(parts: tuple[str, str, str], host: str | None, table: str) -> str:
    if not host:
        raise ValueError(
            f"table {table!r} is a Unity Catalog name (catalog.schema.table): its asset URI "
            "databricks://<workspace host>/<catalog>/<schema>/<table> needs the workspace host; pass "
            "workspace_host= (the host of the Databricks connection)"
        )
    catalog, schema, name = (quote(p, safe="") for p in parts)
    return f"{DATABRICKS_SCHEME}://{workspace_host(host)}/{catalog}/{schema}/{name}"


def table_uri(table: str, workspace_host: str | None = None) -> str:
    """The URI of a Delta table given as a path, URI or Unity Catalog name.

    Local paths become ``file:///abs/path``; ``catalog.schema.table`` becomes
    ``databricks://<workspace_host>/catalog/schema/table`` (``workspace_host`` required then).
    """
    parts = unity_catalog_name(table)
    if parts is not None:
        return _uc_uri(parts, workspace_host, str(table))
    table = str(table).rstrip("/") or "/"
    scheme = urlsplit(table).scheme
    if scheme and len(scheme) > 1:  # "C:\\..." is a path, not a URI
        return table
    return "file://" + quote(os.path.abspath(os.path.expanduser(table)))


def delta_table_asset(table: str, name: str | None = None, workspace_host: str | None = None) -> Asset:
    """A stable Asset for a Delta table: ``name`` (default: the URI) is what consumers schedule on.

    For a Unity Catalog name pass ``workspace_host`` (a DAG file should not look a connection up
    while it is parsed, so the host is given, not read from the connection).
    """
    from airflow.sdk import Asset

    uri = table_uri(table, workspace_host)
    return Asset(name=name or uri, uri=uri, group=ASSET_GROUP)
