"""Extra links on the inference task: the run's page and its report summary.

The operator pushes each URL as an XCom when it knows it (the run page as soon as the run is
submitted); the link reads it back for the task instance the UI asks about.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.models.taskinstancekey import TaskInstanceKey
    from airflow.sdk import BaseOperator

RUN_PAGE_XCOM_KEY = "spark_triton_run_page_url"
REPORT_SUMMARY_XCOM_KEY = "spark_triton_report_summary_url"


class _XComLink(BaseOperatorLink):
    key = ""

    @property
    def xcom_key(self) -> str:
        return self.key

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        return XCom.get_value(key=self.key, ti_key=ti_key) or ""


class InferenceRunLink(_XComLink):
    """The run's page: Databricks' ``run_page_url``, or the local driver log (a ``file://`` URI)."""

    name = "Inference run"
    key = RUN_PAGE_XCOM_KEY


class InferenceReportLink(_XComLink):
    """The Markdown summary of the run report, next to the JSON report (a ``file://`` URI locally).

    On Databricks the summary sits on a Unity Catalog volume, which a browser cannot open by path,
    so the link is the run's page in the workspace (output, driver logs, Spark UI).
    """

    name = "Run report summary"
    key = REPORT_SUMMARY_XCOM_KEY
