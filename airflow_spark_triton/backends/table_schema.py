"""An input table's columns as ``{name: Spark JSON type}``, read on the Airflow side before any cluster exists.

The pre-flight check (:mod:`airflow_spark_triton.preflight`) compares them with the model's inputs
and the job's key and date columns (``spark_jobs.columns.check_table``). Where a table lives decides
who can read its schema without Spark: delta-rs for a Delta table on a path this machine reaches,
Unity Catalog's table info for a ``catalog.schema.table`` on Databricks. Both describe a column with
Spark's own type JSON, which is what the job sees once Spark reads the table.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_spark_triton.errors import BackendConfigError
from spark_jobs.table_names import table_name_parts

if TYPE_CHECKING:
    from databricks.sdk.service.catalog import TableInfo

log = logging.getLogger(__name__)


class TableNotFound(BackendConfigError):
    """The input table does not exist; the message names it."""


def delta_rs_columns(table: str, *, must_exist: bool = True) -> dict[str, Any] | None:
    """A Delta table's columns through delta-rs; None when delta-rs is not installed, the name is a
    catalog name, or (``must_exist=False``) the path is not on this machine."""
    if table_name_parts(table) is not None:
        return None
    try:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError
    except ImportError:
        return None
    local = "://" not in table
    if local and not must_exist and not Path(table).exists():
        return None
    try:
        schema = DeltaTable(table if not local else str(Path(table).absolute())).schema()
    except TableNotFoundError as exc:
        raise TableNotFound(f"input table {table} does not exist or is not a Delta table") from exc
    except Exception as exc:
        if local:
            raise
        # Storage this worker cannot reach as the job does (credentials, network): the job checks it.
        log.warning("Could not read the schema of %s before the run (%s); the job checks it", table, exc)
        return None
    return {field["name"]: field["type"] for field in json.loads(schema.to_json())["fields"]}


def unity_catalog_columns(info: TableInfo) -> dict[str, Any]:
    """A Unity Catalog table's columns: each ``ColumnInfo.type_json`` is Spark's StructField JSON;
    a column without one is named by ``type_text`` (``string``, ``array<float>``) as Spark names it."""
    columns: dict[str, Any] = {}
    for column in info.columns or []:
        if not column.name:
            continue
        if column.type_json:
            columns[column.name] = json.loads(column.type_json).get("type")
        else:
            columns[column.name] = _type_from_text(column.type_text or "")
    return columns


def _type_from_text(text: str) -> Any:
    """``array<float>`` -> Spark's JSON ``{"type": "array", "elementType": "float", ...}``; scalars as is."""
    text = text.strip().lower()
    if text.startswith("array<") and text.endswith(">"):
        return {"type": "array", "elementType": _type_from_text(text[6:-1]), "containsNull": True}
    aliases = {"int": "integer", "bigint": "long", "smallint": "short", "tinyint": "byte", "real": "float"}
    return aliases.get(text, text)
