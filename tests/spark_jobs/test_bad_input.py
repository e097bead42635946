"""Bad input never fails silently: table problems fail the job naming the table or column, row problems
become rejects with their reason, and ``scored + rejected == read`` always holds."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from spark_jobs.batch_inference import JobTimeout, job_deadline, run
from spark_jobs.contract import REPORT_FILE, InferenceJobConfig, RunReport, progress_path
from spark_jobs.delta_io import DeltaSchemaError, DeltaTableNotFound, write_pandas_table
from spark_jobs.validation import InputSchemaError

TINY = "spark_jobs.models.hashing_embedder:MODEL"
DAY = "2026-11-24"

BAD_ROWS = [  # (id, text bytes, expected reason)
    (1, None, "text is null"),
    (2, b"", "text is empty"),
    (3, b" \t\n ", "text is whitespace only"),
    (4, b"x" * 5000, "text is longer than 4096 bytes"),
    (5, b"caf\xe9 latin-1", "text is not valid UTF-8"),
    (6, b"first copy of id 6", None),
    (6, b"second copy of id 6", "duplicate id"),
    (None, b"a row without a key", "id is null"),
    (7, b"a perfectly good row", None),
    (8, "unicode \u00e9t\u00e9 is fine".encode(), None),
]


def job(tmp_path, **overrides) -> InferenceJobConfig:
    values = {
        "input_table": str(tmp_path / "in"),
        "output_table": str(tmp_path / "out"),
        "model": TINY,
        "logical_date": DAY,
        "run_id": "bad-input",
        "report_path": str(tmp_path / REPORT_FILE),
        **overrides,
    }
    return InferenceJobConfig(**values)


@pytest.mark.slow
def test_each_bad_row_kind_is_rejected_with_its_reason_and_counts_add_up(spark, tmp_path):
    table = pa.table(
        {
            "id": pa.array([r[0] for r in BAD_ROWS], pa.int64()),
            "text": pa.array([r[1] for r in BAD_ROWS], pa.binary()),
            "date": pa.array([DAY] * len(BAD_ROWS)),
        }
    )
    write_deltalake(str(tmp_path / "in"), table, partition_by=["date"])

    report = run(spark, job(tmp_path))

    expected = sorted(r[2] for r in BAD_ROWS if r[2])
    rejects = DeltaTable(str(tmp_path / "out_rejects")).to_pandas()
    assert sorted(rejects["reason"]) == expected
    details = rejects.set_index("reason")["detail"]
    assert details["duplicate id"] == "duplicate id 6"  # the row's own detail, kept in the table
    assert details.drop("duplicate id").isna().all()
    assert sorted(report.reject_reasons.items()) == sorted(pd.Series(expected).value_counts().items())
    assert report.reject_samples["duplicate id"] == ["6"]
    assert "id is null" not in report.reject_samples  # no key to show
    assert report.rows_read == len(BAD_ROWS)
    assert report.rows_scored == 3
    assert report.rows_scored + report.rows_rejected == report.rows_read
    scored = DeltaTable(str(tmp_path / "out")).to_pandas()
    assert sorted(scored["id"]) == [6, 7, 8]
    assert report.servers_stopped and not any(s["running"] for s in report.servers_stopped)
    # The run page's sample keys: the rejected rows' own keys, per reason (a null key has none to show).
    assert report.reject_samples == {r[2]: [str(r[0])] for r in BAD_ROWS if r[2] and r[0] is not None}
    progress = json.loads(progress_path(tmp_path / REPORT_FILE).read_text())
    assert (progress["phase"], progress["rows_done"], progress["history"][-1][1]) == ("success", 3, 3)
    assert RunReport.from_dict(progress["report"]).reject_samples == report.reject_samples


def test_an_empty_date_scores_nothing_and_starts_no_server(spark, tmp_path):
    frame = pd.DataFrame({"id": [1], "text": ["only on another day"], "date": ["2026-11-23"]})
    write_pandas_table(str(tmp_path / "in"), frame, partition_by=["date"])
    report = run(spark, job(tmp_path))
    assert (report.rows_read, report.rows_scored, report.rows_rejected) == (0, 0, 0)
    assert report.servers == []
    assert report.warnings == [f"no input rows for {DAY} in {tmp_path / 'in'}"]


def test_a_missing_table_fails_naming_it(spark, tmp_path):
    with pytest.raises(DeltaTableNotFound, match=str(tmp_path / "in")):
        run(spark, job(tmp_path))


def test_missing_and_wrongly_typed_columns_fail_naming_the_column(spark, tmp_path):
    write_pandas_table(
        str(tmp_path / "in"), pd.DataFrame({"id": [1], "body": ["x"], "date": [DAY]}), ["date"]
    )
    with pytest.raises(DeltaSchemaError, match="text"):
        run(spark, job(tmp_path))

    write_pandas_table(str(tmp_path / "in2"), pd.DataFrame({"id": [1], "text": [3], "date": [DAY]}), ["date"])
    with pytest.raises(InputSchemaError, match="column 'text' is bigint"):
        run(spark, job(tmp_path, input_table=str(tmp_path / "in2")))


def test_the_job_deadline_cancels_a_stuck_stage(spark):
    import time

    def stuck(rows):
        time.sleep(60)
        yield from rows

    started = time.monotonic()
    with pytest.raises(JobTimeout, match="job_timeout_s=2s"), job_deadline(spark, 2):
        spark.sparkContext.parallelize(range(2), 2).mapPartitions(stuck).collect()
    assert time.monotonic() - started < 30
