"""Delta I/O through delta-rs on plain Spark: one date read exactly, one date replaced atomically."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from spark_jobs import delta_io
from spark_jobs.delta_io import (
    DeltaCommitConflict,
    DeltaFeatureNotSupported,
    DeltaRsIO,
    DeltaSchemaError,
    DeltaSparkIO,
    DeltaTableNotFound,
    delta_io_for,
    write_pandas_table,
)

DAY1, DAY2 = "2026-11-23", "2026-11-24"
SCHEMA = "id long, text string, embedding array<float>"


@pytest.fixture
def io(spark) -> DeltaRsIO:
    return DeltaRsIO(spark)


def scored(spark, ids: list[int], tag: str = "a", **extra):
    rows = [(i, f"{tag}{i}", [float(i), 0.1, -1.5]) for i in ids]
    df = spark.createDataFrame(rows, SCHEMA)
    for name, column in extra.items():
        df = df.withColumn(name, column)
    return df


def table_rows(path: Path, day: str | None = None) -> list[dict]:
    table = DeltaTable(str(path)).to_pyarrow_table()
    rows = sorted(table.to_pylist(), key=lambda r: (r["date"], r["id"]))
    return [r for r in rows if day is None or r["date"] == day]


def staging_dirs(path: Path) -> list[Path]:
    return sorted(path.glob("date=*/run-*"))


def retries(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "lost to another writer" in r.getMessage()]


def before_each_commit(monkeypatch, interpose) -> None:
    """Run ``interpose()`` inside every delta-rs commit replace_date makes, after its snapshot was opened.

    delta-rs checks a commit against the commits that landed since the snapshot it was built on, so a
    commit landing here is exactly another run committing while this one was between read and commit.
    """
    import deltalake.transaction

    commits = [
        (DeltaTable, "create_write_transaction"),
        (deltalake.transaction, "create_table_with_add_actions"),
    ]
    for owner, name in commits:
        real = getattr(owner, name)

        def commit(*args, _real=real, **kwargs):
            interpose()
            return _real(*args, **kwargs)

        monkeypatch.setattr(owner, name, commit)


def documents(days: dict[str, int]) -> pd.DataFrame:
    rows = [(day, n * 10 + i, f"doc {day} {i}") for n, (day, k) in enumerate(days.items()) for i in range(k)]
    return pd.DataFrame(rows, columns=["date", "id", "text"])


def test_first_write_creates_the_table_partitioned_by_date(spark, io, tmp_path):
    from pyspark.sql import functions as F

    out = tmp_path / "out"
    df = scored(spark, [1, 2, 3], scored_at=F.current_timestamp(), model=F.lit("m"))
    assert io.replace_date(df, str(out), "date", DAY1, "run-1") == 0

    delta = DeltaTable(str(out))
    assert delta.version() == 0
    assert delta.metadata().partition_columns == ["date"]
    assert [f.name for f in pa.schema(delta.schema().to_arrow())] == [
        "id", "text", "embedding", "scored_at", "model", "date"
    ]  # fmt: skip
    rows = table_rows(out)
    assert [(r["id"], r["text"], r["date"], r["model"]) for r in rows] == [
        (1, "a1", DAY1, "m"), (2, "a2", DAY1, "m"), (3, "a3", DAY1, "m")
    ]  # fmt: skip
    stamp = rows[0]["scored_at"]
    assert stamp.tzinfo is not None and abs(stamp - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)
    assert delta.count() == 3  # numRecords stats made it into the log
    assert io.table_version(str(out)) == 0
    # Spark marks literals NOT NULL; the table must not inherit that, or the next run's data breaks it.
    assert all(f.nullable for f in pa.schema(delta.schema().to_arrow()))


def test_timestamps_are_written_as_int64_micros_and_the_session_conf_is_restored(spark, io, tmp_path):
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F

    out = tmp_path / "out"
    before = spark.conf.get("spark.sql.parquet.outputTimestampType")
    io.replace_date(scored(spark, [1], scored_at=F.current_timestamp()), str(out), "date", DAY1, "run-1")

    # One row on local[2]: Spark also writes a file for the empty task, which is not committed.
    [part] = DeltaTable(str(out)).file_uris()
    column = pq.ParquetFile(part).metadata.schema.column(3)
    assert (column.name, column.physical_type) == ("scored_at", "INT64")
    assert "timeUnit=microseconds" in str(column.logical_type)
    assert spark.conf.get("spark.sql.parquet.outputTimestampType") == before


def test_second_write_of_a_date_replaces_its_rows_in_one_new_version(spark, io, tmp_path):
    out = tmp_path / "out"
    io.replace_date(scored(spark, [1, 2, 3], "old"), str(out), "date", DAY1, "run-1")
    first_files = DeltaTable(str(out)).file_uris()

    assert io.replace_date(scored(spark, [4, 5, 6], "new"), str(out), "date", DAY1, "run-2") == 1

    delta = DeltaTable(str(out))
    assert delta.version() == 1
    assert [(r["id"], r["text"]) for r in table_rows(out)] == [(4, "new4"), (5, "new5"), (6, "new6")]
    assert not set(first_files) & set(delta.file_uris())  # the old files are logically removed
    assert all("/run-run-2-" in uri for uri in delta.file_uris())
    history = delta.history(1)[0]
    assert history["version"] == 1 and history["userMetadata"].startswith("spark-triton run_id=run-2 ")
    assert DeltaTable(str(out), version=0).count() == 3


def test_writing_another_date_leaves_the_first_untouched(spark, io, tmp_path):
    out = tmp_path / "out"
    io.replace_date(scored(spark, [1, 2]), str(out), "date", DAY1, "run-1")
    before = table_rows(out, DAY1)

    assert io.replace_date(scored(spark, [7]), str(out), "date", DAY2, "run-2") == 1

    assert table_rows(out, DAY1) == before
    assert [r["id"] for r in table_rows(out, DAY2)] == [7]


def test_run_id_and_date_column_in_the_data_do_not_leak_into_paths_or_rows(spark, io, tmp_path):
    from pyspark.sql import functions as F

    out = tmp_path / "out"
    df = scored(spark, [1], date=F.lit("1999-01-01"))
    io.replace_date(df, str(out), "date", DAY1, "scheduled__2026-11-24T00:00:00+00:00")

    assert [r["date"] for r in table_rows(out)] == [DAY1]
    [staged] = staging_dirs(out)
    assert staged.parent.name == f"date={DAY1}"
    assert staged.name.startswith("run-scheduled__2026-11-24T00_00_00_00_00-")


def test_read_date_returns_exactly_that_dates_rows_with_the_partition_column(spark, io, tmp_path):
    table = tmp_path / "documents"
    version = write_pandas_table(str(table), documents({DAY1: 3, DAY2: 2}), partition_by=["date"])

    result = io.read_date(str(table), "date", DAY2, ["id", "text"])

    assert result.version == version == 0
    rows = sorted(tuple(r) for r in result.df.select("date", "id", "text").collect())
    assert rows == [(DAY2, 10, f"doc {DAY2} 0"), (DAY2, 11, f"doc {DAY2} 1")]
    assert result.df.columns == ["date", "id", "text"]


def test_read_of_a_date_without_rows_is_empty_with_the_tables_schema(spark, io, tmp_path):
    table = tmp_path / "documents"
    write_pandas_table(str(table), documents({DAY1: 2}), partition_by=["date"])

    result = io.read_date(str(table), "date", DAY2, ["id", "text"])

    assert result.df.count() == 0
    assert result.df.schema.simpleString() == "struct<date:string,id:bigint,text:string>"


def test_input_table_not_partitioned_by_its_date_column(spark, io, tmp_path):
    table = tmp_path / "documents"
    write_pandas_table(str(table), documents({DAY1: 2, DAY2: 1}))  # one file holding both dates
    version = write_pandas_table(str(table), documents({"2026-11-25": 1, DAY2: 2}), mode="append")

    result = io.read_date(str(table), "date", DAY2, ["id"])

    assert result.version == version == 1
    assert sorted(r.id for r in result.df.collect()) == [10, 10, 11]
    assert io.read_date(str(table), "date", "2026-01-01", ["id"]).df.count() == 0


def test_date_typed_partition_column_and_file_uri(spark, io, tmp_path):
    table = tmp_path / "typed"
    frame = documents({DAY1: 1, DAY2: 2}).assign(date=lambda d: pd.to_datetime(d["date"]).dt.date)
    write_pandas_table(str(table), frame, partition_by=["date"])

    result = io.read_date(f"file://{table}", "date", DAY2, ["id"])

    assert sorted((r.date, r.id) for r in result.df.collect()) == [
        (dt.date(2026, 11, 24), 10), (dt.date(2026, 11, 24), 11)
    ]  # fmt: skip


@pytest.mark.parametrize("partitioned", [False, True], ids=["stats", "partition"])
def test_a_timestamp_date_column_selects_that_utc_day_in_any_session_time_zone(
    spark, io, tmp_path, partitioned
):
    utc = dt.UTC
    stamps = [
        dt.datetime(2026, 11, 23, 23, 59, 59, tzinfo=utc),  # the day before, in UTC
        dt.datetime(2026, 11, 24, 0, 0, tzinfo=utc),
        dt.datetime(2026, 11, 24, 23, 59, 59, 999999, tzinfo=utc),
        dt.datetime(2026, 11, 25, 0, 0, tzinfo=utc),  # the day after
    ]
    table = pa.table({"id": [1, 2, 3, 4], "event_time": pa.array(stamps, pa.timestamp("us", tz="UTC"))})
    write_deltalake(str(tmp_path / "events"), table, partition_by=["event_time"] if partitioned else None)
    spark.conf.set("spark.sql.session.timeZone", "America/Los_Angeles")
    try:
        result = io.read_date(str(tmp_path / "events"), "event_time", DAY2, ["id"])
        assert sorted(r.id for r in result.df.collect()) == [2, 3]
    finally:
        spark.conf.set("spark.sql.session.timeZone", "UTC")


def test_a_timestamp_ntz_date_column_selects_that_days_wall_clock_times(spark, io, tmp_path):
    stamps = [
        dt.datetime(2026, 11, 23, 23, 59),
        dt.datetime(2026, 11, 24, 0, 0),
        dt.datetime(2026, 11, 24, 23, 0),
    ]
    table = pa.table({"id": [1, 2, 3], "local_time": pa.array(stamps, pa.timestamp("us"))})
    write_deltalake(str(tmp_path / "local"), table)
    result = io.read_date(str(tmp_path / "local"), "local_time", DAY2, ["id"])
    assert sorted(r.id for r in result.df.collect()) == [2, 3]


def test_a_date_column_of_another_type_is_refused_naming_it(spark, io, tmp_path):
    write_deltalake(str(tmp_path / "numbered"), pa.table({"id": [1], "day": [20261124]}))
    with pytest.raises(DeltaSchemaError, match=r"column 'day' \(date_column\) is bigint"):
        io.read_date(str(tmp_path / "numbered"), "day", DAY2, ["id"])


def test_output_written_by_replace_date_reads_back_through_read_date(spark, io, tmp_path):
    out = tmp_path / "out"
    io.replace_date(scored(spark, [1, 2]), str(out), "date", DAY1, "run-1")
    io.replace_date(scored(spark, [3]), str(out), "date", DAY2, "run-2")

    result = io.read_date(str(out), "date", DAY1, ["id", "embedding"])

    assert result.version == 1
    assert sorted((r.date, r.id) for r in result.df.collect()) == [(DAY1, 1), (DAY1, 2)]


def test_writing_no_rows_empties_the_date(spark, io, tmp_path):
    out = tmp_path / "out"
    io.replace_date(scored(spark, [1, 2]), str(out), "date", DAY1, "run-1")
    io.replace_date(scored(spark, [3]), str(out), "date", DAY2, "run-2")

    assert io.replace_date(scored(spark, []), str(out), "date", DAY1, "run-3") == 2

    assert [(r["date"], r["id"]) for r in table_rows(out)] == [(DAY2, 3)]
    assert io.read_date(str(out), "date", DAY1, ["id"]).df.count() == 0


def test_missing_table_is_reported_with_its_path(io, tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DeltaTableNotFound, match=str(missing)):
        io.read_date(str(missing), "date", DAY1, ["id"])
    assert io.table_version(str(missing)) is None
    tmp_path.joinpath("empty").mkdir()
    with pytest.raises(DeltaTableNotFound, match="empty"):
        io.read_date(str(tmp_path / "empty"), "date", DAY1, ["id"])


def test_missing_columns_are_named_with_the_table(spark, io, tmp_path):
    table = tmp_path / "documents"
    write_pandas_table(str(table), documents({DAY1: 1}), partition_by=["date"])

    with pytest.raises(DeltaSchemaError, match=r"no column 'body', 'lang'") as err:
        io.read_date(str(table), "date", DAY1, ["id", "body", "lang"])
    assert str(table) in str(err.value)
    with pytest.raises(DeltaSchemaError, match=r"no column 'day'"):
        io.read_date(str(table), "day", DAY1, ["id"])


def test_write_that_would_change_a_column_type_is_refused_before_writing(spark, io, tmp_path):
    from pyspark.sql import functions as F

    out = tmp_path / "out"
    io.replace_date(scored(spark, [1]), str(out), "date", DAY1, "run-1")
    # Computing this data would fail: the check must come before Spark spends a run on it.
    wrong = scored(spark, [1]).withColumn("id", F.raise_error("data was computed").cast("string"))

    with pytest.raises(DeltaSchemaError, match=r"column 'id' of Delta table .*out is bigint, .* has string"):
        io.replace_date(wrong, str(out), "date", DAY2, "run-2")
    with pytest.raises(DeltaSchemaError, match=r"column 'embedding' .* has no such column"):
        io.replace_date(scored(spark, [1]).drop("embedding"), str(out), "date", DAY2, "run-2")
    assert DeltaTable(str(out)).version() == 0
    assert [p.parent.name for p in staging_dirs(out)] == [f"date={DAY1}"]


@pytest.mark.parametrize("existing", [False, True], ids=["create", "overwrite"])
def test_failed_commit_leaves_table_unchanged_and_no_staged_files(spark, io, tmp_path, monkeypatch, existing):
    import deltalake.transaction

    out = tmp_path / "out"
    if existing:
        io.replace_date(scored(spark, [1, 2]), str(out), "date", DAY1, "run-1")
    before = (DeltaTable(str(out)).version(), table_rows(out)) if existing else None

    def fail(*args, **kwargs):
        raise RuntimeError("commit refused")

    monkeypatch.setattr(DeltaTable, "create_write_transaction", fail)
    monkeypatch.setattr(deltalake.transaction, "create_table_with_add_actions", fail)
    with pytest.raises(RuntimeError, match="commit refused"):
        io.replace_date(scored(spark, [8, 9], "new"), str(out), "date", DAY1, "run-2")

    assert [p.name.startswith("run-run-1-") for p in staging_dirs(out)] == ([True] if existing else [])
    if existing:
        assert (DeltaTable(str(out)).version(), table_rows(out)) == before
    else:
        assert io.table_version(str(out)) is None


def test_embeddings_round_trip_exactly(spark, io, tmp_path):
    out = tmp_path / "out"
    vectors = np.random.default_rng(7).standard_normal((5, 384)).astype(np.float32)
    rows = [(i, "t", [float(x) for x in v]) for i, v in enumerate(vectors)]
    io.replace_date(spark.createDataFrame(rows, SCHEMA), str(out), "date", DAY1, "run-1")

    table = DeltaTable(str(out)).to_pyarrow_table()
    assert pa.types.is_float32(table.schema.field("embedding").type.value_type)
    by_id = dict(zip(table.column("id").to_pylist(), table.column("embedding").to_pylist(), strict=True))
    np.testing.assert_array_equal(np.array([by_id[i] for i in range(5)], dtype=np.float32), vectors)
    read = io.read_date(str(out), "date", DAY1, ["embedding"]).df.orderBy("id").collect()
    np.testing.assert_array_equal(np.array([r.embedding for r in read], dtype=np.float32), vectors)


@pytest.mark.parametrize(
    ("configuration", "feature"),
    [
        ({"delta.enableDeletionVectors": "true"}, "deletionVectors"),
        ({"delta.columnMapping.mode": "name"}, "columnMapping"),
    ],
)
def test_tables_whose_files_do_not_tell_the_whole_story_are_refused(
    spark, io, tmp_path, configuration, feature
):
    table = tmp_path / "featured"
    schema = pa.schema([("id", pa.int64()), ("date", pa.string())])
    DeltaTable.create(str(table), schema, partition_by=["date"], configuration=configuration)

    with pytest.raises(DeltaFeatureNotSupported, match=rf"{table} uses .*{feature}"):
        io.read_date(str(table), "date", DAY1, ["id"])
    with pytest.raises(DeltaFeatureNotSupported, match=feature):
        io.replace_date(spark.createDataFrame([(1,)], "id long"), str(table), "date", DAY1, "run-1")
    assert not staging_dirs(table)


def test_auto_engine_picks_delta_rs_without_delta_spark_on_the_classpath(spark, monkeypatch):
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION", raising=False)
    assert delta_io_for(spark).name == "delta-rs"
    assert isinstance(delta_io_for(spark), DeltaRsIO)
    # The probe really asks the JVM: a class that is there selects native Delta.
    monkeypatch.setattr(delta_io, "DELTA_SPARK_CLASS", "org.apache.spark.sql.SparkSession")
    assert isinstance(delta_io_for(spark), DeltaSparkIO)
    assert delta_io_for(spark, "delta-rs").name == "delta-rs"
    assert delta_io_for(spark, "delta-spark").name == "delta-spark"


def test_unknown_engine_setting_is_refused_by_name(spark):
    with pytest.raises(ValueError, match=r"Delta engine setting .* got 'delta-lake'"):
        delta_io_for(spark, "delta-lake")


def test_date_that_is_not_iso_is_refused(spark, io, tmp_path):
    with pytest.raises(ValueError):
        io.replace_date(scored(spark, [1]), str(tmp_path / "out"), "date", "2026-13-01", "run-1")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("seeded", "other_day"),
    [([DAY1, DAY2], DAY1), ([DAY1, DAY2], DAY2), ([DAY2], DAY1), ([], DAY2), ([], DAY1)],
    ids=["same-date", "other-date", "same-new-date", "table-created-meanwhile", "created-with-same-date"],
)
def test_commit_that_another_run_beats_is_retried_on_a_fresh_snapshot(
    spark, io, tmp_path, monkeypatch, caplog, seeded, other_day
):
    out = tmp_path / "out"
    seeds = {DAY1: 1, DAY2: 2}
    for day in seeded:
        io.replace_date(scored(spark, [seeds[day]]), str(out), "date", day, f"run-{seeds[day]}")
    others = [lambda: io.replace_date(scored(spark, [3], "other"), str(out), "date", other_day, "run-other")]
    before_each_commit(monkeypatch, lambda: others and others.pop()())

    version = io.replace_date(scored(spark, [4], "mine"), str(out), "date", DAY1, "run-mine")

    # The other run's commit landed on our snapshot first: delta-rs refused ours once, the retry landed.
    [retry] = retries(caplog)
    assert f"Delta table {out}, date {DAY1}: commit attempt 1/{delta_io.COMMIT_ATTEMPTS} lost" in retry
    assert ("Failed to commit transaction" if seeded else "already exists") in retry
    history = DeltaTable(str(out)).history()
    assert version == history[0]["version"] == len(seeded) + 1
    assert history[0]["userMetadata"].startswith(f"spark-triton run_id=run-mine date={DAY1} ")
    assert history[1]["userMetadata"].startswith(f"spark-triton run_id=run-other date={other_day} ")
    # The last commit of a date wins, whole: never both runs' rows.
    day2 = [(3, "other3")] if other_day == DAY2 else [(2, "a2")] if DAY2 in seeded else []
    assert {d: [(r["id"], r["text"]) for r in table_rows(out, d)] for d in (DAY1, DAY2)} == {
        DAY1: [(4, "mine4")], DAY2: day2
    }  # fmt: skip
    assert io.date_written_by(str(out), DAY1) == "run-mine"


def test_dates_committed_in_parallel_each_land_exactly_once(spark, io, tmp_path, monkeypatch, caplog):
    from pyspark.sql import functions as F

    out, days = tmp_path / "out", [DAY1, DAY2, "2026-11-25"]
    conf = spark.conf.get("spark.sql.parquet.outputTimestampType")

    def backfill(round_: int) -> dict[str, int]:
        # Every run opens its snapshot, then waits for the others: all commit from the same snapshot.
        barrier, waited = threading.Barrier(len(days), timeout=120), set()

        def first_commit_together():
            if threading.get_ident() not in waited:
                waited.add(threading.get_ident())
                barrier.wait()

        def one_date(n: int, day: str) -> int:
            run = f"backfill-{round_}-{day}"
            df = scored(spark, [n * 10, n * 10 + 1], f"r{round_}-", run_id=F.lit(run))
            return io.replace_date(df, str(out), "date", day, run)

        before_each_commit(monkeypatch, first_commit_together)
        caplog.clear()
        with ThreadPoolExecutor(len(days)) as pool:
            versions = dict(zip(days, pool.map(one_date, range(len(days)), days), strict=True))
        monkeypatch.undo()
        assert len(retries(caplog)) >= len(days) - 1  # only one of the same-snapshot commits can land
        return versions

    first = backfill(1)
    assert sorted(first.values()) == [0, 1, 2]  # one run created the table, the others overwrote into it
    second = backfill(2)

    delta = DeltaTable(str(out))
    assert sorted(second.values()) == [3, 4, 5] and delta.version() == 5
    tags = {h["version"]: h["userMetadata"] for h in delta.history()}
    for n, day in enumerate(days):
        run = f"backfill-2-{day}"
        assert [(r["id"], r["text"], r["run_id"]) for r in table_rows(out, day)] == [
            (n * 10, f"r2-{n * 10}", run), (n * 10 + 1, f"r2-{n * 10 + 1}", run)
        ]  # fmt: skip
        assert tags[second[day]].startswith(f"spark-triton run_id={run} date={day} ")
        assert io.date_written_by(str(out), day) == run
        assert all(f"/run-{run}-" in u for u in delta.file_uris([("date", "=", day)]))
    assert spark.conf.get("spark.sql.parquet.outputTimestampType") == conf


def test_commit_that_always_loses_gives_up_after_the_bound_naming_table_and_date(
    spark, io, tmp_path, monkeypatch, caplog
):
    out = tmp_path / "out"
    io.replace_date(scored(spark, [1]), str(out), "date", DAY1, "run-1")
    io.replace_date(scored(spark, [2]), str(out), "date", DAY2, "run-2")
    before = (table_rows(out, DAY1), staging_dirs(out))
    schema = pa.schema(DeltaTable(str(out)).schema().to_arrow())
    row = pa.Table.from_pylist([{"id": 9, "text": "x", "embedding": [0.0], "date": DAY2}], schema=schema)

    def another_writer_replaces_day2():
        write_deltalake(str(out), row, mode="overwrite", predicate=f"date = '{DAY2}'")

    before_each_commit(monkeypatch, another_writer_replaces_day2)
    monkeypatch.setattr(delta_io, "COMMIT_ATTEMPTS", 3)
    with pytest.raises(
        DeltaCommitConflict, match=rf"Delta table {out}: could not commit date {DAY1} in 3 attempts"
    ):
        io.replace_date(scored(spark, [5], "lost"), str(out), "date", DAY1, "run-lost")

    assert [m.split(": ", 1)[1][:21] for m in retries(caplog)] == [
        "commit attempt 1/3 lo",
        "commit attempt 2/3 lo",
    ]
    assert all(m.startswith(f"Delta table {out}, date {DAY1}: ") for m in retries(caplog))
    assert DeltaTable(str(out)).version() == 4  # the other writer's three commits landed, ours none
    assert (table_rows(out, DAY1), staging_dirs(out)) == before  # and our staged files are gone
    assert io.date_written_by(str(out), DAY1) == "run-1"


def test_date_written_by_tells_when_output_and_rejects_come_from_different_runs(spark, io, tmp_path):
    output, rejects = str(tmp_path / "output"), str(tmp_path / "rejects")
    airflow_run = "scheduled__2026-11-24T00:00:00+00:00"

    def run(run_id: str, tables: list[str]) -> None:  # write_modes commits rejects, then output
        for table in tables:
            io.replace_date(scored(spark, [1]), table, "date", DAY1, run_id)

    assert io.date_written_by(output, DAY1) is None  # no table yet
    run(airflow_run, [rejects, output])
    assert (io.date_written_by(output, DAY1), io.date_written_by(rejects, DAY1)) == (airflow_run, airflow_run)
    run("run-2", [rejects])  # stopped between its two commits
    assert (io.date_written_by(output, DAY1), io.date_written_by(rejects, DAY1)) == (airflow_run, "run-2")
    run("run-3", [rejects, output])  # the next run of the date repairs both
    assert {io.date_written_by(t, DAY1) for t in (output, rejects)} == {"run-3"}
    assert io.date_written_by(output, DAY2) is None  # a date no run wrote


def test_a_writer_finds_its_commit_by_tag_even_when_others_committed_after_it(tmp_path):
    """The version a write reports is the one its tag is in, however many commits landed since
    (a handle opened before those commits numbers them wrongly in deltalake 1.6.6)."""
    from deltalake.transaction import CommitProperties
    from pyarrow import fs as pafs

    table = str(tmp_path / "t")

    def commit(tag: str) -> None:
        props = CommitProperties(custom_metadata={"userMetadata": tag})
        write_deltalake(table, pa.table({"x": [1]}), mode="append", commit_properties=props)

    commit("w0")
    commit("w1")
    opened_before = DeltaTable(table)
    commit("w2")
    commit("w3")
    filesystem, root = pafs.FileSystem.from_uri(f"file://{table}")
    assert [delta_io._tagged_commit_version(filesystem, root, f"w{v}") for v in range(4)] == [0, 1, 2, 3]
    # Why the log's file names and not history(): deltalake 1.6.6 numbers w3 as version 1 there.
    numbered = {h.get("userMetadata"): h["version"] for h in opened_before.history()}
    print("history() of a handle opened at version 1:", numbered)


# -- stage, then commit: the write modes (spark_jobs.write_modes) ------------------------------


def test_staging_computes_the_rows_and_commits_nothing_until_asked(spark, io, tmp_path):
    out = tmp_path / "out"
    io.replace_date(scored(spark, [1]), str(out), "date", DAY1, "run-1")
    staged = io.stage(scored(spark, [2, 3], "new"), str(out), "date", DAY1, "run-2")
    assert (staged.rows, DeltaTable(str(out)).version()) == (2, 0)
    assert [r["id"] for r in table_rows(out, DAY1)] == [1]
    io.discard(staged)
    assert staging_dirs(out) == [p for p in staging_dirs(out) if "run-run-1-" in p.name]
    assert DeltaTable(str(out)).version() == 0


def test_append_adds_one_commit_per_writer_and_the_same_writer_never_twice(spark, io, tmp_path):
    out = str(tmp_path / "out")

    def append(ids: list[int], run_id: str, write_id: str) -> int | None:
        staged = io.stage(scored(spark, ids, run_id), out, "date", DAY1, run_id)
        return io.commit(staged, "append", "id", write_id)

    assert append([1, 2], "run-1", "dag/t/scheduled-1/-1") == 0  # creates the table
    assert append([1, 2], "run-2", "dag/t/manual-2/-1") == 1  # another DAG run appends its rows
    assert not io.appended(out, "dag/t/manual-3/-1", DAY1)
    assert io.appended(out, "dag/t/manual-2/-1", DAY1)
    assert append([1, 2], "run-3", "dag/t/manual-2/-1") is None  # its retry: nothing again
    assert DeltaTable(out).version() == 1
    assert sorted((r["id"], r["text"]) for r in table_rows(Path(out), DAY1)) == [
        (1, "run-11"), (1, "run-21"), (2, "run-12"), (2, "run-22")
    ]  # fmt: skip
    assert [p.name.split("-")[1:3] for p in staging_dirs(Path(out))] == [["run", "1"], ["run", "2"]]
    assert not io.appended(out, "dag/t/manual-2/-1", DAY2)  # per date


def test_merge_updates_scored_keys_in_place_inserts_new_ones_and_keeps_the_rest(spark, io, tmp_path):
    from pyspark.sql import functions as F

    out = tmp_path / "out"
    io.replace_date(scored(spark, [1, 2, 3], "old"), str(out), "date", DAY1, "run-1")
    io.replace_date(scored(spark, [7], "day2"), str(out), "date", DAY2, "run-1b")
    new = scored(spark, [2, 3, 4, 7], "new", title=F.concat(F.lit("title "), F.col("id").cast("string")))
    version = io.commit(io.stage(new, str(out), "date", DAY2, "run-2"), "merge", "id")

    assert version == 2 and DeltaTable(str(out)).version() == 2
    rows = {r["id"]: (r["text"], r["date"], r["title"]) for r in table_rows(out)}
    assert rows == {
        1: ("old1", DAY1, None),  # not scored this time: kept as it was
        2: ("new2", DAY2, "title 2"),  # scored again: updated in place, its date is this run's
        3: ("new3", DAY2, "title 3"),
        4: ("new4", DAY2, "title 4"),  # new: inserted
        7: ("new7", DAY2, "title 7"),  # the same key on the same date: updated, not doubled
    }
    assert (
        DeltaTable(str(out)).history()[0]["userMetadata"].startswith(f"spark-triton run_id=run-2 date={DAY2}")
    )
    assert staging_dirs(out) == [p for p in staging_dirs(out) if "run-run-2-" not in p.name]  # source removed
    again = io.commit(io.stage(new, str(out), "date", DAY2, "run-3"), "merge", "id")
    assert again == 3 and len(table_rows(out)) == 5  # a rerun changes nothing but the run's own columns
