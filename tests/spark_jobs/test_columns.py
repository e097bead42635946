"""The column rules both sides apply: inputs mapped by position or name, outputs each in a column of
its own, the batch size within the model's limit, and a table's columns of types the model takes."""

from __future__ import annotations

import pytest

from spark_jobs.columns import (
    InputSchemaError,
    check_settings,
    check_table,
    input_mapping,
    output_names,
    type_text,
)
from spark_jobs.contract import InferenceJobConfig, JobConfigError
from spark_jobs.models.base import ServedModel, TensorSpec


def refuse_x(options) -> None:
    if "x" in options:
        raise ValueError("no option 'x'")


TWO_IN_TWO_OUT = ServedModel(
    "m",
    (TensorSpec("text", "bytes"), TensorSpec("pixels", "float32", (4,))),
    outputs=(TensorSpec("label", "bytes"), TensorSpec("score", "float32")),
    loader=lambda options: None,
    max_batch_size=32,
    check_options=refuse_x,
)
ARRAY_FLOAT = {"type": "array", "elementType": "float", "containsNull": True}
TABLE = {"id": "long", "date": "string", "body": "string", "pix": ARRAY_FLOAT, "img": "binary"}


def job(**overrides) -> InferenceJobConfig:
    values = {
        "input_table": "/t/in",
        "output_table": "/t/out",
        "model": "m:MODEL",
        "logical_date": "2026-11-24",
        "input_columns": ("body", "pix"),
        "batch_size": 16,
        **overrides,
    }
    return InferenceJobConfig(**values)


def test_inputs_map_by_position_or_by_name():
    by_position = input_mapping(job(), TWO_IN_TWO_OUT)
    by_name = input_mapping(job(input_columns={"pixels": "pix", "text": "body"}), TWO_IN_TWO_OUT)
    assert [(s.name, c) for s, c in by_position] == [("text", "body"), ("pixels", "pix")]
    assert by_name == by_position


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (("body",), r"takes 2 input\(s\) \(text, pixels\) but job setting 'input_columns' names 1"),
        ({"text": "body"}, r"maps model inputs \['text'\], but model m takes \['text', 'pixels'\]"),
        ({"text": "body", "pixels": "pix", "extra": "x"}, "maps model inputs"),
    ],
)
def test_a_mapping_that_misses_an_input_names_the_inputs(columns, message):
    with pytest.raises(JobConfigError, match=message):
        input_mapping(job(input_columns=columns), TWO_IN_TWO_OUT)


def test_each_output_lands_in_its_own_column_renamed_by_output_columns():
    assert output_names(job(), TWO_IN_TWO_OUT) == {"label": "label", "score": "score"}
    renamed = output_names(job(output_columns={"score": "confidence"}), TWO_IN_TWO_OUT)
    assert renamed == {"label": "label", "score": "confidence"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"output_column": "x"}, "'output_column' names one column, but model m has 2 outputs"),
        ({"output_columns": {"labels": "y"}}, r"renames \['labels'\], which model m does not output"),
        ({"output_columns": {"label": "id"}}, "collides with key_column 'id'"),
        ({"output_columns": {"score": "date"}}, "collides with date_column 'date'"),
        ({"output_columns": {"label": "run_id"}}, "collides with the column 'run_id' the job writes"),
        ({"output_columns": {"label": "score"}}, "would both land in column 'score'"),
    ],
)
def test_output_columns_that_collide_or_name_no_output_fail_naming_them(overrides, message):
    with pytest.raises(JobConfigError, match=message):
        output_names(job(**overrides), TWO_IN_TWO_OUT)


def test_output_column_still_names_a_single_output_models_column():
    model = ServedModel(
        "e", (TensorSpec("text", "bytes"),), TensorSpec("embedding", "float32", (8,)), lambda o: None
    )
    assert output_names(job(input_columns=("body",)), model) == {"embedding": "embedding"}
    assert output_names(job(input_columns=("body",), output_column="vec"), model) == {"embedding": "vec"}


def test_batch_size_above_the_models_limit_and_bad_options_fail_with_the_fix():
    with pytest.raises(
        JobConfigError, match=r"'batch_size' is 64, above model m's max_batch_size 32.*32 or less"
    ):
        check_settings(job(batch_size=64), TWO_IN_TWO_OUT)
    with pytest.raises(JobConfigError, match="'model_options': no option 'x'"):
        check_settings(job(model_options={"x": 1}), TWO_IN_TWO_OUT)
    check_settings(job(), TWO_IN_TWO_OUT)


@pytest.mark.parametrize("date_type", ["date", "timestamp", "timestamp_ntz", "string"])
def test_date_columns_of_every_date_type_are_accepted(date_type):
    check_table({**TABLE, "date": date_type}, "/t/in", job(), TWO_IN_TWO_OUT)


@pytest.mark.parametrize(
    ("table", "overrides", "message"),
    [
        ({**TABLE, "date": "long"}, {}, "column 'date' \\(date_column\\) is bigint; .*DATE, TIMESTAMP"),
        ({k: v for k, v in TABLE.items() if k != "id"}, {}, "no column 'id' \\(key_column;"),
        (
            TABLE,
            {"input_columns": ("headline", "pix")},
            "no column 'headline' \\(input_columns \\(model input 'text'\\)",
        ),
        ({**TABLE, "body": "long"}, {}, "column 'body' is bigint, model input 'text' of m needs text"),
        ({**TABLE, "pix": "double"}, {}, "model input 'pixels' of m needs an array of 4 numbers"),
        (TABLE, {"input_columns": ("img", "body")}, "column 'body' is string, model input 'pixels'"),
    ],
)
def test_a_table_that_does_not_fit_fails_naming_the_column(table, overrides, message):
    with pytest.raises(InputSchemaError, match=message):
        check_table(table, "/t/in", job(**overrides), TWO_IN_TWO_OUT)


def test_binary_inputs_need_a_binary_column():
    model = ServedModel("i", (TensorSpec("image", "binary"),), TensorSpec("label", "bytes"), lambda o: None)
    check_table(TABLE, "/t/in", job(input_columns=("img",)), model)
    with pytest.raises(
        InputSchemaError, match="column 'body' is string, model input 'image' of i needs bytes"
    ):
        check_table(TABLE, "/t/in", job(input_columns=("body",)), model)


def test_types_are_named_as_spark_sql_names_them():
    assert type_text("long") == "bigint"
    assert type_text(ARRAY_FLOAT) == "array<float>"
    assert type_text({"type": "array", "elementType": "integer"}) == "array<int>"
