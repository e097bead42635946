"""One place coerces operator settings to their declared types (airflow_spark_triton.settings)."""

from __future__ import annotations

import pytest

from airflow_spark_triton.settings import coerce_fields, coerce_mapping, coerce_setting
from spark_jobs.contract import InferenceJobConfig, JobConfigError


@pytest.mark.parametrize(
    ("value", "annotation", "expected"),
    [
        ("64", int, 64),
        ("1.5", float, 1.5),
        ("None", float | None, None),
        ("true", bool, True),
        (7, str, "7"),
        ("{'a': 1}", dict[str, int], {"a": 1}),
        ('{"a": [1, 2]}', dict[str, list[int]], {"a": [1, 2]}),
        ("['text', 'title']", tuple[str, ...], ("text", "title")),
    ],
)
def test_rendered_text_becomes_the_declared_type(value, annotation, expected) -> None:
    assert coerce_setting("x", value, annotation) == expected


def test_an_impossible_value_names_the_setting_the_type_and_the_value() -> None:
    with pytest.raises(JobConfigError, match=r"job setting 'batch_size' must be int, got '6a4'"):
        coerce_setting("batch_size", "6a4", int, label="job setting", error=JobConfigError)
    with pytest.raises(ValueError, match=r"setting 'model_options' must be dict, got 'x'"):
        coerce_mapping("model_options", "x")
    assert coerce_mapping("model_options", None) == {}


def test_dataclass_fields_are_coerced_and_unknown_ones_listed() -> None:
    fields = coerce_fields(
        InferenceJobConfig,
        {"batch_size": "8", "job_timeout_s": "None", "input_columns": ["text"]},
        label="job setting",
        error=JobConfigError,
    )
    assert fields == {"batch_size": 8, "job_timeout_s": None, "input_columns": ("text",)}
    with pytest.raises(JobConfigError, match=r"unknown job setting\(s\): batchsize; known: "):
        coerce_fields(InferenceJobConfig, {"batchsize": 8}, label="job setting", error=JobConfigError)
