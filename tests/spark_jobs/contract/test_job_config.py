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


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"write_mode": "upsert"}, "'write_mode' must be one of replace_date, append, merge"),
        ({"keep_columns": ["id"]}, "'keep_columns' must name distinct input columns"),
        ({"keep_columns": ["title", "title"]}, "'keep_columns' must name distinct"),
        ({"keep_columns": ["scored_at"]}, "'keep_columns'"),
        (
            {"keep_columns": ["label"], "output_column": "label"},
            r"other than the output's own \(date, id, label,",
        ),
        (
            {"keep_columns": ["title"], "output_columns": {"generated_text": "title"}},
            "'keep_columns' must name",
        ),
        ({"where": "  "}, "'where' must be a SQL predicate"),
        ({"where": "x" * 5000}, "'where' must be a SQL predicate of 1 to 4000 characters"),
        ({"min_rows": -1}, "'min_rows' must be >= 0"),
        ({"max_reject_fraction": 1.5}, "'max_reject_fraction' must be between 0 and 1"),
        ({"limit": 10}, "'limit' must be >= 1 and needs dry_run=True"),
        ({"dry_run": True, "limit": 0}, "'limit' must be >= 1"),
        ({"lease_ttl_s": 0}, "'lease_ttl_s' >= 1"),
        ({"rejects_table": "/t/out_leases"}, "date leases of output table /t/out live in /t/out_leases"),
    ],
)
def test_bad_write_settings_are_named(overrides, message):
    with pytest.raises(JobConfigError, match=message):
        make(**overrides)


def test_write_settings_round_trip_and_their_defaults():
    job = make(write_mode="merge", keep_columns=["title"], where="lang = 'en'", max_reject_fraction=0.1)
    assert InferenceJobConfig.from_json(job.to_json()) == job
    assert job.keep_columns == ("title",)
    assert (job.lease_table, job.writer, job.dry_run_rows) == ("/t/out_leases", "manual", None)
    assert make(dry_run=True).dry_run_rows == 100
    assert make(dry_run=True, limit=7, write_id="d/t/r/-1").dry_run_rows == 7
    assert make(write_id="d/t/r/-1").writer == "d/t/r/-1"


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
