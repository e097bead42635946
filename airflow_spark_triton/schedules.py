"""The schedule of a nightly scoring DAG: each run covers the day that has just ended.

Airflow 3 turns ``schedule="@daily"`` into a ``CronTriggerTimetable``: the run that fires at 00:00 on
day D has a zero-width data interval at D, so ``{{ ds }}`` is D, a day that has just begun (measured
under a running scheduler: 0 rows read, SUCCESS). A ``CronDataIntervalTimetable`` gives that run the
interval [D-1, D): its ``data_interval_start`` (the operator's default date) is the last complete
day, and ``airflow backfill create --from-date A --to-date B`` makes one run per day A..B, each
scoring its own day.
"""

from __future__ import annotations

from airflow.sdk import CronDataIntervalTimetable


def nightly(cron: str = "0 0 * * *", timezone: str = "UTC") -> CronDataIntervalTimetable:
    """One run per day that has ended, fired at ``cron`` (default midnight UTC)."""
    return CronDataIntervalTimetable(cron, timezone=timezone)
