"""Run progress and the human-readable report, written next to the JSON report. No Airflow imports.

Progress: the predict function adds each batch's row count to a Spark accumulator (one ``add`` per
batch, nothing per row), and a daemon thread on the driver writes ``<report>.progress.json`` every
few seconds with rows done / total, rows/s and the stage's task counts. Accumulators reach the
driver when a task ends, so progress moves per finished partition. If the session has no
SparkContext (Spark Connect), there is no accumulator and progress falls back to task counts.

Summary: ``<report>.md``, a Markdown table of the report, written by the job with the report.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

from spark_jobs.json_files import READABLE_MODE, driver_path, write_json_atomic

REPORT_FILE = "report.json"
PROGRESS_SUFFIX = ".progress.json"
SUMMARY_SUFFIX = ".md"
PROGRESS_FILE = "report" + PROGRESS_SUFFIX  # next to the local backend's report.json
SUMMARY_FILE = "report" + SUMMARY_SUFFIX


def sibling(report_path: str, suffix: str) -> Path:
    target = driver_path(report_path)
    return target.with_name(target.name.removesuffix(".json") + suffix)


class ProgressReporter:
    """Writes ``{rows_done, rows_total, rows_per_s, tasks_done, tasks_total, ...}`` while a run scores."""

    def __init__(self, spark, report_path: str | None, interval_s: float = 2.0) -> None:
        self.path = sibling(report_path, PROGRESS_SUFFIX) if report_path else None
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


def summary_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: status, counts, tables and versions, reject reasons, timings."""
    rows = [
        ("status", report.get("status")),
        ("logical date", report.get("logical_date")),
        ("model", f"`{report.get('model')}`"),
        ("input", f"`{report.get('input_table')}` (v{report.get('input_version')})"),
        ("output", f"`{report.get('output_table')}` (v{report.get('output_version')})"),
        ("rejects", f"`{report.get('rejects_table')}` (v{report.get('rejects_version')})"),
        ("rows read / scored / rejected",
         f"{report.get('rows_read')} / {report.get('rows_scored')} / {report.get('rows_rejected')}"),
        ("rows/s", report.get("rows_per_s")),
        ("Triton servers", len(report.get("servers") or [])),
    ]  # fmt: skip
    lines = [f"# Inference run `{report.get('run_id')}`", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    if report.get("error"):
        lines += ["", "## Error", "", "```", str(report["error"]), "```"]
    reasons = report.get("reject_reasons") or {}
    if reasons:
        lines += ["", "## Reject reasons", "", "| reason | rows |", "|---|---|"]
        lines += [f"| {reason} | {count} |" for reason, count in sorted(reasons.items())]
    timings = report.get("timings_s") or {}
    if timings:
        lines += ["", "## Timings (s)", "", "| step | seconds |", "|---|---|"]
        lines += [f"| {step} | {seconds} |" for step, seconds in timings.items()]
    return "\n".join(lines) + "\n"


def write_summary(report_path: str, report: dict[str, Any]) -> Path:
    target = sibling(report_path, SUMMARY_SUFFIX)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(summary_markdown(report))
    return target
