"""The run report: what the job writes is what every backend reads and what the task's XCom holds."""

from __future__ import annotations

import json

import pytest

from spark_jobs.contract import (
    CONTRACT_VERSION,
    InferenceJobConfig,
    ReportError,
    RunReport,
    progress_path,
    summary_path,
)

JOB = InferenceJobConfig("/t/in", "/t/out", "m.odule:MODEL", "2026-11-24", run_id="r-7")


def test_a_report_round_trips_through_json_as_plain_values():
    report = RunReport.for_job(JOB, status="SUCCESS", rows_read=3, rows_scored=2, rows_rejected=1)
    report.reject_reasons["text is null"] = 1
    report.servers.append({"host": "h", "pid": 1, "http_port": 8000})
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["contract_version"] == CONTRACT_VERSION
    assert (data["run_id"], data["rejects_table"], data["error"]) == ("r-7", "/t/out_rejects", None)
    assert RunReport.from_json(report.to_json()) == report
    assert RunReport.from_dict(data) == report


def test_keys_of_a_newer_job_are_kept_as_read():
    data = {**RunReport.for_job(JOB).to_dict(), "contract_version": CONTRACT_VERSION + 1, "outputs": ["a"]}
    report = RunReport.from_dict(data)
    assert report.extra == {"outputs": ["a"]}
    assert report.to_dict()["outputs"] == ["a"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ("[1]", "JSON object"),
        ('{"run_id": "r", "status": "SUCCESS"}', "lacks logical_date, model, input_table"),
    ],
)
def test_an_unreadable_report_is_named(text, message):
    with pytest.raises(ReportError, match=message):
        RunReport.from_json(text)


def test_the_files_beside_the_report():
    assert progress_path("/runs/r/report.json").as_posix() == "/runs/r/report.progress.json"
    assert summary_path("/runs/r/report.json").as_posix() == "/runs/r/report.md"
    assert summary_path("dbfs:/Volumes/a/b/c/reports/t.json").as_posix() == "/Volumes/a/b/c/reports/t.md"
