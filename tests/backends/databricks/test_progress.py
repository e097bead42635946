"""Progress and the report link on Databricks, against the emulator.

The emulator's fast mode writes ``<report>.progress.json`` on the volume while a run is RUNNING (the
keys of the job's ``ProgressReporter``); that the real job writes that file to a UC volume from a
Databricks driver is not tested here (no workspace), only that the backend reads it at each poll.
"""

from __future__ import annotations

import time

import pytest

from airflow_spark_triton.backends.base import RunLifecycle
from airflow_spark_triton.cluster_spec import GpuClusterSpec
from airflow_spark_triton.progress_format import format_progress
from spark_jobs.contract import InferenceJobConfig
from tests.databricks_emulator import Settings

TAGS = {"airflow_dag_id": "d", "airflow_task_id": "create_cluster", "airflow_run_id": "r1"}
JOB = InferenceJobConfig(
    input_table="/data/documents",
    output_table="/data/embeddings",
    model="spark_jobs.models.hashing_embedder:MODEL",
    logical_date="2024-01-01",
)


@pytest.mark.parametrize(
    "emulator_settings", [Settings(cluster_start_s=0.3, run_duration_s=1.5, cancel_s=0.1, progress_rows=1000)]
)
@pytest.mark.parametrize("mode", ["jobs", "all_purpose"])
def test_progress_is_read_from_the_volume_while_the_run_scores(make_backend, emulator, mode):
    backend = make_backend()
    spec = GpuClusterSpec(num_workers=1)
    make = backend.prepare_job_compute if mode == "jobs" else backend.create_cluster
    target = make(spec, TAGS)
    run_id = backend.submit_job(target, JOB, f"t-{mode}")
    assert backend.get_run_progress(run_id) is None  # the job has written nothing yet

    seen: list[tuple[RunLifecycle, dict]] = []
    deadline = time.monotonic() + 30
    status = backend.get_run_status(run_id)
    while not status.state.is_terminal and time.monotonic() < deadline:
        progress = backend.get_run_progress(run_id)
        if progress is not None:
            seen.append((status.state, progress))
        time.sleep(0.1)
        status = backend.get_run_status(run_id)
    assert status.state is RunLifecycle.SUCCESS

    during = [p for state, p in seen if state is RunLifecycle.RUNNING and p["phase"] == "inference"]
    assert during, seen
    assert any(0 < p["rows_done"] < p["rows_total"] == 1000 for p in during)
    assert all(p["rows_per_s"] is not None for p in during if p["rows_done"])
    assert "rows/s" in format_progress(during[-1])  # what the operator logs at each poll
    final = backend.get_run_progress(run_id)
    assert final["phase"] == "success" and final["rows_done"] == final["rows_total"]

    report_path = backend.report_path_of(backend.hook.get_run(int(run_id)))
    progress_path = report_path.removesuffix(".json") + ".progress.json"
    reads = [c for c in emulator.calls("GET", "2.0/fs/files") if c.path.endswith(progress_path)]
    assert len(reads) >= len(seen)  # read through the Files API at each poll
    assert len(emulator.calls("GET", "2.2/jobs/runs/get")) > 0


def test_the_report_link_is_the_runs_page(make_backend, emulator):
    backend = make_backend()
    run_id = backend.submit_job(
        backend.prepare_job_compute(GpuClusterSpec(num_workers=1), TAGS), JOB, "t-link"
    )
    url = backend.run_summary_uri(run_id)
    assert url == backend.get_run_status(run_id).url
    assert url.startswith(emulator.url) and url.endswith(f"/run/{run_id}")


def test_progress_of_a_run_that_is_not_an_inference_run_is_none(make_backend, emulator):
    backend = make_backend()
    run_id = backend.submit_job(backend.prepare_job_compute(GpuClusterSpec(num_workers=1), TAGS), JOB, "t-x")
    backend._progress_paths.clear()
    emulator.workspace.runs[int(run_id)].body["tasks"][0]["spark_python_task"]["parameters"] = []
    assert backend.get_run_progress(run_id) is None


@pytest.mark.parametrize(
    "emulator_settings", [Settings(cluster_start_s=0.3, run_duration_s=0.5, cancel_s=0.1, progress_rows=100)]
)
def test_the_run_pages_show_a_databricks_run_and_link_its_workspace_page(make_backend, emulator, conn_id):
    """Issue #27: the provider's pages read a Databricks run through its connection (report and
    progress from the volume) and link the workspace run page, where its driver logs are."""
    from airflow_spark_triton.ui import pages
    from airflow_spark_triton.ui.run_data import RunView, TaskInstanceRef, read_run

    backend = make_backend()
    run_id = backend.submit_job(
        backend.prepare_job_compute(GpuClusterSpec(num_workers=1), TAGS), JOB, "t-page"
    )
    deadline = time.monotonic() + 30
    while not backend.get_run_status(run_id).state.is_terminal and time.monotonic() < deadline:
        time.sleep(0.1)
    ti = TaskInstanceRef("d", "r1", "infer")
    view = read_run(RunView(ti, "success", 1), {"run_id": run_id, "conn_id": conn_id}, set())
    assert (view.backend, view.state, view.finished) == ("databricks", "SUCCESS", True)
    assert view.platform_url == backend.get_run_status(run_id).url and view.driver_log is None
    assert view.report.status == "SUCCESS" and view.progress["phase"] == "success"
    assert view.counts()["rows_scored"] == 100
    page = pages.run_page(view, "")
    assert f'href="{view.platform_url}"' in page and "Driver logs (workspace)" in page
    assert f"Run report <code>{view.report.run_id}</code>" in pages.report_page(view, "")
