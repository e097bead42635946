"""The job's write path in process (local Spark, real PyTriton, real delta-rs): what a failure between the
two commits leaves and how the next run repairs it, the checks before any commit, and a report that
stays small however many rows are rejected."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from deltalake import DeltaTable

from spark_jobs.batch_inference import run
from spark_jobs.contract import MAX_REPORT_BYTES, InferenceJobConfig, RunReport, progress_path
from spark_jobs.delta_io import DeltaRsIO, write_pandas_table
from spark_jobs.write_modes import WriteRefused

TINY = "spark_jobs.models.hashing_embedder:MODEL"
DAY = "2026-11-24"

pytestmark = pytest.mark.slow


def job(tmp_path, run_id: str, **overrides) -> InferenceJobConfig:
    values = {
        "input_table": str(tmp_path / "in"),
        "output_table": str(tmp_path / "out"),
        "model": TINY,
        "logical_date": DAY,
        "run_id": run_id,
        "report_path": str(tmp_path / f"{run_id}.json"),
        **overrides,
    }
    return InferenceJobConfig(**values)


def documents(ids, text=lambda i: f"document {i}"):
    return pd.DataFrame({"id": list(ids), "text": [text(i) for i in ids], "date": DAY})


def date_rows(table) -> pd.DataFrame:
    return DeltaTable(str(table)).to_pandas(partitions=[("date", "=", DAY)])


def seed_output(spark, tmp_path, run_id: str = "run-good") -> tuple[int, int]:
    """A good earlier run's output and rejects for the date, as the job writes them."""
    io = DeltaRsIO(spark)
    scored = spark.createDataFrame(
        [(i, [0.5, 0.5], "m", run_id) for i in range(1, 9)],
        "id long, embedding array<float>, model string, run_id string",
    )
    rejects = spark.createDataFrame(
        [("9", "text is null", run_id)], "id string, reason string, run_id string"
    )
    return (
        io.replace_date(rejects, str(tmp_path / "out_rejects"), "date", DAY, run_id),
        io.replace_date(scored, str(tmp_path / "out"), "date", DAY, run_id),
    )


def test_a_failure_between_the_two_commits_leaves_the_output_whole_and_the_next_run_repairs(
    spark, tmp_path, monkeypatch
):
    write_pandas_table(
        str(tmp_path / "in"), documents(range(1, 7)).assign(text=lambda d: d.text.where(d.id != 6)), ["date"]
    )
    seed_output(spark, tmp_path)
    output_version = DeltaTable(str(tmp_path / "out")).version()
    real_commit = DeltaRsIO.commit

    def commit_then_crash(self, staged, *args, **kwargs):
        if staged.table == str(tmp_path / "out"):
            raise RuntimeError("injected: the driver died between the rejects and the output commits")
        return real_commit(self, staged, *args, **kwargs)

    monkeypatch.setattr(DeltaRsIO, "commit", commit_then_crash)
    with pytest.raises(RuntimeError, match="injected"):
        run(spark, job(tmp_path, "run-crashed"))

    # The output, what consumers read, still holds the good run's date, whole; its staged files are gone.
    assert DeltaTable(str(tmp_path / "out")).version() == output_version
    assert (
        set(date_rows(tmp_path / "out")["run_id"]) == {"run-good"} and len(date_rows(tmp_path / "out")) == 8
    )
    assert not list((tmp_path / "out").glob("date=*/run-run-crashed-*"))
    # The rejects were committed first: the crashed run's, which the next run writes again.
    assert list(date_rows(tmp_path / "out_rejects")["run_id"]) == ["run-crashed"]
    io = DeltaRsIO(spark)
    assert (
        io.date_written_by(str(tmp_path / "out"), DAY),
        io.date_written_by(str(tmp_path / "out_rejects"), DAY),
    ) == (
        "run-good",
        "run-crashed",
    )
    crashed = json.loads((tmp_path / "run-crashed.json").read_text())
    assert crashed["status"] == "FAILED" and crashed["output_version"] is None

    monkeypatch.setattr(DeltaRsIO, "commit", real_commit)
    report = run(spark, job(tmp_path, "run-retry"))

    assert any(
        "run run-crashed of 2026-11-24 committed its rejects but not its output" in w for w in report.warnings
    )
    assert (report.rows_read, report.rows_scored, report.rows_rejected) == (6, 5, 1)
    assert (
        set(date_rows(tmp_path / "out")["run_id"]) == {"run-retry"} and len(date_rows(tmp_path / "out")) == 5
    )
    assert list(date_rows(tmp_path / "out_rejects")["run_id"]) == ["run-retry"]
    committed = [
        DeltaTable(str(t)).history(1)[0]["timestamp"] for t in (tmp_path / "out_rejects", tmp_path / "out")
    ]
    assert committed == sorted(committed)  # rejects first, output last


def test_a_truncated_date_below_min_rows_fails_before_it_replaces_a_good_date(spark, tmp_path):
    write_pandas_table(str(tmp_path / "in"), documents(range(1, 3)), ["date"])  # 2 rows arrived of ~8
    versions = seed_output(spark, tmp_path)
    with pytest.raises(
        WriteRefused, match=r"has 2 row\(s\) for 2026-11-24, below min_rows=5: nothing was written"
    ):
        run(spark, job(tmp_path, "run-truncated", min_rows=5))
    tables = (tmp_path / "out_rejects", tmp_path / "out")
    assert tuple(DeltaTable(str(t)).version() for t in tables) == versions
    assert len(date_rows(tmp_path / "out")) == 8
    lease = DeltaTable(str(tmp_path / "out_leases")).to_pandas()
    assert list(lease["run_id"]) == ["run-truncated"] and lease["released_at"].notna().all()


def test_many_distinct_bad_rows_make_a_small_report_and_a_full_rejects_table(spark, tmp_path):
    keys = 20_000  # every key twice: the first copy has empty text, the second is a duplicate
    frame = pd.concat(
        [documents(range(keys), lambda i: ""), documents(range(keys), lambda i: f"copy of {i}")]
    )
    write_pandas_table(str(tmp_path / "in"), frame, ["date"])

    report = run(spark, job(tmp_path, "run-bad"))

    assert report.reject_reasons == {"duplicate id": keys, "text is empty": keys}
    assert report.reject_samples == {
        "duplicate id": ["0", "1", "10", "100", "1000"],  # the smallest keys, as text
        "text is empty": ["0", "1", "10", "100", "1000"],
    }
    assert (report.rows_read, report.rows_scored, report.rows_rejected) == (2 * keys, 0, 2 * keys)
    rejects = date_rows(tmp_path / "out_rejects")
    assert len(rejects) == 2 * keys and rejects["detail"].nunique() == keys  # every row's detail kept
    assert (tmp_path / "run-bad.json").stat().st_size <= MAX_REPORT_BYTES
    progress = progress_path(str(tmp_path / "run-bad.json"))
    assert progress.stat().st_size <= MAX_REPORT_BYTES + 16 * 1024  # the report so far, bounded, and counters
    so_far = RunReport.from_dict(json.loads(progress.read_text())["report"])
    assert (so_far.reject_reasons, so_far.reject_samples) == (report.reject_reasons, report.reject_samples)
    assert len(report.to_json()) < 2048
