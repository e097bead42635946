"""Run progress and the human-readable report, written next to the JSON report. No Airflow imports.

Progress: the predict function adds each batch's row count to a Spark accumulator (one ``add`` per
batch, nothing per row), and a daemon thread on the driver writes ``<report>.progress.json`` every
few seconds with rows done / total, rows/s and the stage's task counts. Accumulators reach the
driver when a task ends, so progress moves per finished partition. If the session has no
SparkContext (Spark Connect), there is no accumulator and progress falls back to task counts.

Summary: ``<report>.md``, a Markdown table of the report, written by the job with the report.
Both file names are :mod:`spark_jobs.contract`'s (:func:`progress_path`, :func:`summary_path`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

from spark_jobs.contract import RunReport, progress_path, summary_path
from spark_jobs.json_files import READABLE_MODE, write_json_atomic


class ProgressReporter:
    """Writes ``{rows_done, rows_total, rows_per_s, tasks_done, tasks_total, ...}`` while a run scores."""

    def __init__(self, spark, report_path: str | None, interval_s: float = 2.0) -> None:
        self.path = progress_path(report_path) if report_path else None
        self.interval_s = interval_s
        self.rows_total: int | None = None
        self.phase = "starting"
        self._started = time.monotonic()
        self._inference_started: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sc = None
        self.accumulator = None
        with contextlib.suppress(Exception):  # Spark Connect: no SparkContext
            self._sc = spark.sparkContext
            self.accumulator = self._sc.accumulator(0)

    def start(self) -> ProgressReporter:
        if self.path is not None:
            self._thread = threading.Thread(target=self._loop, name="spark-triton-progress", daemon=True)
            self._thread.start()
        return self

    def inference_started(self, rows_total: int) -> None:
        self.rows_total = rows_total
        self.phase = "inference"
        self._inference_started = time.monotonic()
        self.flush()

    def stop(self, phase: str) -> None:
        self.phase = phase
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()

    def snapshot(self) -> dict[str, Any]:
        rows_done = None
        if self.accumulator is not None:
            with contextlib.suppress(Exception):
                rows_done = int(self.accumulator.value)
        if rows_done is not None and self.rows_total is not None:
            rows_done = min(rows_done, self.rows_total)  # a retried task counts its rows again
        tasks_done = tasks_total = None
        if self._sc is not None:
            with contextlib.suppress(Exception):
                tracker = self._sc.statusTracker()
                stages = [tracker.getStageInfo(s) for s in tracker.getActiveStageIds()]
                stages = [s for s in stages if s is not None]
                if stages:
                    tasks_done = sum(s.numCompletedTasks for s in stages)
                    tasks_total = sum(s.numTasks for s in stages)
        seconds = time.monotonic() - self._inference_started if self._inference_started else None
        rate = round(rows_done / seconds, 1) if rows_done and seconds else None
        return {
            "phase": self.phase,
            "rows_done": rows_done,
            "rows_total": self.rows_total,
            "rows_per_s": rate,
            "tasks_done": tasks_done,
            "tasks_total": tasks_total,
            "elapsed_s": round(time.monotonic() - self._started, 1),
            "updated_at": time.time(),
        }

    def flush(self) -> None:
        if self.path is None:
            return
        with contextlib.suppress(Exception):  # progress must never fail a run
            write_json_atomic(self.path, self.snapshot(), mode=READABLE_MODE)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()


def summary_markdown(report: RunReport) -> str:
    """The report as Markdown: status, counts, tables and versions, reject reasons, timings."""
    rows = [
        ("status", report.status),
        ("logical date", report.logical_date),
        ("model", f"`{report.model}`"),
        ("input", f"`{report.input_table}` (v{report.input_version})"),
        ("output", f"`{report.output_table}` (v{report.output_version})"),
        ("rejects", f"`{report.rejects_table}` (v{report.rejects_version})"),
        (
            "rows read / scored / rejected",
            f"{report.rows_read} / {report.rows_scored} / {report.rows_rejected}",
        ),
        ("rows/s", report.rows_per_s),
        ("Triton servers", len(report.servers)),
    ]
    lines = [f"# Inference run `{report.run_id}`", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    if report.error:
        lines += ["", "## Error", "", "```", report.error, "```"]
    reasons = report.reject_reasons
    if reasons:
        lines += ["", "## Reject reasons", "", "| reason | rows |", "|---|---|"]
        lines += [f"| {reason} | {count} |" for reason, count in sorted(reasons.items())]
    timings = report.timings_s
    if timings:
        lines += ["", "## Timings (s)", "", "| step | seconds |", "|---|---|"]
        lines += [f"| {step} | {seconds} |" for step, seconds in timings.items()]
    return "\n".join(lines) + "\n"


def write_summary(report_path: str, report: RunReport) -> Path:
    target = summary_path(report_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(summary_markdown(report))
    return target
