"""TritonInferenceOperator against a fake backend: what a retry, a clear and an empty date do."""

from __future__ import annotations

import dataclasses
import datetime as dt
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.exceptions import AirflowException

from airflow_spark_triton.backends.base import RunError, RunLifecycle
from airflow_spark_triton.operators import backend_cache, inference
from airflow_spark_triton.operators.inference import TritonInferenceOperator
from tests.backends.fake import FakeBackend

TINY = "spark_jobs.models.hashing_embedder:MODEL"


class Store(dict):
    """The task state store's accessor: get/set/delete by key."""

    def set(self, key: str, value: Any) -> None:
        self[key] = value

    def delete(self, key: str) -> None:
        self.pop(key, None)


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> FakeBackend:
    fake = FakeBackend()
    monkeypatch.setattr(backend_cache, "get_backend", lambda conn_id: fake)
    return fake


def operator(**kwargs: Any) -> TritonInferenceOperator:
    settings = {"logical_date": "2026-11-26", "poll_interval_s": 0.01, **kwargs}
    return TritonInferenceOperator(
        task_id="infer", cluster_id="c1", input_table="/t/in", output_table="/t/out", model=TINY, **settings
    )


def context(store: Store, try_number: int = 1) -> dict[str, Any]:
    ti = SimpleNamespace(
        dag_id="d",
        task_id="infer",
        run_id="r",
        map_index=-1,
        try_number=try_number,
        stats_tags={},
        xcom_push=lambda **kw: None,
    )
    return {"task_state_store": store, "ti": ti}


def logged(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> str:
    """Task logs go through structlog: to the captured output, or to caplog when it routes them."""
    return caplog.text + capsys.readouterr().out


def test_a_finished_run_is_forgotten_so_a_clear_scores_again(backend: FakeBackend) -> None:
    store = Store()
    assert operator().execute(context(store))["run_id"] == "run-1"
    assert store == {}, "the run id must not outlive the task's success"
    assert operator().execute(context(store, try_number=2))["run_id"] == "run-2"  # the cleared task's new try
    assert backend.submitted == ["run-1", "run-2"]


def test_a_retry_after_a_killed_worker_collects_the_run_it_left(backend: FakeBackend) -> None:
    backend.add_run("run-0", RunLifecycle.SUCCESS)  # finished while its task was dead
    store = Store({"inference_run_id": "run-0"})
    assert operator().execute(context(store))["run_id"] == "run-0"
    assert backend.submitted == []


def test_a_retry_reconnects_to_a_run_still_going(backend: FakeBackend) -> None:
    backend.add_run("run-0", RunLifecycle.RUNNING, RunLifecycle.RUNNING, RunLifecycle.SUCCESS)
    store = Store({"inference_run_id": "run-0"})
    assert operator().execute(context(store))["run_id"] == "run-0"
    assert backend.submitted == []


def test_an_empty_date_warns_and_min_rows_is_the_jobs_to_check_before_it_writes(
    backend: FakeBackend, caplog, capsys
) -> None:
    backend.rows_read = 0
    assert operator().execute(context(Store()))["rows_read"] == 0
    assert "No input rows for 2026-11-26 in /t/in" in logged(caplog, capsys)
    report = operator(min_rows=1).execute(context(Store(), try_number=2))
    assert backend.runs[report["run_id"]]["job"].min_rows == 1  # the job fails below it, before any commit


def test_scoring_a_day_that_has_not_ended_warns(backend: FakeBackend, caplog, capsys) -> None:
    today = dt.datetime.now(dt.UTC).date().isoformat()
    operator(logical_date=today).execute(context(Store()))
    assert "a day that has not ended yet" in logged(caplog, capsys)


def test_the_scored_date_is_the_logical_date_or_for_a_run_without_one_the_day_before_it() -> None:
    logical = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    assert inference.scored_date({"logical_date": logical}) == "2026-11-20"
    run = SimpleNamespace(run_after=dt.datetime(2026, 11, 27, 9, 30, tzinfo=dt.UTC))
    assert inference.scored_date({"dag_run": run}) == "2026-11-26"


def test_a_deferral_that_times_out_cancels_the_run(backend: FakeBackend) -> None:
    from airflow.sdk.exceptions import TaskDeferralTimeout

    backend.add_run("run-7", RunLifecycle.RUNNING)
    store = Store({"inference_run_id": "run-7"})
    with pytest.raises(TaskDeferralTimeout):
        operator().resume_execution("__fail__", {"error": "Trigger timeout"}, context(store))
    assert backend.get_run_status("run-7").state is RunLifecycle.CANCELED


def test_a_trigger_that_failed_leaves_the_run_going(backend: FakeBackend, caplog, capsys) -> None:
    """Cancel only what must be: a trigger error (not its timeout) says nothing about the run."""
    from airflow.sdk.exceptions import TaskDeferralError

    backend.add_run("run-7", RunLifecycle.RUNNING)
    store = Store({"inference_run_id": "run-7"})
    with pytest.raises(TaskDeferralError):
        operator().resume_execution("__fail__", {"error": "Trigger failure"}, context(store))
    assert ("cancel_run", "run-7") not in backend.calls
    assert store == {"inference_run_id": "run-7"}, "a retry of the task reconnects to the run"
    assert "Could not follow run run-7; it is left running" in logged(caplog, capsys)


def test_a_polling_error_leaves_a_healthy_run_for_the_retry_to_reconnect(backend: FakeBackend) -> None:
    backend.run_states = (
        RunLifecycle.RUNNING,
        AirflowException("HTTP 403: token revoked"),
        RunLifecycle.SUCCESS,
    )
    store = Store()
    with pytest.raises(AirflowException, match="token revoked"):
        operator().execute(context(store))
    assert not [call for call in backend.calls if call[0] == "cancel_run"]
    assert store == {"inference_run_id": "run-1"}
    assert operator().execute(context(store, try_number=2))["run_id"] == "run-1"  # reconnected
    assert backend.submitted == ["run-1"]


def test_the_tasks_own_end_cancels_the_run(backend: FakeBackend) -> None:
    from airflow.sdk.exceptions import AirflowTaskTimeout

    backend.run_states = (RunLifecycle.RUNNING, AirflowTaskTimeout("execution_timeout"))
    with pytest.raises(AirflowTaskTimeout):
        operator().execute(context(Store()))
    assert ("cancel_run", "run-1") in backend.calls


def test_a_polling_error_past_the_tasks_deadline_cancels_the_run(backend: FakeBackend) -> None:
    """The backend rides out an incident until the task's deadline; failing then, the task's time
    is up, so the run is canceled as execution_timeout would."""
    backend.run_states = (*[RunLifecycle.RUNNING] * 3, AirflowException("503 until the end"))
    ctx = context(Store())
    ctx["ti"].start_date = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=10)  # 1 s left, at least
    with pytest.raises(AirflowException, match="503 until the end"):
        operator(poll_interval_s=0.6, execution_timeout=dt.timedelta(seconds=5)).execute(ctx)
    assert ("cancel_run", "run-1") in backend.calls


def test_the_deferral_gets_what_is_left_of_execution_timeout() -> None:
    ti = SimpleNamespace(start_date=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30))
    left = operator(execution_timeout=dt.timedelta(seconds=100))._time_left({"ti": ti})
    assert dt.timedelta(seconds=65) < left <= dt.timedelta(seconds=70)
    assert operator()._time_left({"ti": ti}) is None


def test_a_failed_run_fails_the_task_with_the_jobs_message(backend: FakeBackend) -> None:
    backend.run_states = (RunLifecycle.RUNNING, RunLifecycle.FAILED)
    with pytest.raises(RunError, match=r"inference run run-1 FAILED: the job failed"):
        operator().execute(context(Store()))


def test_progress_is_logged_and_a_progress_error_does_not_fail_the_wait(
    backend: FakeBackend, caplog, capsys
) -> None:
    backend.run_states = (RunLifecycle.RUNNING, RunLifecycle.RUNNING, RunLifecycle.SUCCESS)
    backend.progress = {"phase": "scoring", "rows_done": 3, "rows_total": 5}
    operator().execute(context(Store()))
    assert "Progress: 3/5 rows (60%) [scoring]" in logged(caplog, capsys)
    backend.progress = OSError("progress file unreadable")
    assert operator().execute(context(Store()))["rows_read"] == 5


def test_templated_numbers_and_dicts_reach_the_job_as_their_types(backend: FakeBackend) -> None:
    """What Jinja renders without render_template_as_native_obj: text for every value."""
    op = operator(
        batch_size="{{ params.batch_size }}",
        min_rows="{{ params.min_rows }}",
        model_options="{{ params.model_options }}",
        logical_date="{{ params.day }}",
    )
    params = {
        "batch_size": 16,
        "min_rows": 2,
        "model_options": {"seconds_per_batch": 0.5},
        "day": "2026-11-20",
    }
    op.render_template_fields({"params": params})
    assert op.batch_size == "16" and isinstance(op.model_options, str)  # as Airflow hands them over
    report = op.execute(context(Store()))
    job = backend.runs[report["run_id"]]["job"]
    assert (job.batch_size, job.model_options, job.logical_date, job.min_rows) == (
        16,
        {"seconds_per_batch": 0.5},
        "2026-11-20",
        2,
    )


def test_a_setting_that_cannot_be_coerced_fails_before_submitting_naming_it(backend: FakeBackend) -> None:
    with pytest.raises(ValueError, match=r"job setting 'batch_size' must be int, got 'sixty'"):
        operator(batch_size="sixty").execute(context(Store()))
    with pytest.raises(ValueError, match=r"job setting 'min_rows' must be int, got '1.5'"):
        operator(min_rows="1.5").execute(context(Store()))
    assert backend.submitted == []


def test_the_output_settings_reach_the_job_as_their_types_with_the_task_instance_as_writer(
    backend: FakeBackend,
) -> None:
    op = operator(
        write_mode="{{ params.mode }}",
        keep_columns="{{ params.keep }}",
        where="lang = '{{ params.lang }}'",
        max_reject_fraction="{{ params.fraction }}",
        lease_wait_s=30,
    )
    op.render_template_fields(
        {"params": {"mode": "merge", "keep": ["title"], "lang": "en", "fraction": 0.25}}
    )
    job = backend.runs[op.execute(context(Store()))["run_id"]]["job"]
    assert (job.write_mode, job.keep_columns, job.where, job.max_reject_fraction, job.lease_wait_s) == (
        "merge",
        ("title",),
        "lang = 'en'",
        0.25,
        30.0,
    )
    assert job.write_id == "d/infer/r/-1"  # every try of the task instance: one append, one lease holder


def test_an_unknown_write_mode_or_a_limit_without_dry_run_fails_before_submitting(
    backend: FakeBackend,
) -> None:
    with pytest.raises(ValueError, match=r"'write_mode' must be one of replace_date, append, merge"):
        operator(write_mode="upsert").execute(context(Store()))
    with pytest.raises(ValueError, match=r"'limit' must be >= 1 and needs dry_run=True"):
        operator(limit=5).execute(context(Store()))
    assert backend.submitted == []


def test_a_dry_run_ends_skipped_with_its_report_in_xcom_and_no_asset_event(backend: FakeBackend) -> None:
    from airflow.sdk import Asset
    from airflow.sdk.exceptions import AirflowSkipException

    pushed: dict[str, Any] = {}
    ctx = context(Store())
    ctx["ti"].xcom_push = lambda key, value: pushed.update({key: value})
    events: dict[Any, Any] = {}
    ctx["outlet_events"] = events
    op = operator(dry_run="{{ params.dry_run }}", limit=3, outlets=[Asset("file:///t/out")])
    op.render_template_fields({"params": {"dry_run": True}})
    with pytest.raises(AirflowSkipException, match=r"dry run of 2026-11-26: .* wrote nothing"):
        op.execute(ctx)
    job = backend.runs["run-1"]["job"]
    assert (job.dry_run, job.limit) == (True, 3)
    assert pushed["return_value"]["dry_run"] is True
    assert events == {}, "a dry run must not announce a write"


def test_the_xcom_is_bounded_whatever_the_report_holds(backend: FakeBackend, monkeypatch) -> None:
    from spark_jobs.contract import MAX_REPORT_BYTES, RunReport

    def huge_report(run_id: str) -> RunReport:
        report = RunReport.for_job(backend.runs[run_id]["job"].replace(run_id=run_id), rows_read=10**6)
        report.reject_reasons = {f"duplicate id {i}": 1 for i in range(100_000)}  # an older job's reasons
        report.reject_samples = {f"duplicate id {i}": [str(i) * 50] for i in range(100_000)}
        report.warnings = ["x" * 10_000] * 100
        report.error = "e" * 100_000
        return report

    monkeypatch.setattr(backend, "get_run_report", huge_report)
    result = operator().execute(context(Store()))
    import json

    assert len(json.dumps(result).encode()) <= MAX_REPORT_BYTES
    assert sum(result["reject_reasons"].values()) == 100_000  # counts survive, summed past the top ones
    assert result["warnings"][-1].startswith(f"report bounded to {MAX_REPORT_BYTES} bytes: left out")


@pytest.mark.parametrize(
    ("run_url", "run_link"),
    [
        ("file:///state/driver.log", "/spark-triton/run?dag_id=d&run_id=r&task_id=infer&map_index=-1"),
        ("https://x.cloud.databricks.com/#job/1/run/2", "https://x.cloud.databricks.com/#job/1/run/2"),
    ],
)
def test_extra_links_go_to_the_run_pages_from_the_start(
    backend: FakeBackend, monkeypatch: pytest.MonkeyPatch, run_url: str, run_link: str
) -> None:
    """Issue #27: the links are there before the run is (a page that says so), never ``file://``;
    a platform's own run page (Databricks) replaces the run link once the run is submitted."""
    from airflow_spark_triton.links import REPORT_SUMMARY_XCOM_KEY, RUN_PAGE_XCOM_KEY, RUN_XCOM_KEY

    pushed: list[tuple[str, Any]] = []
    ctx = context(Store())
    ctx["ti"].xcom_push = lambda key, value: pushed.append((key, value))
    real_status = backend.get_run_status
    monkeypatch.setattr(
        backend, "get_run_status", lambda run_id: dataclasses.replace(real_status(run_id), url=run_url)
    )
    operator().execute(ctx)
    first = dict(pushed[:2])
    assert first == {
        RUN_PAGE_XCOM_KEY: "/spark-triton/run?dag_id=d&run_id=r&task_id=infer&map_index=-1",
        REPORT_SUMMARY_XCOM_KEY: "/spark-triton/run/report?dag_id=d&run_id=r&task_id=infer&map_index=-1",
    }
    assert dict(pushed)[RUN_XCOM_KEY] == {"run_id": "run-1", "conn_id": "spark_triton_default"}
    assert dict(pushed)[RUN_PAGE_XCOM_KEY] == run_link
