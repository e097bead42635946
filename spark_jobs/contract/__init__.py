"""The job contract: everything the job on the cluster and the Airflow side agree on, in one place.

The job (:mod:`spark_jobs.batch_inference`), every backend, the operators and the tests import these
names from here and nowhere else; nothing else is shared between the two sides by string:

* the job argument: :class:`InferenceJobConfig` (its JSON, :data:`JOB_ARG`, :data:`CONTRACT_VERSION`,
  the fields a backend fills with :meth:`~InferenceJobConfig.for_run`), the entry point
  :data:`JOB_SCRIPT` and the rejects table default (:func:`default_rejects_table`);
* what the job reports back: :class:`RunReport` (bounded in size: :func:`bound_report`), the files beside it (:data:`REPORT_FILE`,
  :func:`progress_path`, :func:`summary_path`) and, on failure, the line that starts with
  :data:`ERROR_PREFIX`.

Plain Python (no Spark, no Airflow): the Airflow side imports it at DAG-parse time, and the
spark-submit backend ships it to clusters inside ``spark_jobs``.
"""

from __future__ import annotations

from spark_jobs.contract.bounds import MAX_REPORT_BYTES, bound_report
from spark_jobs.contract.job_config import (
    APPEND,
    CONTRACT_VERSION,
    DEFAULT_RUN_ID,
    JOB_ARG,
    JOB_SCRIPT,
    MERGE,
    OUTPUT_META_COLUMNS,
    REPLACE_DATE,
    WRITE_MODES,
    InferenceJobConfig,
    JobConfigError,
    default_lease_table,
    default_rejects_table,
)
from spark_jobs.contract.report import (
    ERROR_PREFIX,
    EXCEPTION_LINE,
    REPORT_FILE,
    ReportError,
    RunReport,
    RunReportStatus,
    progress_path,
    summary_path,
)

__all__ = [
    "APPEND",
    "CONTRACT_VERSION",
    "DEFAULT_RUN_ID",
    "ERROR_PREFIX",
    "EXCEPTION_LINE",
    "JOB_ARG",
    "JOB_SCRIPT",
    "MAX_REPORT_BYTES",
    "MERGE",
    "OUTPUT_META_COLUMNS",
    "REPLACE_DATE",
    "REPORT_FILE",
    "WRITE_MODES",
    "InferenceJobConfig",
    "JobConfigError",
    "ReportError",
    "RunReport",
    "RunReportStatus",
    "bound_report",
    "default_lease_table",
    "default_rejects_table",
    "progress_path",
    "summary_path",
]
