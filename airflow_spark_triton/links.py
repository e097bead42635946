"""Extra links on the inference task: the run's page and its report.

Airflow 3's API server draws an operator's links from XCom alone (a serialized DAG keeps each
link's ``xcom_key``, not its code), so the operator pushes every URL itself, as soon as the task
starts: the provider's run pages in the Airflow UI (:mod:`airflow_spark_triton.ui`), which say
what there is to see yet (no run submitted, no report before the run ends) instead of a 404. On
Databricks the run link becomes the workspace's run page once the run is submitted. Every URL is
``http(s)`` or a same-origin path: the UI silently drops any other link (``file://`` included).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.models.taskinstancekey import TaskInstanceKey
    from airflow.sdk import BaseOperator

RUN_PAGE_XCOM_KEY = "spark_triton_run_page_url"
REPORT_SUMMARY_XCOM_KEY = "spark_triton_report_summary_url"
# {"run_id": <backend run id>, "conn_id": <connection>}: how the run pages find the task's run.
RUN_XCOM_KEY = "spark_triton_run"


class _XComLink(BaseOperatorLink):
    key = ""

    @property
    def xcom_key(self) -> str:
        return self.key

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        return XCom.get_value(key=self.key, ti_key=ti_key) or ""


class InferenceRunLink(_XComLink):
    """The run's page: the provider's live run page in the Airflow UI (local and spark-submit), or
    Databricks' ``run_page_url`` once the run is submitted there."""

    name = "Inference run"
    key = RUN_PAGE_XCOM_KEY


class InferenceReportLink(_XComLink):
    """The run report (counts, tables and versions, reject reasons, timings) as a page of the Airflow
    UI, with the JSON beside it; on every backend (on Databricks it links the workspace run too)."""

    name = "Run report"
    key = REPORT_SUMMARY_XCOM_KEY
