"""The ``where`` setting: a SQL predicate that selects the input rows a run scores, checked to be data.

``where`` is text a DAG may template from a trigger param (``where="lang = '{{ params.lang }}'"``),
and whoever may trigger a DAG may not run code (docs/deploying.md, "Trigger params"). Spark SQL
expressions can: ``reflect``/``java_method`` call any static Java method, a subquery reads any
table or file (``id IN (SELECT id FROM parquet.`/etc`)``), a catalog function runs its owner's
code, ``IDENTIFIER('reflect')(...)`` names a function at run time, and the XML functions parse
documents that may name outside entities. So before it touches the input, the predicate is parsed
with the session's own Spark SQL parser and every node of the tree is checked:

* column references, literals, operators, ``CASE``, ``CAST``, ``IN (...)`` lists, lambdas: allowed;
* functions: only Spark's built-in ones (one-part names) of the groups in :data:`ALLOWED_GROUPS`
  (string, math, date, array/map/struct, predicates, conditionals, conversions, hashes, JSON): no
  ``misc_funcs`` (reflection, ``input_file_name``, users, AES), no XML, no catalog or temporary
  functions, no UDFs;
* subqueries (``IN (SELECT ...)``, ``EXISTS``, scalar), ``IDENTIFIER(...)``, parameter markers and
  anything else: refused, naming the part.

Then the analyzer resolves it against the input's rows alone (a reference to anything else fails
there, naming the column), and it must be a boolean. The check needs the session's JVM: a Spark
Connect session has none, and refuses ``where``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

#: Groups of Spark's built-in functions (``ExpressionInfo.getGroup()``) a ``where`` may call.
ALLOWED_GROUPS = frozenset(
    {
        "array_funcs",
        "bitwise_funcs",
        "collection_funcs",
        "conditional_funcs",
        "conversion_funcs",
        "datetime_funcs",
        "hash_funcs",
        "json_funcs",
        "lambda_funcs",
        "map_funcs",
        "math_funcs",
        "predicate_funcs",
        "string_funcs",
        "struct_funcs",
    }
)
_EXPRESSIONS = "org.apache.spark.sql.catalyst.expressions."
_ANALYSIS = "org.apache.spark.sql.catalyst.analysis."
# Nodes from the analysis package the parser makes for plain expressions: columns, functions, a[0].
_UNRESOLVED = frozenset({"UnresolvedAttribute", "UnresolvedFunction", "UnresolvedExtractValue"})
# Expression nodes that are not plain expressions: they read tables, or pick names at run time.
_REFUSED = ("Subquery", "ListQuery", "Exists", "Identifier", "UDF", "Reflection", "OuterReference")


class RowFilterError(ValueError):
    """The ``where`` setting is not a predicate over the input's columns; the message says which part."""


def filter_rows(spark: SparkSession, df: DataFrame, where: str | None, table: str) -> DataFrame:
    """``df``'s rows for which ``where`` holds (all of them when it is None), once it passed the checks."""
    if where is None:
        return df
    from pyspark.errors import PySparkException
    from pyspark.sql import functions as F

    check_predicate(spark, where, df.columns)
    try:
        filtered = df.where(F.expr(where))
        filtered.schema  # noqa: B018 - analysis happens here: unknown columns, non-boolean results
    except PySparkException as exc:
        first = str(exc).strip().splitlines()[0]
        raise RowFilterError(
            f"job setting 'where' ({where!r}) does not apply to input table {table}: {first}"
        ) from exc
    return filtered


def check_predicate(spark: SparkSession, where: str, columns: list[str]) -> None:
    """Parse ``where`` with Spark's parser and refuse any node that is not plain data (module
    docstring); a name must be one of ``columns`` (Spark would otherwise resolve ``current_user``)."""
    try:
        jsession = spark._jsparkSession
        jvm = spark._jvm
    except Exception as exc:
        raise RowFilterError(
            "job setting 'where' needs a Spark session with a JVM to check the predicate (a Spark "
            "Connect session has none)"
        ) from exc
    if jsession is None or jvm is None:
        raise RowFilterError("job setting 'where' needs a Spark session with a JVM to check the predicate")
    try:
        tree = jsession.sessionState().sqlParser().parseExpression(where)
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RowFilterError(
            f"job setting 'where' is not a SQL expression: {message} (got {where!r})"
        ) from exc
    registry = jvm.org.apache.spark.sql.catalyst.analysis.FunctionRegistry.builtin()
    identifier = jvm.org.apache.spark.sql.catalyst.FunctionIdentifier
    known = {c.lower() for c in columns}
    pending = [tree]
    while pending:
        node = pending.pop()
        _check_node(node, registry, identifier, where)
        if node.getClass().getName() == _ANALYSIS + "UnresolvedAttribute":
            name = str(_seq(node.nameParts())[0])
            if name.lower() not in known:
                raise RowFilterError(
                    f"job setting 'where' may only name the input's columns ({', '.join(columns)}); "
                    f"{name!r} is not one of them (got {where!r})"
                )
        children = node.children().iterator()
        while children.hasNext():
            pending.append(children.next())


def _check_node(node: Any, registry: Any, identifier: Any, where: str) -> None:
    cls = node.getClass().getName()
    name = cls.rsplit(".", 1)[-1]
    plain = cls.startswith(_EXPRESSIONS) and "." not in cls.removeprefix(_EXPRESSIONS)
    if not (plain or (cls.startswith(_ANALYSIS) and name in _UNRESOLVED)) or any(r in name for r in _REFUSED):
        raise RowFilterError(
            f"job setting 'where' may only use the input's columns, literals, operators and built-in "
            f"functions; {_describe(name)} {str(node.toString())[:200]!r} is not "
            f"allowed (got {where!r})"
        )
    if name != "UnresolvedFunction":
        return
    parts = [str(p) for p in _seq(node.nameParts())]
    function = ".".join(parts)
    info = registry.lookupFunction(identifier.apply(parts[-1].lower())) if len(parts) == 1 else None
    group = str(info.get().getGroup()) if info is not None and info.isDefined() else None
    if group not in ALLOWED_GROUPS:
        why = (
            "is not one of Spark's built-in functions" if group is None else f"is a built-in of group {group}"
        )
        raise RowFilterError(
            f"job setting 'where' may only call Spark's built-in functions of the groups "
            f"{', '.join(sorted(ALLOWED_GROUPS))}; {function!r} {why} (got {where!r})"
        )


def _describe(name: str) -> str:
    if any(part in name for part in ("Subquery", "ListQuery", "Exists")):
        return "a subquery"
    if "Identifier" in name:
        return "IDENTIFIER(...)"
    return f"the {name} node"


def _seq(seq: Any) -> list[Any]:
    items, iterator = [], seq.iterator()
    while iterator.hasNext():
        items.append(iterator.next())
    return items
