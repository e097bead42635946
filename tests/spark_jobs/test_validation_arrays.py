"""Row validation of ``array<float>`` model inputs (the digits classifier's 64 pixels)."""

from __future__ import annotations

import pytest
from pyspark.sql import types as T

from spark_jobs.contract import InferenceJobConfig
from spark_jobs.models.base import ServedModel, TensorSpec
from spark_jobs.validation import REJECT_REASON, InputSchemaError, check_schema, with_reject_reason

pytestmark = pytest.mark.slow

MODEL = ServedModel(
    "m", (TensorSpec("x", "float32", (4,)),), TensorSpec("y", "float32", (2,)), lambda o: None
)
SCHEMA = T.StructType([T.StructField("id", T.StringType()), T.StructField("x", T.ArrayType(T.FloatType()))])


def reasons(spark, rows, schema=SCHEMA, model=MODEL):
    df = spark.createDataFrame(rows, schema)
    out = with_reject_reason(df, "id", ("x",), model).collect()
    return {r["id"]: r[REJECT_REASON] for r in out}


def test_array_rows_with_wrong_shape_nan_inf_or_nulls_are_rejected(spark):
    got = reasons(
        spark,
        [
            ("ok", [1.0, 2.0, 3.0, 4.0]),
            ("short", [1.0, 2.0]),
            ("long", [1.0] * 5),
            ("empty", []),
            ("nan", [1.0, float("nan"), 3.0, 4.0]),
            ("inf", [1.0, float("-inf"), 3.0, 4.0]),
            ("null_el", [1.0, None, 3.0, 4.0]),
            ("null", None),
        ],
    )
    assert got == {
        "ok": None,
        "short": "x has the wrong shape (expected 4 values)",
        "long": "x has the wrong shape (expected 4 values)",
        "empty": "x has the wrong shape (expected 4 values)",
        "nan": "x has NaN or infinite values",
        "inf": "x has NaN or infinite values",
        "null_el": "x has a null element",
        "null": "x is null",
    }


def test_integer_arrays_are_checked_too(spark):
    schema = T.StructType(
        [T.StructField("id", T.StringType()), T.StructField("x", T.ArrayType(T.IntegerType()))]
    )
    got = reasons(spark, [("ok", [1, 2, 3, 4]), ("short", [1])], schema)
    assert got == {"ok": None, "short": "x has the wrong shape (expected 4 values)"}


def test_a_scalar_column_cannot_feed_a_vector_input(spark):
    df = spark.createDataFrame([("a", 1.0, "2026-11-24")], "id string, x double, date string")
    job = InferenceJobConfig("t", "t_out", "m:MODEL", "2026-11-24", input_columns=("x",))
    with pytest.raises(InputSchemaError, match="needs an array of 4"):
        check_schema(df, "t", job, MODEL)
