"""Where the run pages are: the extra links' targets, built by the task, served by :mod:`.app`.

A page is named by its task instance (DAG, DAG run, task, map index), never by a path or a backend
run id: the API server authorizes the DAG like any other UI page and finds the run itself. Links
are paths without a host, so they are same-origin to whatever address the UI is opened on (the UI
draws no link that is not); ``[api] base_url``'s path is kept for an Airflow served under a prefix.
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

PLUGIN_PREFIX = "/spark-triton"
RUN_PAGE = "run"
REPORT_PAGE = "run/report"
REPORT_JSON = "run/report.json"
PROGRESS_JSON = "run/progress.json"
DRIVER_LOG_PAGE = "run/driver-log"
DRIVER_LOG_DOWNLOAD = "run/driver-log/download"


def ti_query(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    return urlencode({"dag_id": dag_id, "run_id": run_id, "task_id": task_id, "map_index": map_index})


def page_url(
    page: str, dag_id: str, run_id: str, task_id: str, map_index: int = -1, base_url: str | None = None
) -> str:
    """``<base_url's path>/spark-triton/<page>?dag_id=...&run_id=...&task_id=...&map_index=...``."""
    root = urlsplit(base_url).path.rstrip("/") if base_url else ""
    return f"{root}{PLUGIN_PREFIX}/{page}?{ti_query(dag_id, run_id, task_id, map_index)}"
