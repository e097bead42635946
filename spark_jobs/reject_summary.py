"""What a run's report says about its rejected rows: a count and a few sample keys per kind of problem.

The rejects table holds every rejected row with its reason and detail; the report only aggregates,
and stays small whatever the input (:mod:`spark_jobs.contract.bounds`): reasons are kinds
(``duplicate id``, not ``duplicate id 6``: :mod:`spark_jobs.validation`), and both queries here are
bounded on the cluster, not on the driver: at most :data:`MAX_REJECT_REASONS` + 1 reason rows and
:data:`REJECT_SAMPLE_KEYS` keys per reason reach it, however many rows or reasons there are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyspark.sql import Window
from pyspark.sql import functions as F

from spark_jobs.contract.bounds import MAX_KEY_CHARS, MAX_REJECT_REASONS, OTHER_REASONS, REJECT_SAMPLE_KEYS
from spark_jobs.validation import REJECT_REASON

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def summarize_rejects(validated: DataFrame, key_column: str) -> tuple[dict[str, int], dict[str, list[str]]]:
    """``({reason: rows}, {reason: up to REJECT_SAMPLE_KEYS smallest keys as text})`` of the rows
    whose ``reject_reason`` is set; the reasons beyond the most frequent ones are summed under
    :data:`~spark_jobs.contract.bounds.OTHER_REASONS` (and have no samples)."""
    rejected = validated.where(F.col(REJECT_REASON).isNotNull())
    counts = rejected.groupBy(REJECT_REASON).count()
    top = counts.orderBy(F.desc("count"), F.asc(REJECT_REASON)).limit(MAX_REJECT_REASONS + 1).collect()
    reasons = {row[REJECT_REASON]: int(row["count"]) for row in top[:MAX_REJECT_REASONS]}
    if len(top) > MAX_REJECT_REASONS:  # more kinds than the report lists: count the rest, not list them
        total = rejected.count()
        reasons[OTHER_REASONS] = total - sum(reasons.values())
    if not reasons:
        return {}, {}
    key = F.substring(F.col(key_column).cast("string"), 1, MAX_KEY_CHARS)
    rank = F.row_number().over(Window.partitionBy(REJECT_REASON).orderBy(key.asc_nulls_last()))
    rows = (
        rejected.where(F.col(REJECT_REASON).isin(list(reasons)) & F.col(key_column).isNotNull())
        .select(F.col(REJECT_REASON), key.alias("key"), rank.alias("rank"))
        .where(F.col("rank") <= REJECT_SAMPLE_KEYS)
        .collect()
    )
    samples: dict[str, list[str]] = {}
    for row in sorted(rows, key=lambda r: (r[REJECT_REASON], r["rank"])):
        samples.setdefault(row[REJECT_REASON], []).append(row["key"])
    return reasons, samples
