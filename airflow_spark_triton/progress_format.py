"""One line of run progress for task and triggerer logs. Imports nothing, so both can use it."""

from __future__ import annotations

from typing import Any


def format_progress(progress: dict[str, Any]) -> str:
    """``120/480 rows (25%), 310.5 rows/s, tasks 3/12 [inference]`` from a progress dict."""
    done, total = progress.get("rows_done"), progress.get("rows_total")
    parts = []
    if total:
        pct = f" ({100 * (done or 0) / total:.0f}%)" if done is not None else ""
        parts.append(f"{done if done is not None else '?'}/{total} rows{pct}")
    if progress.get("rows_per_s"):
        parts.append(f"{progress['rows_per_s']} rows/s")
    if progress.get("tasks_total"):
        parts.append(f"tasks {progress.get('tasks_done')}/{progress['tasks_total']}")
    return ", ".join(parts or ["no rows yet"]) + f" [{progress.get('phase', '?')}]"
