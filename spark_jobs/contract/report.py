"""What the job reports back: the run report, the files beside it, and the line it prints on failure.

The job writes :class:`RunReport` as JSON to the job argument's ``report_path`` (``report.json`` in a
local run's directory, ``<artifact_root>/reports/<token>.json`` on Databricks), a Markdown summary and
its progress next to it (:func:`summary_path`, :func:`progress_path`), and on failure prints one line
starting with :data:`ERROR_PREFIX`. Every backend reads these through this module, and the inference
task's XCom is :meth:`RunReport.to_dict`.

Reading is tolerant: a report written by a newer job keeps the keys this version does not know in
:attr:`RunReport.extra` (and gives them back in :meth:`RunReport.to_dict`), so one side can be upgraded
before the other without losing a field.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from spark_jobs.contract.job_config import CONTRACT_VERSION, CONTRACT_VERSION_KEY
from spark_jobs.json_files import driver_path

if TYPE_CHECKING:
    from spark_jobs.contract.job_config import InferenceJobConfig

#: The report's file name where a backend chooses it (the local and spark-submit run directories).
REPORT_FILE = "report.json"
PROGRESS_SUFFIX = ".progress.json"
SUMMARY_SUFFIX = ".md"

#: What the job prints before its one-line error summary when it fails; backends look for it in the
#: driver's output (the run supervisor) or the run's logs (Databricks) to show the job's own error.
ERROR_PREFIX = "SPARK_TRITON_ERROR:"
#: "pkg.module.SomeError: message" at the start of a line: one exception of a (nested) traceback.
EXCEPTION_LINE = re.compile(
    r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt|Timeout)\b:?.*"
)

RunReportStatus = Literal["RUNNING", "SUCCESS", "FAILED", "CANCELED"]


def _sibling(report_path: str | Path, suffix: str) -> Path:
    target = driver_path(str(report_path))
    return target.with_name(target.name.removesuffix(".json") + suffix)


def progress_path(report_path: str | Path) -> Path:
    """``<report>.progress.json``: the job's progress while it runs (rows done/total, rows/s)."""
    return _sibling(report_path, PROGRESS_SUFFIX)


def summary_path(report_path: str | Path) -> Path:
    """``<report>.md``: the report as Markdown, for people (the task's report link)."""
    return _sibling(report_path, SUMMARY_SUFFIX)


class ReportError(ValueError):
    """A report that cannot be read as a :class:`RunReport`; the message names what is wrong."""


@dataclass
class RunReport:
    """One run's outcome: status, row counts, Delta versions, servers and timings.

    Filled by the job as the run goes (a field is None until its step ran) and written whatever the
    outcome. ``rows_scored + rows_rejected == rows_read`` holds for every successful run that wrote
    (a dry run scores a sample: ``rows_scored`` is its size). Its size is bounded
    (:func:`spark_jobs.contract.bounds.bound_report`): the job and the operator bound it before
    writing it or pushing it to XCom.
    """

    run_id: str
    logical_date: str
    model: str
    input_table: str
    output_table: str
    rejects_table: str | None
    status: RunReportStatus = "RUNNING"
    model_version: str | None = None  # the registry version served (an MLflow ``models:/`` model)
    error: str | None = None  # FAILED or CANCELED: the exception, ``Type: message``
    warnings: list[str] = field(default_factory=list)  # e.g. an input date without rows
    delta_engine: str | None = None
    input_version: int | None = None
    output_version: int | None = None
    rejects_version: int | None = None
    rows_read: int | None = None
    rows_to_score: int | None = None
    rows_scored: int | None = None
    rows_rejected: int | None = None
    reject_reasons: dict[str, int] = field(default_factory=dict)  # rows per kind of problem
    reject_samples: dict[str, list[str]] = field(default_factory=dict)  # a few keys per kind
    write_mode: str | None = None
    dry_run: bool = False
    samples: list[dict[str, Any]] = field(default_factory=list)  # a dry run's scored rows, shortened
    rows_per_s: float | None = None
    servers: list[dict[str, Any]] = field(default_factory=list)  # one per node: host, pid, ports
    servers_stopped: list[dict[str, Any]] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # keys of a newer contract, kept as read

    @classmethod
    def for_job(cls, job: InferenceJobConfig, **fields: Any) -> RunReport:
        """A report of ``job``'s run, its identity (run, date, model, tables) taken from the job."""
        return cls(
            run_id=job.run_id,
            logical_date=job.logical_date,
            model=job.model,
            model_version=job.model_version,
            input_table=job.input_table,
            output_table=job.output_table,
            rejects_table=job.rejects_table,
            write_mode=job.write_mode,
            dry_run=job.dry_run,
            **fields,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (the report file, the task's XCom); :attr:`extra` keys at the top level."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {
            **self.extra,
            CONTRACT_VERSION_KEY: CONTRACT_VERSION,
            **json.loads(json.dumps(data, default=str)),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunReport:
        if not isinstance(data, dict):
            raise ReportError(f"a run report is a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        required = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [name for name in required if name not in data]
        if missing:
            raise ReportError(f"the run report lacks {', '.join(missing)}")
        extra = {k: v for k, v in data.items() if k not in known and k != CONTRACT_VERSION_KEY}
        return cls(**{k: v for k, v in data.items() if k in known}, extra=extra)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> RunReport:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ReportError(f"the run report is not JSON: {exc}") from exc
        return cls.from_dict(data)
