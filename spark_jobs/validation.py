"""Row checks that decide, before any inference, which rows are scored and which are rejected.

Problems with the table (a missing column, a column of the wrong type) fail the job with a message
naming the column; problems with one row put that row in the rejects table with its reason. Every
check is a Spark SQL expression so it runs where the data is, not on the driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyspark.sql import Column, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs.models.base import ServedModel, TensorSpec

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

REJECT_REASON = "reject_reason"
# What the reason leaves out for one row (which key a duplicate repeats), kept in the rejects table.
# Reasons are kinds, the same text for every row with the problem, so that a report can count them.
REJECT_DETAIL = "reject_detail"


class InputSchemaError(ValueError):
    """The input table cannot be scored at all; the message names the table and column."""


_NUMERIC = (T.FloatType, T.DoubleType, T.IntegerType, T.LongType, T.ShortType, T.DecimalType)


def check_schema(
    df: DataFrame, table: str, key_column: str, columns: tuple[str, ...], model: ServedModel
) -> None:
    fields = {f.name: f.dataType for f in df.schema.fields}
    for name in (key_column, *columns):
        if name not in fields:
            raise InputSchemaError(
                f"input table {table} has no column {name!r} (columns: {', '.join(sorted(fields))})"
            )
    if len(columns) != len(model.inputs):
        raise InputSchemaError(
            f"model {model.name} takes {len(model.inputs)} input(s) "
            f"({', '.join(t.name for t in model.inputs)}) but input_columns names {len(columns)}: {list(columns)}"
        )
    for column, spec in zip(columns, model.inputs, strict=True):
        dtype = fields[column]
        if spec.is_text and not isinstance(dtype, T.StringType | T.BinaryType):
            raise InputSchemaError(
                f"input table {table} column {column!r} is {dtype.simpleString()}, model input {spec.name!r} needs text"
            )
        if not spec.is_text:
            element = dtype.elementType if isinstance(dtype, T.ArrayType) else dtype
            if not isinstance(element, _NUMERIC):
                raise InputSchemaError(
                    f"input table {table} column {column!r} is {dtype.simpleString()}, "
                    f"model input {spec.name!r} needs numbers"
                )
            values = 1
            for dim in spec.shape:
                values *= dim
            if values != 1 and not isinstance(dtype, T.ArrayType):
                # A scalar column cannot fill a vector input: every row would fail in the predict
                # function's reshape, on the cluster, after the servers started.
                raise InputSchemaError(
                    f"input table {table} column {column!r} is {dtype.simpleString()}, "
                    f"model input {spec.name!r} needs an array of {values} numbers (shape {list(spec.shape)})"
                )


def _text_reason(col: Column, name: str, spec: TensorSpec, binary: bool) -> Column:
    checks = [(col.isNull(), f"{name} is null")]
    text = col
    if binary:
        checks.append((~F.expr(f"is_valid_utf8(`{name}`)"), f"{name} is not valid UTF-8"))
        text = col.cast("string")
    checks += [
        (F.length(text) == 0, f"{name} is empty"),
        (text.rlike(r"(?U)^\s*$"), f"{name} is whitespace only"),  # Spark's trim() keeps tabs
    ]
    if spec.max_bytes:
        checks.append((F.octet_length(col) > spec.max_bytes, f"{name} is longer than {spec.max_bytes} bytes"))
    return _first_reason(checks)


def _numeric_reason(col: Column, name: str, spec: TensorSpec, dtype: T.DataType) -> Column:
    checks = [(col.isNull(), f"{name} is null")]
    expected = 1
    for dim in spec.shape:
        expected *= dim
    if isinstance(dtype, T.ArrayType):
        checks.append((F.exists(col, lambda x: x.isNull()), f"{name} has a null element"))
        if expected > 0:
            checks.append(
                (F.size(col) != expected, f"{name} has the wrong shape (expected {expected} values)")
            )
        finite = F.forall(col, lambda x: ~F.isnan(x) & (F.abs(x) != float("inf")))
        checks.append((~finite, f"{name} has NaN or infinite values"))
    else:
        value = col.cast("double")
        checks.append((F.isnan(value) | (F.abs(value) == float("inf")), f"{name} is NaN or infinite"))
    return _first_reason(checks)


def _first_reason(checks: list[tuple[Column, str]]) -> Column:
    expr = None
    for condition, reason in reversed(checks):
        expr = F.when(condition, F.lit(reason)).otherwise(expr if expr is not None else F.lit(None))
    return expr


def with_reject_reason(
    df: DataFrame, key_column: str, columns: tuple[str, ...], model: ServedModel
) -> DataFrame:
    """Adds ``reject_reason`` (null for rows to score): the first problem found in key or inputs, as a
    kind (``duplicate id``, ``text is null``); and ``reject_detail``, what the kind leaves out of a
    row's problem (``duplicate id 6``), else null."""
    fields = {f.name: f.dataType for f in df.schema.fields}
    key = F.col(key_column)
    reasons: list[Column] = []
    for column, spec in zip(columns, model.inputs, strict=True):
        col = F.col(column)
        if spec.is_text:
            reasons.append(_text_reason(col, column, spec, isinstance(fields[column], T.BinaryType)))
        else:
            reasons.append(_numeric_reason(col, column, spec, fields[column]))
    key_seen = F.row_number().over(
        Window.partitionBy(key).orderBy(*[F.col(c).asc_nulls_last() for c in columns])
    )
    duplicate = key.isNotNull() & (key_seen > 1)
    reason = F.coalesce(
        F.when(key.isNull(), F.lit(f"{key_column} is null")),
        F.when(duplicate, F.lit(f"duplicate {key_column}")),
        *reasons,
    )
    detail = F.when(duplicate, F.concat(F.lit(f"duplicate {key_column} "), key.cast("string")))
    return df.withColumn(REJECT_REASON, reason).withColumn(REJECT_DETAIL, detail)
