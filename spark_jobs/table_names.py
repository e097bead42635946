"""How a table argument is told apart: a Unity Catalog ``catalog.schema.table`` name or a path/URI.

One pattern for both sides: the job reads and writes a name with ``spark.table``/``saveAsTable``,
the Airflow side turns it into the Databricks provider's asset and lineage names. Dependency-free,
so the Airflow side imports it without pyspark.
"""

from __future__ import annotations

import re

# Three dot-separated identifiers, each plain (letters, digits, _ and -) or back-quoted; no path
# separator and no scheme.
_PART = r"(?:`[^`]+`|[A-Za-z0-9_-]+)"
TABLE_NAME = re.compile(rf"^({_PART})\.({_PART})\.({_PART})$")


def table_name_parts(table: str) -> tuple[str, str, str] | None:
    """``(catalog, schema, table)`` as written (back-quotes kept), or None for a path or URI."""
    m = TABLE_NAME.match(str(table).strip())
    return (m.group(1), m.group(2), m.group(3)) if m else None
