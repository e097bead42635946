"""The run pages (issue #27) without a deployment: which run a task instance may show, what the pages
say before, during and after it, escaping, and Airflow's auth on every route of the mounted app.

The browser test against a running Airflow is ``tests/deployed/test_nightly_deployed.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_spark_triton.operators.inference import task_try_token
from airflow_spark_triton.runs.supervised import RUN_FILE
from airflow_spark_triton.runs.supervisor import DRIVER_LOG, STATUS_FILE
from airflow_spark_triton.ui import pages, urls
from airflow_spark_triton.ui.run_data import RunRefused, RunView, TaskInstanceRef, read_run
from spark_jobs.contract import REPORT_FILE, RunReport, progress_path

TI = TaskInstanceRef("nightly", "scheduled__2026-11-24T00:00:00+00:00", "embed", -1)
CLUSTER = "local-0123456789ab"
RUN = f"{CLUSTER}-run-0000beef"
LOCATOR = {"run_id": RUN, "conn_id": "spark_triton_default"}


def tokens(tries: int = 1) -> set[str]:
    return {task_try_token(TI.dag_id, TI.task_id, TI.run_id, TI.map_index, n) for n in range(1, tries + 1)}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The provider's state dir as the API server sees it (no connection: the local backend)."""
    monkeypatch.setenv("AIRFLOW_SPARK_TRITON_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("AIRFLOW_CONN_SPARK_TRITON_DEFAULT", raising=False)
    return tmp_path / "state"


def make_run(
    home: Path,
    state: str = "RUNNING",
    token_try: int = 1,
    progress: dict[str, Any] | None = None,
    report: dict[str, Any] | None = None,
    driver_log: str | None = None,
) -> Path:
    """A run directory as the supervisor and the job leave it (file names: the backend's own)."""
    run_dir = home / "clusters" / CLUSTER / "runs" / RUN
    run_dir.mkdir(parents=True)
    token = task_try_token(TI.dag_id, TI.task_id, TI.run_id, TI.map_index, token_try)
    (run_dir / RUN_FILE).write_text(json.dumps({"run_id": RUN, "idempotency_token": token}))
    (run_dir / STATUS_FILE).write_text(json.dumps({"run_id": RUN, "state": state, "message": ""}))
    for name, content in ((progress_path(REPORT_FILE).name, progress), (REPORT_FILE, report)):
        if content is not None:
            (run_dir / name).write_text(json.dumps(content))
    if driver_log is not None:
        (run_dir / DRIVER_LOG).write_text(driver_log)
    return run_dir


def view(ti_state: str = "running", try_number: int = 1) -> RunView:
    return RunView(TI, ti_state, try_number)


# What the job's report holds once the date is read and validated and the servers are up.
SO_FAR = RunReport(
    RUN, "2026-11-24", "m.odule:MODEL", "/t/in", "/t/out", "/t/out_rejects",
    rows_read=40, rows_to_score=37,
    reject_reasons={"text is null": 2, "text is empty": 1},
    reject_samples={"text is null": ["k1", "k7"], "text is empty": ["k3"]},
    servers=[{"host": "node-1", "pid": 42, "http_port": 8000}],
)  # fmt: skip
PROGRESS = {
    "phase": "inference",
    "rows_done": 12,
    "rows_total": 37,
    "rows_per_s": 3.0,
    "history": [[10.0, 0], [12.0, 4], [14.0, 12]],
    "report": SO_FAR.to_dict(),
}


def test_a_running_run_shows_its_progress_and_the_report_so_far(home: Path) -> None:
    make_run(home, progress=PROGRESS, driver_log="line 1\nline 2\n")
    shown = read_run(view(), LOCATOR, tokens())
    assert (shown.backend, shown.state, shown.finished, shown.live) == ("local", "RUNNING", False, True)
    counts = shown.counts()
    assert (counts["rows_read"], counts["rows_scored"], counts["rows_rejected"], counts["rows_total"]) == (
        40, 12, 3, 37,
    )  # fmt: skip
    page = pages.run_page(shown, "")
    assert "node-1" in page and "serving" in page and "k1, k7" in page and "/t/out" in page
    assert (
        'href="/spark-triton/run/driver-log?dag_id=nightly&amp;run_id=scheduled__2026-11-24T00%3A00%3A00%2B00%3A00'
        in page
    )
    assert shown.to_json()["history"] == PROGRESS["history"]
    report = pages.report_page(shown, "")
    assert "The report is written when the run ends" in report and "12 of 37 rows scored" in report


def test_a_finished_run_shows_its_report(home: Path) -> None:
    report = RunReport(RUN, "2026-11-24", "m.odule:MODEL", "/t/in", "/t/out", "/t/out_rejects",
                       status="SUCCESS", rows_read=40, rows_to_score=37, rows_scored=37, rows_rejected=3,
                       output_version=7, reject_reasons={"text is null": 3}, rows_per_s=12.5,
                       servers=[{"host": "node-1", "pid": 42}], servers_stopped=[{"host": "node-1", "pid": 42,
                       "stopped": True, "running": False}], timings_s={"total": 30.5})  # fmt: skip
    make_run(home, "SUCCESS", report=report.to_dict(), progress={**PROGRESS, "phase": "success"})
    shown = read_run(view("success"), LOCATOR, tokens())
    assert shown.finished and not shown.live and shown.report == report
    counts = shown.counts()
    assert (counts["rows_read"], counts["rows_scored"], counts["rows_rejected"]) == (40, 37, 3)
    assert counts["rows_per_s"] == 12.5  # the report's, not the last progress sample's
    page = pages.run_page(shown, "/airflow")
    assert "stopped" in page and "v7" in page and "total" in page
    assert (
        'href="/airflow/dags/nightly/runs/scheduled__2026-11-24T00%3A00%3A00%2B00%3A00/tasks/embed"' in page
    )
    assert "40 / 37 / 3" in pages.report_page(shown, "")  # the same row as report.md's


def test_a_dry_run_shows_its_samples_grouped_reasons_and_warnings(home: Path) -> None:
    """Issue #23/#24: a dry run's report (the task ends skipped) shows its write mode and sample rows,
    reasons as kinds with sample keys (the rest counted under 'other reasons'), and its warnings."""
    report = RunReport(RUN, "2026-11-24", "m.odule:MODEL", "/t/in", "/t/out", "/t/out_rejects",
                       status="SUCCESS", rows_read=40, rows_to_score=35, rows_scored=2, rows_rejected=5,
                       write_mode="replace_date", dry_run=True,
                       reject_reasons={"duplicate id": 3, "other reasons": 2},
                       reject_samples={"duplicate id": ["6", "9"]},
                       samples=[{"id": 1, "label": "POSITIVE", "score": 0.75},
                                {"id": 2, "label": "NEGATIVE | odd", "score": 0.5}],
                       warnings=["report bounded to 65536 bytes: left out 12 reject reasons"])  # fmt: skip
    make_run(home, "SUCCESS", report=report.to_dict(), progress={**PROGRESS, "phase": "success"})
    shown = read_run(view("skipped"), LOCATOR, tokens())
    page = pages.run_page(shown, "")
    assert "dry run: nothing written" in page and "Samples (dry run, 2 rows)" in page
    assert "POSITIVE" in page and "0.75" in page and "6, 9" in page and "other reasons" in page
    assert "left out 12 reject reasons" in page
    assert "Samples (dry run, 2 rows)" in pages.report_page(shown, "")
    from spark_jobs.progress import summary_markdown

    markdown = summary_markdown(report)
    assert "| id | label | score |" in markdown and "| 2 | NEGATIVE \\| odd | 0.5 |" in markdown


def test_before_the_date_is_validated_its_rejects_are_not_known(home: Path) -> None:
    """The report so far has the run's identity from the start; reject reasons only once validated."""
    started = RunReport.from_dict({**SO_FAR.to_dict(), "rows_read": None, "rows_to_score": None,
                                   "reject_reasons": {}, "reject_samples": {}, "servers": []})  # fmt: skip
    make_run(home, progress={"phase": "starting", "report": started.to_dict()})
    shown = read_run(view(), LOCATOR, tokens())
    assert shown.counts()["rows_rejected"] is None and not shown.validated()
    page = pages.run_page(shown, "")
    assert "Known once the date is read and validated" in page and "/t/out" in page
    assert "No Triton server started yet" in page


def test_a_task_without_a_run_yet_says_so() -> None:
    page = pages.run_page(view("queued", 0), "")
    assert "No inference run has been submitted by this try of the task yet" in page
    assert view("queued", 0).live and not view("success", 1).live


@pytest.mark.parametrize(
    "locator",
    [
        {"run_id": "../../../etc/passwd", "conn_id": "spark_triton_default"},
        {"run_id": f"{CLUSTER}-run-0000beef/../../x", "conn_id": "spark_triton_default"},
        {"run_id": "/etc", "conn_id": "spark_triton_default"},
        "not a record",
    ],
)
def test_a_run_id_that_is_no_run_of_the_backend_is_refused(home: Path, locator: Any) -> None:
    with pytest.raises(RunRefused) as refused:
        read_run(view(), locator, tokens())
    assert refused.value.status == 400


def test_a_run_another_task_submitted_is_refused(home: Path) -> None:
    """An XCom edited to name another task's run (of a DAG the user may not read) shows nothing."""
    make_run(home, token_try=3, progress=PROGRESS)
    with pytest.raises(RunRefused, match="not submitted by this task instance") as refused:
        read_run(view(try_number=2), LOCATOR, tokens(2))
    assert refused.value.status == 403
    assert read_run(view(try_number=3), LOCATOR, tokens(3)).state == "RUNNING"  # its own 3rd try's run


def test_a_run_not_in_this_servers_state_dir_is_explained(home: Path) -> None:
    shown = read_run(view(), LOCATOR, tokens())
    assert shown.state is None and "not in the state directory this API server sees" in (shown.note or "")
    assert "shared volume" in pages.run_page(shown, "")


def test_every_value_from_a_run_is_escaped(home: Path) -> None:
    evil = "<script>alert(1)</script>"
    progress = {**PROGRESS, "report": {**PROGRESS["report"], "output_table": evil,
                "reject_reasons": {evil: 1}, "reject_samples": {evil: [evil]}}}  # fmt: skip
    make_run(home, progress=progress)
    shown = read_run(view(), LOCATOR, tokens())
    shown.progress["history"] = [[0, "</script><script>alert(2)</script>"]]
    for page in (pages.run_page(shown, ""), pages.report_page(shown, "")):
        assert evil not in page and "alert(2)</script>" not in page
    shown.report = RunReport.from_dict({**progress["report"], "status": "SUCCESS", "dry_run": True,
                                        "samples": [{evil: evil}], "warnings": [evil]})  # fmt: skip
    for page in (pages.run_page(shown, ""), pages.report_page(shown, "")):
        assert evil not in page


# -- the app in Airflow's API server, with Airflow's auth manager ----------------------------------


@pytest.fixture(scope="module")
def api(airflow_db: Path):
    """Airflow's own API app (plugins mounted, SimpleAuthManager) and tokens of three users."""
    from airflow.api_fastapi.app import create_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    client = TestClient(create_app())
    manager = get_auth_manager()
    users = {
        role: manager.generate_jwt(SimpleAuthManagerUser(username=role.lower(), role=role))
        for role in ("ADMIN", "VIEWER")
    }
    users["NONE"] = manager.generate_jwt(SimpleAuthManagerUser(username="outsider", role=None))
    return client, users


ROUTES = (urls.RUN_PAGE, urls.PROGRESS_JSON, urls.REPORT_PAGE, urls.REPORT_JSON, urls.DRIVER_LOG_PAGE,
          urls.DRIVER_LOG_DOWNLOAD)  # fmt: skip


def get(api, page: str, user: str | None, dag_id: str = "nightly") -> Any:
    client, users = api
    headers = {"Authorization": f"Bearer {users[user]}"} if user else {}
    return client.get(urls.page_url(page, dag_id, TI.run_id, TI.task_id), headers=headers)


@pytest.mark.parametrize("page", ROUTES)
def test_every_route_is_authorized_by_the_auth_manager(api, page: str) -> None:
    assert get(api, page, None).status_code == 401
    assert get(api, page, "NONE").status_code == 403  # a user who may not read the DAG
    for user in ("ADMIN", "VIEWER"):  # may read it: past auth, to a task instance that does not exist
        response = get(api, page, user)
        assert response.status_code == 404 and "No task instance embed" in response.text


def test_the_dag_of_the_request_is_the_one_authorized(api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-DAG access is the auth manager's decision, for the DAG the page names."""
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    asked: list[tuple[str, Any]] = []

    def only_nightly(self, *, method, user, access_entity=None, details=None):
        asked.append((details.id, access_entity))
        return details.id == "nightly"

    monkeypatch.setattr(SimpleAuthManager, "is_authorized_dag", only_nightly)
    assert get(api, urls.RUN_PAGE, "VIEWER", dag_id="secret_dag").status_code == 403
    assert get(api, urls.RUN_PAGE, "VIEWER").status_code == 404  # allowed; no such task instance
    assert get(api, urls.DRIVER_LOG_PAGE, "VIEWER", dag_id="secret_dag").status_code == 403
    assert [(dag, entity.value) for dag, entity in asked] == [
        ("secret_dag", "TASK_INSTANCE"), ("nightly", "TASK_INSTANCE"), ("secret_dag", "TASK_LOGS"),
    ]  # fmt: skip
