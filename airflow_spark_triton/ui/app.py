"""The run pages' FastAPI app, mounted by the API server at ``/spark-triton`` (:mod:`.plugin`).

Every route names a task instance by query parameters (``dag_id``, ``run_id``, ``task_id``,
``map_index``) and is authorized by Airflow's own dependency, as the UI's task instance routes are:
``requires_access_dag("GET", TASK_INSTANCE)`` (``TASK_LOGS`` for the driver log) through the
configured auth manager, with the user from the UI's session cookie or a bearer token. No route
takes a path: the run is the one the task recorded (:mod:`.run_data`), its files have fixed names
under a run directory the backend derives from a validated run id.

Routes are plain functions (FastAPI runs them in its thread pool): they read files and may call
the Databricks API.
"""

from __future__ import annotations

from typing import Annotated, Any

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import requires_access_dag
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from sqlalchemy import select

from airflow_spark_triton.links import RUN_XCOM_KEY
from airflow_spark_triton.ui import pages, urls
from airflow_spark_triton.ui.run_data import (
    DRIVER_LOG_LINES,
    RunRefused,
    RunView,
    TaskInstanceRef,
    driver_log_tail,
    read_run,
)

TaskInstanceAccess = Depends(requires_access_dag("GET", DagAccessEntity.TASK_INSTANCE))
TaskLogAccess = Depends(requires_access_dag("GET", DagAccessEntity.TASK_LOGS))


class TaskInstanceMissing(Exception):
    pass


def task_instance_ref(
    dag_id: Annotated[str, Query(min_length=1, max_length=250)],
    run_id: Annotated[str, Query(min_length=1, max_length=250)],
    task_id: Annotated[str, Query(min_length=1, max_length=250)],
    map_index: Annotated[int, Query(ge=-1)] = -1,
) -> TaskInstanceRef:
    return TaskInstanceRef(dag_id, run_id, task_id, map_index)


TaskInstanceDep = Annotated[TaskInstanceRef, Depends(task_instance_ref)]


def load_view(ref: TaskInstanceRef, session: Any) -> RunView:
    """The task instance from the metadata DB, its run from the task's XCom and the run's backend."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel

    from airflow_spark_triton.operators.inference import task_try_token

    ti = session.scalar(
        select(TaskInstance).where(
            TaskInstance.dag_id == ref.dag_id,
            TaskInstance.run_id == ref.run_id,
            TaskInstance.task_id == ref.task_id,
            TaskInstance.map_index == ref.map_index,
        )
    )
    if ti is None:
        raise TaskInstanceMissing(
            f"No task instance {ref.task_id} (map index {ref.map_index}) in run {ref.run_id} of DAG {ref.dag_id}"
        )
    try_number = int(ti.try_number or 0)
    view = RunView(ref, str(ti.state) if ti.state is not None else None, try_number)
    row = session.scalars(
        XComModel.get_many(
            key=RUN_XCOM_KEY,
            run_id=ref.run_id,
            dag_ids=ref.dag_id,
            task_ids=ref.task_id,
            map_indexes=ref.map_index,
        )
    ).first()
    if row is None:
        return view
    tokens = {
        task_try_token(ref.dag_id, ref.task_id, ref.run_id, ref.map_index, n)
        for n in range(1, try_number + 1)
    }
    return read_run(view, XComModel.deserialize_value(row), tokens)


def create_app() -> FastAPI:
    app = FastAPI(
        title="Spark + Triton run pages",
        description="Inference runs of airflow-spark-triton tasks: progress, report, driver log.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.exception_handler(TaskInstanceMissing)
    def _missing(request: Request, exc: TaskInstanceMissing) -> Response:
        return _message(request, "No such task instance", str(exc), 404)

    @app.exception_handler(RunRefused)
    def _refused(request: Request, exc: RunRefused) -> Response:
        return _message(request, "Run not shown", str(exc), exc.status)

    def root(request: Request) -> str:
        """The API server's root path (an Airflow under a prefix), for links back into the UI."""
        return str(request.scope.get("root_path", "")).removesuffix(urls.PLUGIN_PREFIX)

    @app.get(f"/{urls.RUN_PAGE}", dependencies=[TaskInstanceAccess], response_class=HTMLResponse)
    def run_page(request: Request, ref: TaskInstanceDep, session: SessionDep) -> HTMLResponse:
        return HTMLResponse(pages.run_page(load_view(ref, session), root(request)))

    @app.get(f"/{urls.PROGRESS_JSON}", dependencies=[TaskInstanceAccess])
    def progress_json(ref: TaskInstanceDep, session: SessionDep) -> JSONResponse:
        return JSONResponse(load_view(ref, session).to_json(), headers={"Cache-Control": "no-store"})

    @app.get(f"/{urls.REPORT_PAGE}", dependencies=[TaskInstanceAccess], response_class=HTMLResponse)
    def report_page(request: Request, ref: TaskInstanceDep, session: SessionDep) -> HTMLResponse:
        return HTMLResponse(pages.report_page(load_view(ref, session), root(request)))

    @app.get(f"/{urls.REPORT_JSON}", dependencies=[TaskInstanceAccess])
    def report_json(ref: TaskInstanceDep, session: SessionDep) -> JSONResponse:
        view = load_view(ref, session)
        if view.report is None:
            why = view.note or (
                "no run submitted yet" if view.run_id is None else f"run {view.run_id} is {view.state}"
            )
            return JSONResponse({"report": None, "reason": f"no report yet: {why}"})
        return JSONResponse(view.report.to_dict())

    @app.get(f"/{urls.DRIVER_LOG_PAGE}", dependencies=[TaskLogAccess], response_class=HTMLResponse)
    def driver_log_page(
        request: Request,
        ref: TaskInstanceDep,
        session: SessionDep,
        lines: Annotated[int, Query(ge=1, le=20000)] = DRIVER_LOG_LINES,
    ) -> HTMLResponse:
        view = load_view(ref, session)
        return HTMLResponse(pages.driver_log_page(view, root(request), driver_log_tail(view, lines), lines))

    @app.get(f"/{urls.DRIVER_LOG_DOWNLOAD}", dependencies=[TaskLogAccess])
    def driver_log_download(ref: TaskInstanceDep, session: SessionDep) -> Response:
        view = load_view(ref, session)
        if view.driver_log is None:
            return PlainTextResponse("no driver log for this task instance (yet)", status_code=404)
        name = f"{view.run_id}-driver.log"
        return FileResponse(view.driver_log, media_type="text/plain; charset=utf-8", filename=name)

    return app


def _message(request: Request, title: str, message: str, status: int) -> Response:
    """JSON for the page's script, HTML for a person."""
    if request.url.path.endswith(".json"):
        return JSONResponse({"detail": message}, status_code=status)
    return HTMLResponse(pages.message_page(title, message), status_code=status)
