"""Airflow Assets for the Delta tables the operators write, so downstream DAGs can be scheduled on them.

A table is named by a path (``/data/embeddings``) or a URI (``s3://bucket/t``, ``dbfs:/...``). The
asset URI is ``file://<absolute path>`` for a local path and the URI as given otherwise.

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

if TYPE_CHECKING:
    from airflow.sdk import Asset

ASSET_GROUP = "delta_table"


def table_uri(table: str) -> str:
    """The URI of a Delta table given as a path or URI: local paths become ``file:///abs/path``."""
    table = str(table).rstrip("/") or "/"
    scheme = urlsplit(table).scheme
    if scheme and len(scheme) > 1:  # "C:\\..." is a path, not a URI
        return table
    return "file://" + quote(os.path.abspath(os.path.expanduser(table)))


def delta_table_asset(table: str, name: str | None = None) -> Asset:
    """A stable Asset for a Delta table: ``name`` (default: the URI) is what consumers schedule on."""
    from airflow.sdk import Asset

    uri = table_uri(table)
    return Asset(name=name or uri, uri=uri, group=ASSET_GROUP)
