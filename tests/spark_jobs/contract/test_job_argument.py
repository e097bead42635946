"""How the job argument travels and what a backend fills in: one way for every backend."""

from __future__ import annotations

import json

import pytest

from spark_jobs import contract
from spark_jobs.contract import CONTRACT_VERSION, InferenceJobConfig, JobConfigError


def make(**overrides) -> InferenceJobConfig:
    return InferenceJobConfig(**{"input_table": "/t/in", "output_table": "/t/out", "model": "m.odule:MODEL",
                                 "logical_date": "2026-11-24", **overrides})  # fmt: skip


def test_the_json_carries_the_contract_version_and_a_newer_one_is_refused_naming_both():
    data = json.loads(make().to_json())
    assert data["contract_version"] == CONTRACT_VERSION
    assert InferenceJobConfig.from_json(
        json.dumps({k: v for k, v in data.items() if k != "contract_version"})
    )
    newer = json.dumps({**data, "contract_version": CONTRACT_VERSION + 1})
    with pytest.raises(
        JobConfigError, match=f"contract version {CONTRACT_VERSION + 1}.*up to {CONTRACT_VERSION}"
    ):
        InferenceJobConfig.from_json(newer)


def test_the_argument_travels_as_the_jobs_one_option():
    job = make()
    args = job.to_args()
    assert args[0] == contract.JOB_ARG and InferenceJobConfig.from_args(["--verbose", *args]) == job
    assert InferenceJobConfig.from_args([]) is None
    assert InferenceJobConfig.from_args([contract.JOB_ARG]) is None  # no value: not an argument
    assert contract.JOB_SCRIPT.name == "batch_inference.py" and contract.JOB_SCRIPT.is_file()


def test_for_run_fills_the_fields_every_backend_fills():
    job = make()
    assert job.run_id == contract.DEFAULT_RUN_ID
    run = job.for_run(run_id="r-1", report_path="/runs/r-1/report.json", workers=3)
    assert (run.run_id, run.report_path, run.expected_executors) == ("r-1", "/runs/r-1/report.json", 3)
    assert (
        job.replace(expected_executors=5).for_run(run_id="r", report_path="p", workers=3).expected_executors
        == 5
    )
    assert job.for_run(run_id="r", report_path="p", workers=None).expected_executors is None
    assert run.replace(run_id=contract.DEFAULT_RUN_ID, report_path=None, expected_executors=None) == job


def test_the_rejects_default_is_one_rule():
    assert contract.default_rejects_table("s3://b/out/") == "s3://b/out_rejects"
    assert make(output_table="main.ml.out").rejects_table == contract.default_rejects_table("main.ml.out")


# The settings contract version 4 added (the output settings, spark_jobs.write_modes).
VERSION_4_SETTINGS = (
    "write_mode", "keep_columns", "where", "min_rows", "max_reject_fraction", "dry_run", "limit",
    "write_id", "lease_wait_s", "lease_ttl_s",
)  # fmt: skip


def older_argument(version: int, **changes) -> str:
    """``make()``'s argument as a side of contract ``version`` wrote it: without the later settings."""
    data = {k: v for k, v in json.loads(make().to_json()).items() if k not in VERSION_4_SETTINGS}
    if version < 3:
        del data["output_columns"]
    return json.dumps({**data, "contract_version": version, **changes})


def test_an_argument_of_contract_version_1_still_parses_as_the_same_job():
    """Version 3 added ``output_columns`` and ``{input: column}`` inputs and made ``output_column``
    optional; a version-1 argument (an older Airflow side, a list of inputs, the output's column
    named) means the same job to a newer one."""
    v1 = older_argument(1, input_columns=["text"], output_column="embedding")
    job = InferenceJobConfig.from_json(v1)
    assert (job.input_columns, job.output_column, job.output_columns) == (("text",), "embedding", {})


def test_an_argument_of_contract_version_3_still_parses_with_the_default_output_settings():
    """Version 4 added the output settings: a version-3 argument replaces the date's partition, as
    every run did then, with no filter, no reject budget and no lease wait."""
    job = InferenceJobConfig.from_json(older_argument(3))
    assert job == make()
    assert (job.write_mode, job.keep_columns, job.where, job.min_rows, job.max_reject_fraction) == (
        contract.REPLACE_DATE, (), None, 0, None,
    )  # fmt: skip
    assert (job.dry_run, job.limit, job.writer, job.lease_wait_s) == (False, None, job.run_id, 0.0)
