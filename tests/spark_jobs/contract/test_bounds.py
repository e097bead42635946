"""The run report stays small whatever the input: counts survive, lists are cut, and it says what was cut."""

from __future__ import annotations

import json

from spark_jobs.contract import MAX_REPORT_BYTES, InferenceJobConfig, RunReport, bound_report
from spark_jobs.contract.bounds import (
    BOUNDED,
    MAX_REJECT_REASONS,
    MAX_SAMPLE_ROWS,
    MAX_SAMPLE_VALUE_CHARS,
    OTHER_REASONS,
    REJECT_SAMPLE_KEYS,
)

JOB = InferenceJobConfig("/t/in", "/t/out", "m.odule:MODEL", "2026-11-24", run_id="r-1")


def size(report: RunReport) -> int:
    return len(report.to_json().encode())


def test_a_small_report_is_left_as_it_is():
    report = RunReport.for_job(JOB, rows_read=3, reject_reasons={"text is null": 1})
    report.reject_samples = {"text is null": ["7"]}
    before = report.to_dict()
    assert bound_report(report).to_dict() == before


def test_a_million_distinct_reasons_keep_their_total_and_the_most_frequent_ones():
    report = RunReport.for_job(JOB, rows_read=1_000_010)
    report.reject_reasons = {f"duplicate id {i}": 1 for i in range(1_000_000)} | {"text is null": 10}
    report.reject_samples = {reason: [reason[13:] * 40] * 9 for reason in report.reject_reasons}
    bound_report(report)
    assert size(report) <= MAX_REPORT_BYTES
    assert sum(report.reject_reasons.values()) == 1_000_010
    assert len(report.reject_reasons) <= MAX_REJECT_REASONS + 1
    assert report.reject_reasons["text is null"] == 10  # the most frequent first
    assert report.reject_reasons[OTHER_REASONS] > 0
    assert all(len(keys) <= REJECT_SAMPLE_KEYS for keys in report.reject_samples.values())
    assert report.warnings[-1].startswith(BOUNDED) and "reject reasons" in report.warnings[-1]


def test_every_part_is_capped_and_the_whole_fits_even_when_every_part_is_at_its_cap():
    report = RunReport.for_job(JOB, error="E" * 100_000)
    report.warnings = [f"w{i} " + "x" * 5_000 for i in range(500)]
    report.reject_reasons = {f"reason {i} " + "r" * 300: 1000 - i for i in range(200)}
    report.reject_samples = {reason: [str(k) * 100 for k in range(20)] for reason in report.reject_reasons}
    report.samples = [{"id": i, "embedding": [0.123456] * 384, "title": "t" * 1000} for i in range(100)]
    report.servers = [
        {"host": f"node-{i}", "pid": i, "http_port": 8000, "grpc_port": 8001} for i in range(2000)
    ]
    report.servers_stopped = list(report.servers)
    report.extra = {"future_field": "f" * 100_000}
    bound_report(report)
    assert size(report) <= MAX_REPORT_BYTES
    assert len(report.error) <= 4000
    assert report.warnings[-1].startswith(BOUNDED)
    again = json.loads(report.to_json())
    assert bound_report(RunReport.from_dict(again)).to_dict() == report.to_dict(), (
        "bounding twice changes nothing"
    )


def test_dry_run_samples_are_a_few_rows_with_long_values_shortened():
    report = RunReport.for_job(JOB.replace(dry_run=True, limit=50))
    report.samples = [{"id": i, "embedding": [0.5] * 384, "text": "short"} for i in range(50)]
    bound_report(report)
    assert len(report.samples) == MAX_SAMPLE_ROWS
    first = report.samples[0]
    assert first["id"] == 0 and first["text"] == "short"
    assert isinstance(first["embedding"], str) and first["embedding"].startswith("[0.5, 0.5")
    assert len(first["embedding"]) == MAX_SAMPLE_VALUE_CHARS and first["embedding"].endswith("…")
    assert "40 sample rows" in report.warnings[-1]
