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
