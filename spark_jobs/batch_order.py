"""Rows go to the model shortest text first within each partition, so a batch pads to its own length.

A text model pads every batch to its longest row. ``predict_batch_udf`` cuts each partition into
batches in the order the rows arrive, and Triton's dynamic batching merges those requests as they
come: in a table's own order a batch of 64 documents pads to the longest of 64 random lengths. Measured
on the bench's 20,000 documents with MiniLM's tokenizer (benchmarks/TUNING.md, "Length-ordered
batches"): 64-row batches in table order carry 1.255x the useful tokens; sorted within partitions
of 2,500 rows, 1.008x, and MiniLM spent 1.233x the CPU in table order. MLflow's
sentence-transformers flavor sorts inside each call for the same reason, which is why ``spark_udf``
led the Triton path on that model by 9-15% at 20,000 documents before the job sorted too.

The sort is local (``sortWithinPartitions``): no row moves to another partition and nothing is
shuffled, so the cost is one in-memory sort per partition. The result tables' rows are keyed, not
ordered, so nothing downstream sees the order. Inputs that are not text (tensors, images' bytes)
keep their order: their length says nothing about the model's work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def length_ordered(df: DataFrame, columns: Sequence[str]) -> DataFrame:
    """``df`` with each partition's rows in ascending total length of its string ``columns``
    (a null counts as empty); ``df`` unchanged when none of ``columns`` is a string."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType

    texts = [c for c in columns if isinstance(df.schema[c].dataType, StringType)]
    if not texts:
        return df
    lengths = [F.coalesce(F.length(F.col(c)), F.lit(0)) for c in texts]
    return df.sortWithinPartitions(sum(lengths[1:], lengths[0]))
