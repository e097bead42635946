"""Read one logical date from a Delta table and replace one date in another, with or without delta-spark.

Databricks (or any Spark with delta-spark on the classpath) uses Delta natively. Everywhere else Spark
still reads and writes the Parquet files, and ``deltalake`` (delta-rs) owns the transaction log: it
picks the files of a snapshot for reads and commits the files Spark wrote. Either way a reader sees
a date's old rows or its new rows, never a mix, and a failed run leaves the table as it was.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from functools import reduce
from typing import TYPE_CHECKING, Any, Protocol

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from spark_jobs.contract.job_config import APPEND, MERGE, REPLACE_DATE
from spark_jobs.table_names import table_name_parts

if TYPE_CHECKING:
    import pandas
    from deltalake import DeltaTable

log = logging.getLogger("spark_jobs.delta_io")

DELTA_SPARK_CLASS = "io.delta.tables.DeltaTable"
# Commits of one date that may lose to other writers (backfills run dates in parallel) before giving up.
COMMIT_ATTEMPTS = 10
# Reader features that change nothing about how a snapshot's Parquet files are read.
RAW_READABLE_FEATURES = frozenset({"timestampNtz", "v2Checkpoint", "vacuumProtocolCheck"})
_MISSING_TABLE_MARKERS = ("DELTA_MISSING_DELTA_TABLE", "DELTA_PATH_DOES_NOT_EXIST", "DELTA_TABLE_NOT_FOUND",
                          "TABLE_OR_VIEW_NOT_FOUND", "PATH_NOT_FOUND", "is not a Delta table")  # fmt: skip


class DeltaTableNotFound(FileNotFoundError):
    """The table does not exist (or is not a Delta table); the message names it."""


class DeltaSchemaError(ValueError):
    """The table lacks a needed column, has another type, or another layout; the message names both."""


class DeltaFeatureNotSupported(ValueError):
    """The table uses a Delta feature that reading its raw Parquet files would silently get wrong."""


class DeltaCommitConflict(RuntimeError):
    """Other writers won every one of the ``COMMIT_ATTEMPTS`` commits of a date; the message names both."""


@dataclass(frozen=True)
class ReadResult:
    df: DataFrame
    version: int | None  # the snapshot read, so a run can report exactly which input it scored


@dataclass
class StagedOutput:
    """Rows computed for a date but not committed: :meth:`DeltaIO.stage` makes it, :meth:`DeltaIO.commit`
    commits it, :meth:`DeltaIO.discard` drops it. The job stages its output (the scoring happens
    there) before it commits anything, so a model that fails on row 7 commits nothing anywhere."""

    table: str
    date_column: str
    logical_date: str
    run_id: str
    schema: StructType  # of the rows, without the date column
    rows: int = 0
    location: str | None = None  # delta-rs: the staging directory under the table's root
    # delta-rs: each staged file's name, size, mtime (ns) and rows
    files: list[tuple[str, int, int, int]] = dataclass_field(default_factory=list)
    df: DataFrame | None = None  # delta-spark: the rows, persisted


def txn_app_id(write_id: str, logical_date: str) -> str:
    """The Delta transaction id (``txn.appId``) of one idempotent append: the same writer and date
    make the same id, and a table that has it refuses the write again (``append`` mode)."""
    digest = hashlib.sha256(f"{write_id}\n{_valid_date(logical_date)}".encode()).hexdigest()[:32]
    return f"spark-triton-{digest}"


class DeltaIO(Protocol):
    name: str

    def read_date(
        self, table: str, date_column: str, logical_date: str, required_columns: Sequence[str]
    ) -> ReadResult: ...

    def replace_date(
        self, df: DataFrame, table: str, date_column: str, logical_date: str, run_id: str
    ) -> int: ...

    def stage(
        self, df: DataFrame, table: str, date_column: str, logical_date: str, run_id: str
    ) -> StagedOutput: ...

    def commit(
        self,
        staged: StagedOutput,
        mode: str = REPLACE_DATE,
        key_column: str | None = None,
        write_id: str | None = None,
    ) -> int | None: ...

    def discard(self, staged: StagedOutput) -> None: ...

    def appended(self, table: str, write_id: str, logical_date: str) -> bool:
        """Whether ``write_id`` already committed its append of the date to ``table`` (:func:`txn_app_id`)."""
        ...

    def table_version(self, table: str) -> int | None: ...

    def date_written_by(self, table: str, logical_date: str) -> str | None:
        """The run id of the newest commit that wrote the date, None if no tagged commit wrote it.

        A run commits its rejects table, then its output table (``spark_jobs.write_modes``), under
        the date's lease (one run at a time), so the output naming a run means that run's rejects were
        committed too; both naming one run id means the date holds that run's whole result. The
        rejects naming a newer run than the output means a run stopped between its two commits; the
        date's next run (the task's retry, a rerun) writes both again.
        """
        ...


def delta_io_for(spark: SparkSession, engine: str = "auto") -> DeltaIO:
    """Native Delta where the cluster has it (it knows every table feature), delta-rs otherwise."""
    if engine not in ("auto", "delta-spark", "delta-rs"):
        raise ValueError(f"Delta engine setting must be 'auto', 'delta-spark' or 'delta-rs', got {engine!r}")
    if engine == "delta-spark" or (engine == "auto" and _delta_spark_available(spark)):
        return DeltaSparkIO(spark)
    return DeltaRsIO(spark)


def write_pandas_table(
    table: str, frame: pandas.DataFrame, partition_by: list[str] | None = None, mode: str = "overwrite"
) -> int:
    """Sample input tables for the demo and tests, written the way a non-Spark producer would."""
    from deltalake import DeltaTable, write_deltalake

    write_deltalake(_rs_uri(table), frame, partition_by=partition_by, mode=mode)
    return DeltaTable(_rs_uri(table)).version()


def _delta_spark_available(spark: SparkSession) -> bool:
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        return True  # Databricks always ships Delta, and Spark Connect sessions there have no JVM handle
    try:
        jvm = spark._jvm
        loader = jvm.java.lang.Thread.currentThread().getContextClassLoader()
        jvm.java.lang.Class.forName(DELTA_SPARK_CLASS, False, loader)
        return True
    except Exception:
        return False


def _check_columns(present: Sequence[str], needed: Sequence[str], table: str) -> None:
    missing = [c for c in dict.fromkeys(needed) if c not in present]
    if missing:
        names = ", ".join(repr(c) for c in missing)
        raise DeltaSchemaError(f"Delta table {table} has no column {names} (it has: {', '.join(present)})")


def _write_tag(run_id: str, logical_date: str) -> str:
    """Stored as the commit's userMetadata, so the version a write made is found even if others commit too,
    and which run wrote a date's rows can be told from the history (``date_written_by``)."""
    return f"spark-triton run_id={run_id} date={logical_date} write={uuid.uuid4().hex[:8]}"


# How far back a writer looks for its own commit: the commits other writers land between its commit
# and this look-up, far fewer than this even in a wide backfill.
COMMIT_LOOKBACK = 50
_COMMIT_FILE = re.compile(r"(\d{20})\.json")


def _tagged_commit_version(filesystem, root: str, tag: str) -> int:
    """The version of the commit tagged ``tag``, from the Delta log's file names, newest first.

    Not from ``DeltaTable.history()``: deltalake (1.6.6) numbers its entries down from the version
    the handle loaded while listing every commit on storage, so a commit landing in between shifts
    every number (measured: two dates of a parallel backfill both reported version 3, the table at 5).
    """
    from pyarrow import fs as pafs

    log_dir = f"{root}/_delta_log"
    versions = sorted(
        (int(m.group(1)) for i in filesystem.get_file_info(pafs.FileSelector(log_dir))
         if (m := _COMMIT_FILE.fullmatch(i.base_name))),
        reverse=True,
    )  # fmt: skip
    for version in versions[:COMMIT_LOOKBACK]:
        with filesystem.open_input_stream(f"{log_dir}/{version:020d}.json") as commit:
            for line in commit.read().decode().splitlines():
                info = json.loads(line).get("commitInfo")
                if info is not None and info.get("userMetadata") == tag:
                    return version
    # Committed, but more than COMMIT_LOOKBACK commits landed since: the newest is the best answer.
    log.warning("Delta table %s: commit %r not among its last %d versions", root, tag, COMMIT_LOOKBACK)
    return versions[0]


_TAG = re.compile(r"spark-triton run_id=(?P<run_id>.*) date=(?P<date>\S+) write=\w+")


def _run_id_of_date(user_metadata: Iterable[str | None], logical_date: str) -> str | None:
    """The run of the newest replace of ``logical_date`` among commit tags given newest first.

    Every replace swaps all of a date's files and no other date's, so the newest commit tagged with
    the date is the one whose rows the date holds (as far as this project's writers tell: a commit
    by another tool carries no tag). None when no tagged commit wrote the date.
    """
    for text in user_metadata:
        tag = _TAG.fullmatch(text or "")
        if tag and tag["date"] == logical_date:
            return tag["run_id"]
    return None


def _valid_date(logical_date: str) -> str:
    dt.date.fromisoformat(logical_date)  # it becomes a directory name and a predicate: no surprises there
    return logical_date


def _date_type(schema: StructType, table: str, date_column: str) -> str:
    """The date column's type name: one of ``spark_jobs.columns.DATE_COLUMN_TYPES``."""
    from spark_jobs.columns import DATE_COLUMN_TYPES, type_text

    kind = schema[date_column].dataType.jsonValue()
    if kind not in DATE_COLUMN_TYPES:
        raise DeltaSchemaError(
            f"Delta table {table} column {date_column!r} (date_column) is {type_text(kind)}; a run selects "
            "its date from a DATE, TIMESTAMP or 'YYYY-MM-DD' string column"
        )
    return kind


def _day_bounds(logical_date: str, before: int = 0, after: int = 1) -> tuple[str, str]:
    day = dt.date.fromisoformat(_valid_date(logical_date))
    return (
        (day - dt.timedelta(days=before)).isoformat() + "T00:00:00",
        (day + dt.timedelta(days=after)).isoformat() + "T00:00:00",
    )


def date_condition(date_type: str, date_column: str, logical_date: str):
    """The rows of ``logical_date``: equal for a string or DATE column; for a TIMESTAMP, the instants
    of that UTC day (Airflow's logical dates are UTC days, whatever the Spark session's time zone);
    for a TIMESTAMP_NTZ, the wall-clock times of that day."""
    column = F.col(date_column)
    if date_type == "string":
        return column == F.lit(logical_date)
    if date_type == "date":
        return column == F.lit(_valid_date(logical_date)).cast("date")
    start, end = _day_bounds(logical_date)
    if date_type == "timestamp":
        start, end = start + "+00:00", end + "+00:00"
    return (column >= F.lit(start).cast(date_type)) & (column < F.lit(end).cast(date_type))


def _partition_value(value: str | None, data_type: Any):
    """A partition value from the log as a column. Delta writes a TIMESTAMP's partition value in UTC,
    and Spark would read a zoneless string in the session's time zone: say it is UTC."""
    if value is not None and data_type.typeName() == "timestamp" and value[-1:].isdigit():
        value += "Z"
    return F.lit(value).cast(data_type)


def _pruning_predicate(date_type: str, date_column: str, logical_date: str) -> list[tuple[str, str, str]]:
    """delta-rs file pruning for the date (a superset: the rows are filtered by :func:`date_condition`).

    A timestamp is pruned a day wider on each side, since statistics and partition values may be
    written in any zone's terms; delta-rs parses ``YYYY-MM-DD hh:mm:ss`` for both timestamp types."""
    if date_type in ("string", "date"):
        return [(date_column, "=", _valid_date(logical_date))]
    start, end = (bound.replace("T", " ") for bound in _day_bounds(logical_date, before=1, after=2))
    return [(date_column, ">=", start), (date_column, "<", end)]


class _StagedWrites:
    """What both engines build from their :meth:`stage` and :meth:`commit`."""

    def replace_date(
        self, df: DataFrame, table: str, date_column: str, logical_date: str, run_id: str
    ) -> int:
        """Replace the date's rows with ``df``'s in one commit: :meth:`stage`, then :meth:`commit`."""
        staged = self.stage(df, table, date_column, logical_date, run_id)  # type: ignore[attr-defined]
        version = self.commit(staged)  # type: ignore[attr-defined]
        assert version is not None  # only an append is ever skipped
        return version


class DeltaSparkIO(_StagedWrites):
    name = "delta-spark"

    def __init__(self, spark: SparkSession) -> None:
        self.spark = spark

    @staticmethod
    def _is_path(table: str) -> bool:
        return not is_table_name(table) and ("/" in table or ":" in table)

    def _ref(self, table: str) -> str:
        return f"delta.`{table}`" if self._is_path(table) else table

    def table_version(self, table: str) -> int | None:
        from pyspark.errors import AnalysisException

        try:
            row = self.spark.sql(f"DESCRIBE HISTORY {self._ref(table)} LIMIT 1").first()
        except AnalysisException as exc:
            if any(marker in str(exc) for marker in _MISSING_TABLE_MARKERS):
                return None
            raise
        return int(row["version"]) if row else None

    def date_written_by(self, table: str, logical_date: str) -> str | None:
        """The run id whose commit the date's rows come from (see ``_run_id_of_date``); None if unknown."""
        if self.table_version(table) is None:
            return None
        history = self.spark.sql(f"DESCRIBE HISTORY {self._ref(table)}")
        rows = history.where(F.col("userMetadata").startswith("spark-triton ")).orderBy(F.desc("version"))
        return _run_id_of_date((r["userMetadata"] for r in rows.toLocalIterator()), _valid_date(logical_date))

    def read_date(
        self, table: str, date_column: str, logical_date: str, required_columns: Sequence[str]
    ) -> ReadResult:
        version = self.table_version(table)
        if version is None:
            raise DeltaTableNotFound(f"Delta table not found: {table}")
        # Pin the version we report, so a commit landing meanwhile cannot make the two disagree.
        if self._is_path(table):
            df = self.spark.read.format("delta").option("versionAsOf", version).load(table)
        else:
            df = self.spark.sql(f"SELECT * FROM {table} VERSION AS OF {version}")
        _check_columns(df.columns, [date_column, *required_columns], table)
        date_type = _date_type(df.schema, table, date_column)
        return ReadResult(df.where(date_condition(date_type, date_column, logical_date)), version)

    def stage(
        self, df: DataFrame, table: str, date_column: str, logical_date: str, run_id: str
    ) -> StagedOutput:
        """Compute ``df`` (for the job: score it) and keep its rows in Spark's storage (memory, spilling
        to disk), committing nothing; a lost block is computed again when the commit reads it."""
        from pyspark import StorageLevel

        out = df.drop(date_column).withColumn(date_column, F.lit(_valid_date(logical_date)))
        out = out.persist(StorageLevel.MEMORY_AND_DISK)
        staged = StagedOutput(table, date_column, logical_date, run_id, df.drop(date_column).schema, df=out)
        try:
            staged.rows = out.count()
        except BaseException:
            self.discard(staged)
            raise
        return staged

    def discard(self, staged: StagedOutput) -> None:
        if staged.df is not None:
            staged.df.unpersist()

    def appended(self, table: str, write_id: str, logical_date: str) -> bool:
        """Not known ahead here (Spark SQL shows no transaction ids): Delta itself skips the append
        at commit time when the table has its transaction id, and :meth:`commit` returns None."""
        return False

    def commit(
        self,
        staged: StagedOutput,
        mode: str = REPLACE_DATE,
        key_column: str | None = None,
        write_id: str | None = None,
    ) -> int | None:
        """Native Delta: ``replaceWhere`` overwrite of the date, an append with ``txnAppId`` /
        ``txnVersion`` (Delta's idempotent writes: the table skips a transaction id it has), or
        ``MERGE INTO`` on the key. The commit's ``userMetadata`` tag finds the version it made; an
        append Delta skipped has none (None)."""
        table, date_column = staged.table, staged.date_column
        logical_date = _valid_date(staged.logical_date)
        tag = _write_tag(staged.run_id, logical_date)
        out = staged.df
        assert out is not None, "staged by another engine"
        try:
            exists = self.table_version(table) is not None
            if mode == MERGE and exists:
                view = f"spark_triton_merge_{uuid.uuid4().hex}"
                out.createOrReplaceTempView(view)
                key = f"`{key_column}`"
                try:
                    with _session_conf(self.spark, "spark.databricks.delta.commitInfo.userMetadata", tag):
                        self.spark.sql(
                            f"MERGE INTO {self._ref(table)} t USING {view} s ON t.{key} = s.{key} "
                            "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"
                        )
                finally:
                    self.spark.catalog.dropTempView(view)
            else:
                writer = out.write.format("delta").option("userMetadata", tag).partitionBy(date_column)
                if mode == APPEND:
                    app_id = txn_app_id(write_id or staged.run_id, logical_date)
                    writer = writer.mode("append").option("txnAppId", app_id).option("txnVersion", 1)
                else:
                    writer = writer.mode("overwrite").option(
                        "replaceWhere", f"`{date_column}` = '{logical_date}'"
                    )
                writer.save(table) if self._is_path(table) else writer.saveAsTable(table)
        finally:
            self.discard(staged)
        history = self.spark.sql(f"DESCRIBE HISTORY {self._ref(table)} LIMIT {COMMIT_LOOKBACK}")
        row = history.where(F.col("userMetadata") == tag).first()
        if row is None and mode == APPEND:
            log.warning(
                "Delta table %s: %s already committed this append of %s", table, write_id, logical_date
            )
            return None
        return int(row["version"]) if row else int(self.table_version(table) or 0)


def is_table_name(table: str) -> bool:
    """``catalog.schema.table``: read with ``spark.table``/SQL and written with ``saveAsTable``, not a path."""
    return table_name_parts(table) is not None


def _rs_uri(table: str) -> str:
    if is_table_name(table):
        # Taken for a relative path, it would become a directory named like the table under the cwd.
        raise ValueError(
            f"table {table!r} is a catalog name (catalog.schema.table): only Spark with Delta "
            "(delta-spark, as on Databricks) reads and writes tables by name; give delta-rs a path or URI"
        )
    return table if "://" in table else os.path.abspath(table)


def _nullable(node: Any) -> Any:
    """Delta enforces NOT NULL and Spark marks literals non-nullable: one run must not bind the next."""
    if isinstance(node, dict):
        keys = ("nullable", "containsNull", "valueContainsNull")
        return {k: True if k in keys else _nullable(v) for k, v in node.items()}
    return [_nullable(v) for v in node] if isinstance(node, list) else node


_CONF_LOCK = threading.Lock()
_CONF_HOLDERS: dict[tuple[int, str], tuple[int, str | None]] = {}  # (session, key) -> (holders, old value)


@contextlib.contextmanager
def _session_conf(spark: SparkSession, key: str, value: str) -> Iterator[None]:
    """Set a session conf for a block. Threads writing through one session at once share the setting
    (every caller sets the same value); the last one out restores the value from before the first."""
    slot = (id(spark), key)
    with _CONF_LOCK:
        holders, old = _CONF_HOLDERS.get(slot, (0, None))
        if not holders:
            old = spark.conf.get(key, None)
            spark.conf.set(key, value)
        _CONF_HOLDERS[slot] = (holders + 1, old)
    try:
        yield
    finally:
        with _CONF_LOCK:
            holders, old = _CONF_HOLDERS.pop(slot)
            if holders > 1:
                _CONF_HOLDERS[slot] = (holders - 1, old)
            else:
                spark.conf.unset(key) if old is None else spark.conf.set(key, old)


def _merge_schema(target: DeltaTable, data: StructType, date_column: str):
    """The schema of rows merged into ``target``: its columns and types (the source is cast to them),
    then the columns of ``data`` it does not have yet (a new ``keep_columns`` entry), as Spark has them."""
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_type

    schema = pa.schema(target.schema().to_arrow())
    new = [f for f in data.fields if f.name not in schema.names and f.name != date_column]
    return pa.schema([*schema, *(pa.field(f.name, to_arrow_type(f.dataType)) for f in new)])


class DeltaRsIO(_StagedWrites):
    name = "delta-rs"

    def __init__(self, spark: SparkSession) -> None:
        self.spark = spark

    def _open(self, table: str) -> DeltaTable:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            return DeltaTable(_rs_uri(table))
        except TableNotFoundError as exc:
            raise DeltaTableNotFound(f"Delta table not found: {table}") from exc

    def table_version(self, table: str) -> int | None:
        try:
            return self._open(table).version()
        except DeltaTableNotFound:
            return None

    def appended(self, table: str, write_id: str, logical_date: str) -> bool:
        try:
            return self._open(table).transaction_version(txn_app_id(write_id, logical_date)) is not None
        except DeltaTableNotFound:
            return False

    def date_written_by(self, table: str, logical_date: str) -> str | None:
        """The run id whose commit the date's rows come from (see ``_run_id_of_date``); None if unknown."""
        try:
            history = self._open(table).history()  # newest first
        except DeltaTableNotFound:
            return None
        return _run_id_of_date((h.get("userMetadata") for h in history), _valid_date(logical_date))

    @staticmethod
    def _refuse_unsupported(delta: DeltaTable, table: str) -> None:
        """Deletion vectors hide rows and column mapping renames columns outside the Parquet files."""
        protocol, config = delta.protocol(), delta.metadata().configuration
        features = set(protocol.reader_features or [])
        if protocol.min_reader_version == 2 or config.get("delta.columnMapping.mode", "none") != "none":
            features.add("columnMapping")
        if config.get("delta.enableDeletionVectors") == "true":
            features.add("deletionVectors")
        if blocked := sorted(features - RAW_READABLE_FEATURES):
            raise DeltaFeatureNotSupported(
                f"Delta table {table} uses {', '.join(blocked)}, which the delta-rs path cannot honour by "
                "reading Parquet files directly; use a cluster with delta-spark (engine 'delta-spark')"
            )

    def read_date(
        self, table: str, date_column: str, logical_date: str, required_columns: Sequence[str]
    ) -> ReadResult:
        delta = self._open(table)
        version = delta.version()
        self._refuse_unsupported(delta, table)
        schema = self._spark_schema(delta)
        _check_columns(schema.fieldNames(), [date_column, *required_columns], table)
        date_type = _date_type(schema, table, date_column)
        partition_columns = delta.metadata().partition_columns
        data_schema = StructType([f for f in schema.fields if f.name not in partition_columns])
        predicate = _pruning_predicate(date_type, date_column, logical_date)
        frames = []
        # Partition values live only in the log, not in the files: read each partition, add them back.
        for values in delta.partitions(file_pruning_predicate=predicate) if partition_columns else [{}]:
            selected = predicate + [(c, "=", "" if v is None else v) for c, v in values.items()]
            uris = delta.file_uris(file_pruning_predicate=selected)
            if files := [f"file://{u}" if u.startswith("/") else u for u in uris]:
                frame = self.spark.read.schema(data_schema).parquet(*files)
                columns = [_partition_value(values[f.name], f.dataType).alias(f.name) if f.name in values
                           else F.col(f.name) for f in schema.fields]  # fmt: skip
                frames.append(frame.select(*columns))
        if not frames:
            return ReadResult(self.spark.createDataFrame([], schema), version)
        df = reduce(DataFrame.unionByName, frames)  # pruning by statistics keeps a superset: filter rows
        return ReadResult(df.where(date_condition(date_type, date_column, logical_date)), version)

    @staticmethod
    def _spark_schema(delta: DeltaTable) -> StructType:
        return StructType.fromJson(json.loads(delta.schema().to_json()))  # Delta's schema JSON is Spark's

    def _target(self, table: str, data: StructType, date_column: str) -> tuple[DeltaTable | None, StructType]:
        """The existing table (if any) and the schema to commit, once sure the write cannot corrupt the table.

        delta-rs commits whatever schema it is given, even one that changes a column's type under the
        other dates' files, so the check is ours. New columns are fine: older files read them as null.
        """
        date_field = StructField(date_column, StringType())
        try:
            delta = self._open(table)
        except DeltaTableNotFound:
            return None, StructType([*data.fields, date_field])
        self._refuse_unsupported(delta, table)
        if delta.metadata().partition_columns != [date_column]:
            raise DeltaSchemaError(
                f"Delta table {table} is partitioned by {delta.metadata().partition_columns}; "
                f"replacing a date needs it partitioned by exactly [{date_column!r}]"
            )
        new = {f.name: f.dataType.simpleString() for f in data.fields}
        for field in self._spark_schema(delta).fields:
            if field.name == date_column:
                date_field = field
            elif new.get(field.name) != field.dataType.simpleString():
                raise DeltaSchemaError(
                    f"column {field.name!r} of Delta table {table} is {field.dataType.simpleString()}, "
                    f"the data to write has {new.get(field.name, 'no such column')}"
                )
        return delta, StructType([*data.fields, date_field])

    def stage(
        self, df: DataFrame, table: str, date_column: str, logical_date: str, run_id: str
    ) -> StagedOutput:
        """Compute ``df`` (for the job: score it) into Parquet files in a directory no one else uses,
        committing nothing. The unique directory means a retry or a concurrent run never overwrites
        files that a committed version still references, and uncommitted files are invisible."""
        from pyarrow import parquet as pq

        data = df.drop(date_column)
        self._target(table, data.schema, date_column)  # fail before Spark spends the run computing the data
        spark_uri, filesystem, root = self._filesystem(table)
        run = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id)  # Hadoop paths choke on ':' in Airflow run ids
        staging = f"{date_column}={_valid_date(logical_date)}/run-{run}-{uuid.uuid4().hex[:8]}"
        staged = StagedOutput(table, date_column, logical_date, run_id, data.schema, location=staging)
        try:
            # Spark's default INT96 timestamps are legacy; Delta readers expect INT64 microseconds.
            with _session_conf(self.spark, "spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS"):
                data.write.mode("errorifexists").parquet(f"{spark_uri}/{staging}")
            for info in self._staged_files(filesystem, root, staging):
                rows = pq.read_metadata(info.path, filesystem=filesystem).num_rows
                if rows:  # Spark writes a file for empty tasks too: only noise in the log
                    staged.files.append((info.base_name, info.size, info.mtime_ns, rows))
                    staged.rows += rows
        except BaseException:
            self.discard(staged)
            raise
        return staged

    @staticmethod
    def _staged_files(filesystem, root: str, staging: str) -> list[Any]:
        from pyarrow import fs as pafs

        infos = filesystem.get_file_info(pafs.FileSelector(f"{root}/{staging}"))
        return [i for i in infos if i.base_name.startswith("part-") and i.extension == "parquet"]

    @staticmethod
    def _filesystem(table: str) -> tuple[str, Any, str]:
        from pyarrow import fs as pafs

        uri = _rs_uri(table)
        spark_uri = uri if "://" in uri else f"file://{uri}"
        filesystem, root = pafs.FileSystem.from_uri(spark_uri)
        return spark_uri, filesystem, root

    def discard(self, staged: StagedOutput) -> None:
        """Remove staged files no commit references (a commit whose post-commit hook failed still counts)."""
        if staged.location and not self._references(staged.table, staged.location):
            _, filesystem, root = self._filesystem(staged.table)
            with contextlib.suppress(FileNotFoundError):
                filesystem.delete_dir(f"{root}/{staged.location}")

    def commit(
        self,
        staged: StagedOutput,
        mode: str = REPLACE_DATE,
        key_column: str | None = None,
        write_id: str | None = None,
    ) -> int | None:
        """Commit staged rows to their table as ``mode`` says, in one transaction; the version made,
        or None for an append that ``write_id`` had already committed (nothing new is written).

        * ``replace_date``: the date's old files out, the staged ones in;
        * ``append``: the staged files in, with a Delta transaction id made of ``write_id`` and the
          date (``txn`` in the log), so the same write landing twice is refused by the table itself;
        * ``merge``: a delta-rs MERGE on ``key_column`` with the staged rows as source: matched rows
          are updated in place (their date becomes this one), new keys inserted, no row deleted.

        Runs of other dates (or the same date) may commit to the table meanwhile: delta-rs then refuses
        ours (``CommitFailedError``), since it was built on an older snapshot. The staged files are still
        valid, so the commit is rebuilt on a fresh snapshot and retried, up to ``COMMIT_ATTEMPTS`` times
        with a short jittered backoff, after which ``DeltaCommitConflict`` names the table and the date.
        Losing the race to create the table is the same case. Whichever run of a date commits last wins;
        a replaced date never holds two runs' rows. Staged files no commit uses are removed.
        """
        from deltalake import Schema
        from deltalake.exceptions import CommitFailedError, DeltaError
        from deltalake.transaction import (
            AddAction,
            CommitProperties,
            Transaction,
            create_table_with_add_actions,
        )

        table, date_column, logical_date = staged.table, staged.date_column, _valid_date(staged.logical_date)
        tag = _write_tag(staged.run_id, logical_date)
        app_id = txn_app_id(write_id or staged.run_id, logical_date) if mode == APPEND else None
        adds = [
            AddAction(f"{staged.location}/{name}", size, {date_column: logical_date},
                      mtime_ns // 1_000_000 if mtime_ns else int(time.time() * 1000), True,
                      json.dumps({"numRecords": rows}))
            for name, size, mtime_ns, rows in staged.files
        ]  # fmt: skip
        kept = False  # whether the commit made the staged files the table's own
        try:
            attempts = COMMIT_ATTEMPTS
            for attempt in range(1, attempts + 1):
                target, schema = self._target(table, staged.schema, date_column)  # a fresh snapshot each time
                if app_id and target is not None and target.transaction_version(app_id) is not None:
                    log.warning(
                        "Delta table %s: %s already committed this append of %s",
                        table,
                        write_id,
                        logical_date,
                    )
                    return None
                common = {
                    "schema": Schema.from_json(json.dumps(_nullable(schema.jsonValue()))),
                    "partition_by": [date_column],
                    # No rebasing by delta-rs: it lands an overwrite (or a create) on top of a commit that
                    # added files to the same date when ours removes none, and the date holds both runs'
                    # rows. Every retry is ours, rebuilt on a snapshot that sees the other run's files.
                    "commit_properties": CommitProperties(
                        custom_metadata={"userMetadata": tag},
                        max_commit_retries=0,
                        app_transactions=[Transaction(app_id, 1)] if app_id else None,
                    ),
                }
                try:
                    if target is None:
                        create_table_with_add_actions(
                            _rs_uri(table), add_actions=adds, mode="error", **common
                        )
                    elif mode == MERGE:
                        self._merge(target, staged, key_column or "", common["commit_properties"])
                    else:
                        filters = [(date_column, "=", logical_date)] if mode == REPLACE_DATE else None
                        target.create_write_transaction(
                            adds,
                            mode="overwrite" if mode == REPLACE_DATE else "append",
                            partition_filters=filters,
                            **common,
                        )
                    kept = target is None or mode != MERGE
                    break
                except DeltaError as exc:
                    # CommitFailedError: another commit landed after our snapshot. "already exists":
                    # another run created the table meanwhile. Either way: again, on the table as it is now.
                    if not (isinstance(exc, CommitFailedError) or "already exists" in str(exc)):
                        raise
                    if attempt == attempts:
                        raise DeltaCommitConflict(
                            f"Delta table {table}: could not commit date {logical_date} in {attempts} "
                            f"attempts, another writer committed first each time (last: {exc})"
                        ) from exc
                    pause = random.uniform(0.05, 0.1 * 2 ** min(attempt, 4))
                    log.warning(
                        "Delta table %s, date %s: commit attempt %d/%d lost to another writer (%s); "
                        "retrying on a fresh snapshot in %.2f s",
                        table, logical_date, attempt, attempts, str(exc).splitlines()[0], pause,
                    )  # fmt: skip
                    time.sleep(pause)
        finally:
            if not kept:  # a merge's source, an append already committed, a failed commit
                self.discard(staged)
        _, filesystem, root = self._filesystem(table)
        return _tagged_commit_version(filesystem, root, tag)

    def _merge(self, target: DeltaTable, staged: StagedOutput, key_column: str, properties: Any) -> None:
        """MERGE the staged rows into ``target`` on ``key_column``, streamed from their files: matched
        rows take every column of the source (their date becomes this one), new keys are inserted."""
        import pyarrow as pa
        from pyarrow import dataset as pads

        _, filesystem, root = self._filesystem(staged.table)
        files = [f"{root}/{staged.location}/{name}" for name, *_ in staged.files]
        schema = _merge_schema(target, staged.schema, staged.date_column)

        def batches() -> Iterator[pa.RecordBatch]:
            if not files:
                return
            for batch in pads.dataset(files, filesystem=filesystem, format="parquet").to_batches():
                columns = {name: batch.column(name) for name in batch.schema.names}
                columns[staged.date_column] = pa.array([staged.logical_date] * batch.num_rows)
                yield pa.record_batch(
                    [columns[f.name].cast(f.type) if f.name in columns else pa.nulls(batch.num_rows, f.type)
                     for f in schema],
                    schema=schema,
                )  # fmt: skip

        key = f"`{key_column}`"
        (
            target.merge(
                pa.RecordBatchReader.from_batches(schema, batches()),
                predicate=f"t.{key} = s.{key}",
                source_alias="s",
                target_alias="t",
                merge_schema=len(schema) > len(target.schema().fields),
                commit_properties=properties,
            )
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute()
        )

    def _references(self, table: str, staging: str) -> bool:
        try:
            return any(f"/{staging}/" in u for u in self._open(table).file_uris())
        except DeltaTableNotFound:
            return False
