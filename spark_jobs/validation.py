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

from spark_jobs.columns import InputSchemaError, check_table
from spark_jobs.models.base import IMAGE, ServedModel, TensorSpec

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from spark_jobs.contract import InferenceJobConfig

__all__ = ["REJECT_DETAIL", "REJECT_REASON", "InputSchemaError", "check_schema", "with_reject_reason"]

REJECT_REASON = "reject_reason"
# What the reason leaves out for one row (which key a duplicate repeats), kept in the rejects table.
# Reasons are kinds, the same text for every row with the problem, so that a report can count them.
REJECT_DETAIL = "reject_detail"


def check_schema(df: DataFrame, table: str, job: InferenceJobConfig, model: ServedModel) -> None:
    """The rules of :func:`spark_jobs.columns.check_table`, applied to ``df``'s schema."""
    check_table({f.name: f.dataType.jsonValue() for f in df.schema.fields}, table, job, model)


# Where each image format's signature starts (1-based, as Spark's substring counts) and what it is.
IMAGE_SIGNATURES = (
    (1, b"\x89PNG\r\n\x1a\n"), (1, b"\xff\xd8\xff"), (1, b"GIF87a"), (1, b"GIF89a"), (1, b"BM"),
    (9, b"WEBP"), (1, b"II*\x00"), (1, b"MM\x00*"),
)  # fmt: skip


def _binary_reason(col: Column, name: str, spec: TensorSpec) -> Column:
    """Raw bytes: present, within ``max_bytes`` and, for an image input, an image by its signature (a
    row the model could not decode would fail its whole batch on the server)."""
    checks = [(col.isNull(), f"{name} is null"), (F.octet_length(col) == 0, f"{name} is empty")]
    if spec.max_bytes:
        checks.append((F.octet_length(col) > spec.max_bytes, f"{name} is longer than {spec.max_bytes} bytes"))
    if spec.content == IMAGE:
        signed = [
            F.substring(col, start, len(magic)) == F.lit(bytearray(magic))
            for start, magic in IMAGE_SIGNATURES
        ]
        is_image = signed[0]
        for condition in signed[1:]:
            is_image = is_image | condition
        checks.append((~is_image, f"{name} is not a PNG, JPEG, GIF, BMP, WEBP or TIFF image"))
    return _first_reason(checks)


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
    expected = spec.values_per_row or 0
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
        if spec.is_binary:
            reasons.append(_binary_reason(col, column, spec))
        elif spec.is_text:
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
