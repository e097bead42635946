from __future__ import annotations

import pytest

from spark_jobs.contract import InferenceJobConfig, JobConfigError


def make(**overrides) -> InferenceJobConfig:
    base = dict(input_table="/t/in", output_table="/t/out", model="m.odule:MODEL", logical_date="2026-11-24")
    return InferenceJobConfig(**{**base, **overrides})


def test_round_trips_through_json_and_defaults_rejects_table():
    job = make(input_columns=["a", "b"], model_options={"k": 1})
    again = InferenceJobConfig.from_json(job.to_json())
    assert again == job
    assert again.input_columns == ("a", "b")
    assert job.rejects_table == "/t/out_rejects"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"logical_date": "24/11/2026"}, "logical_date"),
        ({"model": "no_colon"}, "'model'"),
        ({"batch_size": 0}, "batch_size"),
        ({"input_columns": ["", "x"]}, "input_columns"),
        ({"output_table": "/t/in"}, "three different tables"),
        ({"key_column": ""}, "key_column"),
    ],
)
def test_bad_settings_are_named(overrides, message):
    with pytest.raises(JobConfigError, match=message):
        make(**overrides)


def test_unknown_setting_is_named():
    text = make().to_json().replace('"batch_size"', '"batchsize"')
    with pytest.raises(JobConfigError, match="batchsize"):
        InferenceJobConfig.from_json(text)


def test_inputs_mapped_by_name_and_renamed_outputs_round_trip_through_json():
    job = make(input_columns={"text": "sentence"}, output_columns={"generated_text": "translation"})
    again = InferenceJobConfig.from_json(job.to_json())
    assert again == job and again.input_columns == {"text": "sentence"} and again.output_column is None


@pytest.mark.parametrize(
    "overrides", [{"input_columns": {"text": ""}}, {"output_columns": {"x": ""}}, {"output_column": ""}]
)
def test_empty_column_names_are_refused(overrides):
    with pytest.raises(JobConfigError, match="must hold non-empty names"):
        make(**overrides)
