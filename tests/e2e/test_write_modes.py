"""Output tables as teams write them, on the real local backend: Spark standalone, PyTriton, delta-rs.

Each write mode runs twice on one date (no duplicates from ``append`` per writer, ``merge`` updating
in place), a reject budget exceeded and a dry run leave the output's version as it was, and a second
run of a date while the first holds its lease fails at once naming it. One cluster (one worker)
serves the whole module; each run is a real ``spark-submit`` of the job with the tiny hashing model.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from deltalake import DeltaTable

from airflow_spark_triton.backends.base import RunLifecycle
from airflow_spark_triton.cluster_spec import GpuClusterSpec
from spark_jobs.contract import InferenceJobConfig, RunReport
from spark_jobs.delta_io import write_pandas_table
from spark_jobs.models.hashing_embedder import embed
from tests.backends.local.test_backend import started_cluster, wait_terminal
from tests.faults import ledger

pytestmark = pytest.mark.slow

TINY = "spark_jobs.models.hashing_embedder:MODEL"
DAY = "2026-11-24"
RUN_TIMEOUT_S = 600  # a run here is ~30 s; a loaded CI machine may take several times that


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    spec = GpuClusterSpec(num_workers=1, executor_cores=1, worker_memory="1g")
    with started_cluster(tmp_path_factory.mktemp("write-modes-home"), spec, "write_modes") as cluster:
        yield cluster


def documents(ids, version: str = "v1", null_text: tuple[int, ...] = (11,)) -> pd.DataFrame:
    """Odd ids in English, even in German; ``null_text`` rows cannot be scored."""
    ids = list(ids)
    return pd.DataFrame(
        {
            "id": ids,
            "text": [None if i in null_text else f"document {i} {version}" for i in ids],
            "lang": ["en" if i % 2 else "de" for i in ids],
            "title": [f"title {i}" for i in ids],
            "date": DAY,
        }
    )


def job(root: Path, **settings) -> InferenceJobConfig:
    return InferenceJobConfig(
        input_table=str(root / "in"), output_table=str(root / "out"), model=TINY, logical_date=DAY, **settings
    )


def submit(cluster, job: InferenceJobConfig, token: str) -> str:
    backend, cluster_id = cluster
    return backend.submit_job(cluster_id, job, token)


def finish(cluster, run_id: str) -> tuple[RunLifecycle, str, RunReport | None]:
    """The run's end state, message and report (the job writes one whatever the outcome)."""
    backend, _ = cluster
    status = wait_terminal(backend, run_id, RUN_TIMEOUT_S)
    report_file = backend.run_dir(run_id) / "report.json"
    report = RunReport.from_json(report_file.read_text()) if report_file.exists() else None
    return status.state, status.message or "", report


def succeeded(cluster, job: InferenceJobConfig, token: str) -> RunReport:
    state, message, report = finish(cluster, submit(cluster, job, token))
    assert state is RunLifecycle.SUCCESS, message
    assert report is not None
    return report


def date_rows(table: Path) -> pd.DataFrame:
    rows = DeltaTable(str(table)).to_pandas(partitions=[("date", "=", DAY)])
    return rows.sort_values("id").reset_index(drop=True)


def version(table: Path) -> int | None:
    return DeltaTable(str(table)).version() if (table / "_delta_log").exists() else None


def assert_embeddings_of(rows: pd.DataFrame, texts: dict[int, str]) -> None:
    expected = embed([texts[i] for i in rows["id"]])
    np.testing.assert_allclose(np.stack(rows["embedding"].to_numpy()), expected, rtol=1e-5, atol=1e-6)


def lease_holder(root: Path) -> str | None:
    active = ledger.active_leases(root / "out")
    return str(active[0]["run_id"]) if active else None


def test_replace_date_twice_keeps_one_runs_rows_and_a_second_run_meanwhile_fails_naming_the_first(
    cluster, tmp_path
):
    write_pandas_table(str(tmp_path / "in"), documents(range(1, 13)), ["date"])
    settings = {"keep_columns": ("title",), "where": "lang = 'en'", "batch_size": 2}
    slow = job(tmp_path, **settings, model_options={"seconds_per_batch": 0.5})
    first = submit(cluster, slow, "replace-1")
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while lease_holder(tmp_path) is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert lease_holder(tmp_path) == first

    state, message, refused = finish(
        cluster, submit(cluster, job(tmp_path, **settings), "replace-concurrent")
    )
    assert state is RunLifecycle.FAILED
    assert "DateLeaseHeld" in message and f"is being written by run {first}" in message, message
    assert refused is not None and refused.output_version is None and refused.rows_read is None

    state, message, report = finish(cluster, first)
    assert state is RunLifecycle.SUCCESS, message
    assert (report.rows_read, report.rows_scored, report.rows_rejected) == (6, 5, 1)  # the English rows
    assert report.reject_reasons == {"text is null": 1} and report.reject_samples == {"text is null": ["11"]}
    rows = date_rows(tmp_path / "out")
    assert list(rows["id"]) == [1, 3, 5, 7, 9] and list(rows["title"]) == [
        f"title {i}" for i in (1, 3, 5, 7, 9)
    ]
    assert_embeddings_of(rows, {i: f"document {i} v1" for i in rows["id"]})

    write_pandas_table(str(tmp_path / "in"), documents(range(1, 13), "v2"), ["date"], mode="overwrite")
    again = succeeded(cluster, job(tmp_path, **settings), "replace-2")
    rows = date_rows(tmp_path / "out")
    assert list(rows["id"]) == [1, 3, 5, 7, 9] and set(rows["run_id"]) == {
        again.run_id
    }  # replaced, not added
    assert_embeddings_of(rows, {i: f"document {i} v2" for i in rows["id"]})
    assert list(date_rows(tmp_path / "out_rejects")["id"]) == ["11"]
    assert lease_holder(tmp_path) is None  # released by every run


def test_append_twice_adds_each_dag_runs_rows_once_and_a_resent_run_adds_nothing(cluster, tmp_path):
    write_pandas_table(str(tmp_path / "in"), documents(range(1, 7), null_text=(6,)), ["date"])
    first = succeeded(
        cluster, job(tmp_path, write_mode="append", write_id="nightly/infer/run-1/-1"), "append-1"
    )
    assert (first.rows_scored, first.rows_rejected) == (5, 1)
    output_version = version(tmp_path / "out")

    resent = succeeded(
        cluster, job(tmp_path, write_mode="append", write_id="nightly/infer/run-1/-1"), "append-1b"
    )
    assert any("was already committed (an earlier try of this run)" in w for w in resent.warnings)
    assert resent.rows_scored is None and version(tmp_path / "out") == output_version
    assert len(date_rows(tmp_path / "out")) == 5

    second = succeeded(
        cluster, job(tmp_path, write_mode="append", write_id="nightly/infer/run-2/-1"), "append-2"
    )
    rows = date_rows(tmp_path / "out")
    assert len(rows) == 10 and rows.groupby("run_id").size().to_dict() == {first.run_id: 5, second.run_id: 5}
    assert sorted(rows["id"]) == sorted([1, 2, 3, 4, 5] * 2)
    assert len(date_rows(tmp_path / "out_rejects")) == 2  # each DAG run's own reject, once


def test_merge_twice_updates_scored_keys_in_place_and_inserts_new_ones(cluster, tmp_path):
    write_pandas_table(str(tmp_path / "in"), documents(range(1, 7), null_text=()), ["date"])
    first = succeeded(cluster, job(tmp_path, write_mode="merge", keep_columns=("title",)), "merge-1")
    assert first.rows_scored == 6

    # The next delivery of the date: changed texts, two new documents, and document 1 now unscorable.
    changed = documents(range(1, 9), "v2", null_text=(1,))
    write_pandas_table(str(tmp_path / "in"), changed, ["date"], mode="overwrite")
    second = succeeded(cluster, job(tmp_path, write_mode="merge", keep_columns=("title",)), "merge-2")
    assert (second.rows_read, second.rows_scored, second.rows_rejected) == (8, 7, 1)

    rows = date_rows(tmp_path / "out")
    assert list(rows["id"]) == list(range(1, 9))  # one row per key: updated in place, never doubled
    assert rows.set_index("id")["run_id"].to_dict() == {
        1: first.run_id,
        **{i: second.run_id for i in range(2, 9)},
    }
    assert_embeddings_of(rows, {1: "document 1 v1", **{i: f"document {i} v2" for i in range(2, 9)}})
    assert list(date_rows(tmp_path / "out_rejects")["id"]) == ["1"]


def test_a_reject_budget_exceeded_and_a_dry_run_leave_the_output_as_it_was(cluster, tmp_path):
    write_pandas_table(str(tmp_path / "in"), documents(range(1, 13)), ["date"])
    seeded = documents(range(100, 103)).drop(columns=["lang", "text", "title"])
    write_pandas_table(str(tmp_path / "out"), seeded.assign(run_id="earlier"), ["date"])
    before = version(tmp_path / "out")

    state, message, report = finish(
        cluster, submit(cluster, job(tmp_path, max_reject_fraction=0.05), "budget")
    )
    assert state is RunLifecycle.FAILED
    assert "1 of 12 rows of 2026-11-24" in message and "more than max_reject_fraction=0.05" in message, (
        message
    )
    assert report.reject_reasons == {"text is null": 1} and report.output_version is None
    assert version(tmp_path / "out") == before and version(tmp_path / "out_rejects") is None

    leases = version(tmp_path / "out_leases")  # the refused run held the date while it checked
    dry = succeeded(cluster, job(tmp_path, dry_run=True, limit=3, keep_columns=("title",)), "dry")
    assert (dry.dry_run, dry.rows_read, dry.rows_rejected, dry.rows_scored) == (True, 12, 1, 3)
    assert [s["id"] for s in dry.samples] == [1, 2, 3] and dry.samples[0]["title"] == "title 1"
    assert dry.samples[0]["embedding"].startswith("[") and dry.samples[0]["embedding"].endswith(
        "…"
    )  # shortened
    assert (dry.output_version, dry.rejects_version) == (None, None)
    assert version(tmp_path / "out") == before and version(tmp_path / "out_rejects") is None
    assert version(tmp_path / "out_leases") == leases  # a dry run writes nothing, not even a lease
