"""Each partition's rows reach the model shortest first, and no row changes partition."""

from __future__ import annotations

from pyspark.sql import functions as F

from spark_jobs.batch_order import length_ordered


def _partitions(df, column):
    return [[row[column] for row in part] for part in df.rdd.glom().collect()]


def test_each_partition_is_in_length_order_and_keeps_its_rows(spark):
    texts = ["a" * n for n in (9, 2, 7, 1, 5, 8, 3, 6, 4, 10)]
    rdd = spark.sparkContext.parallelize(list(enumerate(texts)), 3)
    df = spark.createDataFrame(rdd, "id long, text string")
    before = _partitions(df, "id")
    ordered = length_ordered(df, ["text"])
    after = _partitions(ordered.select("id", F.length("text").alias("n")), "n")
    assert all(part == sorted(part) for part in after), after
    ids_after = _partitions(ordered, "id")
    assert [sorted(p) for p in ids_after] == [sorted(p) for p in before], "a row moved to another partition"
    assert ordered.count() == len(texts)


def test_several_text_columns_order_by_their_total_length_and_a_null_counts_as_empty(spark):
    rows = [(1, "aaaa", "aaaa"), (2, "a", None), (3, "aaaaaaaaa", "a"), (4, None, None), (5, "aa", "aaa")]
    df = spark.createDataFrame(rows, "id long, title string, body string").coalesce(1)
    assert [r.id for r in length_ordered(df, ["title", "body"]).collect()] == [4, 2, 5, 1, 3]


def test_inputs_that_are_not_text_keep_their_order(spark):
    df = spark.createDataFrame([(1, [3.0, 1.0]), (2, [1.0])], "id long, features array<double>")
    assert length_ordered(df, ["features"]) is df
