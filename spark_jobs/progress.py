"""Run progress and the human-readable report, written next to the JSON report. No Airflow imports.

Progress: the predict function reports each finished batch's row count twice (one call per batch,
nothing per row): to the driver at once, over :mod:`spark_jobs.progress_channel`, and to a Spark
accumulator, which reaches the driver when its task ends (the record of finished tasks, and what
progress falls back to where the channel cannot connect). A daemon thread on the driver writes
``<report>.progress.json`` every ``interval_s`` with rows done / total, rows/s, the stage's task
counts, the history of rows done (the run page's rows/s chart) and the report so far (the job's
:class:`~spark_jobs.contract.RunReport` as far as it is filled in: tables, counts read and rejected,
reject reasons and sample keys, servers). If the session has no SparkContext (Spark Connect), there
is no accumulator and no task counts. The file is bounded whatever the run: counters, at most
:data:`HISTORY_POINTS` history points, and the report so far capped by
:func:`~spark_jobs.contract.bound_report` like the final one (under ``MAX_REPORT_BYTES``).

Summary: ``<report>.md``, a Markdown table of the report, written by the job with the report; the
run page in the Airflow UI renders the same :func:`summary_sections`.
Both file names are :mod:`spark_jobs.contract`'s (:func:`progress_path`, :func:`summary_path`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spark_jobs.contract import RunReport, bound_report, progress_path, summary_path
from spark_jobs.json_files import READABLE_MODE, write_json_atomic
from spark_jobs.progress_channel import ProgressListener, ProgressSender

HISTORY_POINTS = 240  # samples of rows done kept for the chart; halved (every other kept) when full


class ProgressReporter:
    """Writes ``{rows_done, rows_total, rows_per_s, tasks_done, tasks_total, ...}`` while a run scores."""

    def __init__(
        self,
        spark,
        report_path: str | None,
        interval_s: float = 2.0,
        report: RunReport | None = None,
    ) -> None:
        self.path = progress_path(report_path) if report_path else None
        self.interval_s = interval_s
        self.report = report  # the job's report, filled in as the run goes: the report so far
        self.rows_total: int | None = None
        self.phase = "starting"
        self._started = time.monotonic()
        self._inference_started: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._history: list[list[float]] = []
        self._flushing = threading.Lock()  # the writer thread and the job's own flushes
        self._listener: ProgressListener | None = None
        self._spark = spark
        self._sc = None
        self.accumulator = None
        with contextlib.suppress(Exception):  # Spark Connect: no SparkContext
            self._sc = spark.sparkContext
            self.accumulator = self._sc.accumulator(0)

    def start(self) -> ProgressReporter:
        if self.path is not None:
            self._listener = ProgressListener.for_spark(self._spark)
            self._thread = threading.Thread(target=self._loop, name="spark-triton-progress", daemon=True)
            self._thread.start()
        return self

    @property
    def sender(self) -> ProgressSender | None:
        """What the predict function reports each batch to (None: no listener, accumulator only)."""
        return self._listener.sender() if self._listener is not None else None

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
        if self._listener is not None:
            self._listener.close()

    def snapshot(self) -> dict[str, Any]:
        rows_done = None
        if self.accumulator is not None:
            with contextlib.suppress(Exception):
                rows_done = int(self.accumulator.value)
        if self._listener is not None:  # in-flight batches; the accumulator has finished tasks only
            rows_done = max(rows_done or 0, self._listener.rows_done())
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
        elapsed = round(time.monotonic() - self._started, 1)
        if self._inference_started is not None and rows_done is not None:
            self._record(elapsed, rows_done)
        # The job's thread keeps filling the report in: a shallow copy first, in one step, bounded like
        # the final report (bound_report replaces the copy's fields, never the job's own).
        report = bound_report(copy.copy(self.report)).to_dict() if self.report is not None else None
        return {
            "phase": self.phase,
            "rows_done": rows_done,
            "rows_total": self.rows_total,
            "rows_per_s": rate,
            "tasks_done": tasks_done,
            "tasks_total": tasks_total,
            "elapsed_s": elapsed,
            "updated_at": time.time(),
            "history": [list(point) for point in self._history],
            "report": report,
        }

    def _record(self, elapsed_s: float, rows_done: int) -> None:
        """``[elapsed_s, rows_done]`` for the chart; bounded: a full history keeps every other point."""
        plateau = len(self._history) > 1 and self._history[-2][1] == self._history[-1][1] == rows_done
        if plateau:  # still no new rows: move the plateau's end instead of adding a point
            self._history[-1][0] = elapsed_s
            return
        self._history.append([elapsed_s, rows_done])
        if len(self._history) > HISTORY_POINTS:
            self._history = self._history[:-1:2] + self._history[-1:]

    def flush(self) -> None:
        if self.path is None:
            return
        with self._flushing, contextlib.suppress(Exception):  # progress must never fail a run
            write_json_atomic(self.path, self.snapshot(), mode=READABLE_MODE)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()


class Code(str):
    """A cell shown as code: a table name, a model."""


# A cell: text, code, or parts of both ("`table` (v3)").
Cell = str | tuple[str, ...]


@dataclass(frozen=True)
class Section:
    """One part of the report's summary: a table (``header`` and ``rows``) or a preformatted ``text``."""

    title: str | None
    header: tuple[str, ...] = ()
    rows: tuple[tuple[Cell, ...], ...] = ()
    text: str | None = None


def summary_sections(report: RunReport) -> list[Section]:
    """The report's summary, once: ``report.md`` (:func:`summary_markdown`) and the run page in the
    Airflow UI render these same sections."""
    overview = (
        ("status", str(report.status)),
        ("logical date", str(report.logical_date)),
        ("model", Code(report.model)),
        ("input", (Code(report.input_table), f" (v{report.input_version})")),
        ("output", (Code(report.output_table), f" (v{report.output_version})")),
        ("rejects", (Code(report.rejects_table), f" (v{report.rejects_version})")),
        ("rows read / scored / rejected", f"{report.rows_read} / {report.rows_scored} / {report.rows_rejected}"),
        ("rows/s", str(report.rows_per_s)),
        ("Triton servers", str(len(report.servers))),
        ("write mode", "dry run: nothing written" if report.dry_run else str(report.write_mode)),
    )  # fmt: skip
    sections = [Section(None, ("", ""), overview)]
    if report.error:
        sections.append(Section("Error", text=str(report.error)))
    if report.warnings:
        sections.append(Section("Warnings", text="\n".join(str(w) for w in report.warnings)))
    if report.reject_reasons:
        rows = tuple(
            (reason, str(count), ", ".join(str(key) for key in report.reject_samples.get(reason, ())))
            for reason, count in sorted(report.reject_reasons.items())
        )
        sections.append(Section("Reject reasons", ("reason", "rows", "sample keys"), rows))
    if report.samples:
        sections.append(_samples_section(report.samples))
    timings = report.timings_s
    if timings:
        rows = tuple((step, str(seconds)) for step, seconds in timings.items())
        sections.append(Section("Timings (s)", ("step", "seconds"), rows))
    return sections


def _samples_section(samples: list[dict[str, Any]]) -> Section:
    """A dry run's scored rows (as the report holds them: a few, each value shortened), one column
    per output column in the rows' order."""
    header = tuple(dict.fromkeys(name for row in samples for name in row))
    rows = tuple(
        tuple(
            value if isinstance(value, str) else json.dumps(value, default=str)
            for value in (row.get(name) for name in header)
        )
        for row in samples
    )
    return Section(f"Samples (dry run, {len(samples)} rows)", header, rows)


def _markdown_cell(cell: Cell) -> str:
    parts = cell if isinstance(cell, tuple) else (cell,)
    text = "".join(f"`{part}`" if isinstance(part, Code) else part for part in parts)
    return text.replace("|", "\\|").replace("\n", " ")  # one table cell, whatever the value holds


def summary_markdown(report: RunReport) -> str:
    """The report as Markdown: status, counts, tables and versions, reject reasons, timings."""
    lines = [f"# Inference run `{report.run_id}`"]
    for section in summary_sections(report):
        lines += [""] + ([f"## {section.title}", ""] if section.title else [])
        if section.text is not None:
            lines += ["```", section.text, "```"]
            continue
        header = "|" + "|".join(f" {name} " if name else " " for name in section.header) + "|"
        lines += [header, "|" + "---|" * len(section.header)]
        lines += ["| " + " | ".join(_markdown_cell(c) for c in row) + " |" for row in section.rows]
    return "\n".join(lines) + "\n"


def write_summary(report_path: str, report: RunReport) -> Path:
    target = summary_path(report_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(summary_markdown(report))
    return target
