"""One run at a time per (output table, date): a lease in a small Delta table beside the output.

Two runs of one date (a backfill and a manual rerun, a retry whose first try still runs somewhere)
would interleave their commits: each replaces the date in one table while the other replaces it in
the next. So a run that writes takes the date's lease first, before it reads its input, and a second
run of the date fails at once naming the run that holds it (or, with ``lease_wait_s``, waits for it).

**Where the lease lives.** In the Delta table ``<output_table>_leases``
(:func:`spark_jobs.contract.default_lease_table`), one row per date, written by compare-and-swap:
a row is replaced only if it still carries the token the writer read. Every writer of the output
table can see that table, whatever the backend: several local runs on one machine (delta-rs), jobs
on different Databricks clusters (native Delta), a spark-submit driver anywhere. The swap rests on
the one atomic step every Delta deployment guarantees, the put-if-absent of the next commit file in
``_delta_log`` (local: delta-rs's rename without replace; Databricks: its commit service; S3: the
locking provider Delta already needs for concurrent writes). A lease file beside the table would
need create-if-absent semantics from the storage itself, which FUSE-mounted volumes and object
stores do not promise, and a table named ``catalog.schema.table`` has no directory a job may write
beside.

**Stale leases.** A lease names its run, host and driver pid (with its start time) and expires
``lease_ttl_s`` after it was last renewed; a heartbeat thread renews it every quarter of that, and
each commit of the run renews it first (which also proves the run still holds it: a run whose lease
was taken over fails before it commits). A lease is free when released, expired, or held by a
driver on this host that is gone (a local run killed with -9 frees its date at once; on other
hosts the TTL decides). Taking over a stale lease is the same compare-and-swap, so two runs that
both see it stale cannot both take it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from spark_jobs.processes import ProcessRecord, is_alive

if TYPE_CHECKING:
    from spark_jobs.contract import InferenceJobConfig
    from spark_jobs.delta_io import DeltaIO

log = logging.getLogger("spark_jobs.date_lease")

# Swaps that lose to commits for other dates before giving up (each retry re-reads the row).
SWAP_ATTEMPTS = 20
# How often a waiting run looks at the lease again.
WAIT_POLL_S = 5.0
COLUMNS = (
    ("lease_date", "string"),
    ("run_id", "string"),
    ("writer", "string"),
    ("host", "string"),
    ("pid", "long"),
    ("pid_started", "double"),
    ("acquired_at", "double"),
    ("expires_at", "double"),
    ("released_at", "double"),
    ("token", "string"),
)


class DateLeaseHeld(RuntimeError):
    """Another run holds the date's lease; the message names it."""


class DateLeaseLost(RuntimeError):
    """This run's lease was taken over (it was not renewed in time): it must not commit."""


@dataclass(frozen=True)
class Lease:
    """One row of the lease table: who holds (or last held) a date, until when."""

    lease_date: str
    run_id: str
    writer: str
    host: str
    pid: int
    pid_started: float
    acquired_at: float
    expires_at: float
    released_at: float | None
    token: str

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Lease:
        return cls(**{name: row[name] for name, _ in COLUMNS})

    def row(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def free_at(self, now: float) -> str | None:
        """Why another run may take this lease now (released, expired, its driver gone), else None."""
        if self.released_at is not None:
            return "released"
        if self.expires_at <= now:
            return f"expired at {_when(self.expires_at)}"
        if self.host == socket.gethostname() and not is_alive(ProcessRecord(self.pid, self.pid_started)):
            return f"its driver (pid {self.pid} on {self.host}) is gone"
        return None

    def describe(self) -> str:
        writer = f" for {self.writer}" if self.writer != self.run_id else ""
        return (
            f"run {self.run_id}{writer} (driver pid {self.pid} on {self.host}, since "
            f"{_when(self.acquired_at)}, lease expires {_when(self.expires_at)} unless renewed)"
        )


def _when(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).isoformat(timespec="seconds")


class LeaseStore(Protocol):
    """The lease table: read one date's row; replace it only if it still has ``expected`` token."""

    def read(self, lease_date: str) -> Lease | None: ...

    def swap(self, lease_date: str, expected: str | None, lease: Lease) -> bool:
        """Write ``lease`` if the date's row has token ``expected`` (None: there is no row); False if not."""
        ...


def _retry_pause(attempt: int) -> float:
    return random.uniform(0.05, 0.1 * 2 ** min(attempt, 4))


class DeltaRsLeaseStore:
    """The lease table through delta-rs: a MERGE committed without rebasing (``max_commit_retries=0``),
    on the snapshot the row was read from, so any commit landing in between fails it and it is
    retried on the new snapshot."""

    def __init__(self, table: str) -> None:
        from spark_jobs.delta_io import _rs_uri

        self.table, self.uri = table, _rs_uri(table)

    @staticmethod
    def _schema(extra: tuple[tuple[str, str], ...] = ()):
        import pyarrow as pa

        types = {"string": pa.string(), "long": pa.int64(), "double": pa.float64()}
        return pa.schema([(name, types[kind]) for name, kind in (*COLUMNS, *extra)])

    def _open(self):
        from deltalake import DeltaTable, write_deltalake
        from deltalake.exceptions import DeltaError, TableNotFoundError

        try:
            return DeltaTable(self.uri)
        except TableNotFoundError:
            with contextlib.suppress(DeltaError, FileExistsError):  # another run created it: fine
                write_deltalake(self.uri, self._schema().empty_table(), mode="error")
            return DeltaTable(self.uri)

    @staticmethod
    def _row(delta, lease_date: str) -> Lease | None:
        rows = delta.to_pyarrow_table(filters=[("lease_date", "=", lease_date)]).to_pylist()
        return Lease.from_row(max(rows, key=lambda r: r["acquired_at"])) if rows else None

    def read(self, lease_date: str) -> Lease | None:
        return self._row(self._open(), lease_date)

    def swap(self, lease_date: str, expected: str | None, lease: Lease) -> bool:
        import pyarrow as pa
        from deltalake.exceptions import CommitFailedError
        from deltalake.transaction import CommitProperties

        source = pa.Table.from_pylist(
            [{**lease.row(), "expected_token": expected}], self._schema((("expected_token", "string"),))
        )
        values = {name: f"s.{name}" for name, _ in COLUMNS}
        tag = f"spark-triton lease date={lease_date} run_id={lease.run_id}"
        for attempt in range(1, SWAP_ATTEMPTS + 1):
            delta = self._open()
            current = self._row(delta, lease_date)
            if (current.token if current else None) != expected:
                return False
            try:
                (
                    delta.merge(
                        source,
                        predicate="t.lease_date = s.lease_date",
                        source_alias="s",
                        target_alias="t",
                        commit_properties=CommitProperties(
                            custom_metadata={"userMetadata": tag}, max_commit_retries=0
                        ),
                    )
                    .when_matched_update(values, predicate="t.token = s.expected_token")
                    .when_not_matched_insert(values)
                    .execute()
                )
            except CommitFailedError:
                time.sleep(_retry_pause(attempt))  # a commit for another date landed: read again
                continue
            written = self.read(lease_date)
            return written is not None and written.token == lease.token
        raise DateLeaseHeld(
            f"lease table {self.table}: could not write the lease of {lease_date} in {SWAP_ATTEMPTS} "
            "attempts, other runs committed first each time"
        )


class DeltaSparkLeaseStore:
    """The lease table through Spark SQL with Delta (Databricks): ``MERGE INTO`` whose update is
    conditioned on the token read. Delta's optimistic concurrency fails a MERGE when a concurrent
    commit added or removed files it read (``ConcurrentAppendException`` and its kin), so two runs
    swapping one date's row cannot both win; the loser reads the row again."""

    def __init__(self, spark, table: str) -> None:
        from spark_jobs.delta_io import DeltaSparkIO

        self.spark, self.table = spark, table
        self.ref = DeltaSparkIO(spark)._ref(table)
        self._created = False

    def _ensure(self) -> None:
        if not self._created:
            columns = ", ".join(f"{name} {kind.upper()}" for name, kind in COLUMNS)
            self.spark.sql(f"CREATE TABLE IF NOT EXISTS {self.ref} ({columns}) USING DELTA")
            self._created = True

    def read(self, lease_date: str) -> Lease | None:
        from pyspark.sql import functions as F

        self._ensure()
        rows = (
            self.spark.table(self.ref) if "`" not in self.ref else self.spark.sql(f"SELECT * FROM {self.ref}")
        )
        found = [r.asDict() for r in rows.where(F.col("lease_date") == lease_date).collect()]
        return Lease.from_row(max(found, key=lambda r: r["acquired_at"])) if found else None

    def swap(self, lease_date: str, expected: str | None, lease: Lease) -> bool:
        from spark_jobs.delta_io import _session_conf

        names = [name for name, _ in COLUMNS]
        schema = ", ".join(f"{name} {kind}" for name, kind in (*COLUMNS, ("expected_token", "string")))
        view = f"spark_triton_lease_{uuid.uuid4().hex}"
        tag = f"spark-triton lease date={lease_date} run_id={lease.run_id}"
        for attempt in range(1, SWAP_ATTEMPTS + 1):
            current = self.read(lease_date)
            if (current.token if current else None) != expected:
                return False
            self.spark.createDataFrame(
                [{**lease.row(), "expected_token": expected}], schema
            ).createOrReplaceTempView(view)
            try:
                with _session_conf(self.spark, "spark.databricks.delta.commitInfo.userMetadata", tag):
                    self.spark.sql(
                        f"MERGE INTO {self.ref} t USING {view} s ON t.lease_date = s.lease_date "
                        f"WHEN MATCHED AND t.token = s.expected_token THEN UPDATE SET "
                        f"{', '.join(f't.{n} = s.{n}' for n in names)} "
                        f"WHEN NOT MATCHED THEN INSERT ({', '.join(names)}) "
                        f"VALUES ({', '.join(f's.{n}' for n in names)})"
                    )
            except Exception as exc:
                if "Concurrent" not in f"{type(exc).__name__} {exc}":
                    raise
                time.sleep(_retry_pause(attempt))
                continue
            finally:
                self.spark.catalog.dropTempView(view)
            written = self.read(lease_date)
            return written is not None and written.token == lease.token
        raise DateLeaseHeld(
            f"lease table {self.table}: could not write the lease of {lease_date} in {SWAP_ATTEMPTS} "
            "attempts, other runs committed first each time"
        )


def lease_store_for(io: DeltaIO, table: str) -> LeaseStore:
    """The lease table through the engine the run writes its output with."""
    if io.name == "delta-rs":
        return DeltaRsLeaseStore(table)
    return DeltaSparkLeaseStore(io.spark, table)  # type: ignore[attr-defined]


class DateLease:
    """This run's hold on (output table, date): :meth:`acquire`, :meth:`ensure_held` before each
    commit, :meth:`release` at the end (or use it as a context manager)."""

    def __init__(
        self,
        store: LeaseStore,
        *,
        output_table: str,
        lease_date: str,
        run_id: str,
        writer: str,
        ttl_s: float,
        wait_s: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.output_table, self.lease_date = store, output_table, lease_date
        self.run_id, self.writer, self.ttl_s, self.wait_s, self.clock = run_id, writer, ttl_s, wait_s, clock
        self.lease: Lease | None = None
        self.took_over: Lease | None = None  # the stale lease this run replaced, if any
        self._lost: Lease | None = None
        self._lock = threading.Lock()  # the heartbeat and the job's own renewals
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    @classmethod
    def for_job(cls, io: DeltaIO, job: InferenceJobConfig) -> DateLease:
        return cls(
            lease_store_for(io, job.lease_table),
            output_table=job.output_table,
            lease_date=job.logical_date,
            run_id=job.run_id,
            writer=job.writer,
            ttl_s=job.lease_ttl_s,
            wait_s=job.lease_wait_s,
        )

    def _new(self, acquired_at: float | None = None, released: bool = False) -> Lease:
        now = self.clock()
        me = ProcessRecord.of(os.getpid())
        return Lease(
            lease_date=self.lease_date,
            run_id=self.run_id,
            writer=self.writer,
            host=socket.gethostname(),
            pid=me.pid,
            pid_started=me.create_time,
            acquired_at=now if acquired_at is None else acquired_at,
            expires_at=now + self.ttl_s,
            released_at=now if released else None,
            token=uuid.uuid4().hex,
        )

    def acquire(self, on_wait: Callable[[], None] | None = None) -> DateLease:
        """Take the date's lease, waiting up to ``wait_s`` for a held one; :class:`DateLeaseHeld` if not.
        ``on_wait`` is called before each wait (the job's cancel check raises there)."""
        deadline = time.monotonic() + self.wait_s
        while True:
            current = self.store.read(self.lease_date)
            why_free = current.free_at(self.clock()) if current is not None else "new"
            if why_free is not None:
                mine = self._new()
                if self.store.swap(self.lease_date, current.token if current else None, mine):
                    self.lease = mine
                    if current is not None and current.released_at is None:
                        self.took_over = current
                        log.warning(
                            "took over the lease of %s in %s from %s: %s",
                            self.lease_date, self.output_table, current.describe(), why_free,
                        )  # fmt: skip
                    self._start_heartbeat()
                    return self
                continue  # another run swapped first: look again
            left = deadline - time.monotonic()
            if left <= 0:
                waited = f" after waiting {self.wait_s:g} s" if self.wait_s else ""
                raise DateLeaseHeld(
                    f"output table {self.output_table}, date {self.lease_date} is being written by "
                    f"{current.describe()}{waited}; run {self.run_id} did not start. Let that run finish "
                    "(or cancel it), or set lease_wait_s to wait for it"
                )
            log.info(
                "date %s of %s is leased by %s; waiting",
                self.lease_date,
                self.output_table,
                current.describe(),
            )
            time.sleep(min(WAIT_POLL_S, left))

    def renew(self) -> None:
        """Extend the lease by ``ttl_s``; :class:`DateLeaseLost` if another run took it meanwhile."""
        with self._lock:
            if self._lost is not None:
                raise DateLeaseLost(self._lost_message())
            held = self.lease
            if held is None:
                raise DateLeaseLost(f"run {self.run_id} holds no lease on {self.lease_date}")
            renewed = self._new(acquired_at=held.acquired_at)
            if self.store.swap(self.lease_date, held.token, renewed):
                self.lease = renewed
                return
            self._lost = self.store.read(self.lease_date)
            raise DateLeaseLost(self._lost_message())

    def ensure_held(self) -> None:
        """Before a commit: renew now, which proves this run still holds the date (else it raises)."""
        self.renew()

    def _lost_message(self) -> str:
        holder = self._lost.describe() if self._lost is not None else "nobody (the row is gone)"
        return (
            f"run {self.run_id} lost its lease on {self.output_table}, date {self.lease_date} (not renewed "
            f"within lease_ttl_s={self.ttl_s:g} s); it is now held by {holder}. Nothing more was committed"
        )

    def release(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=30)
        with self._lock:
            held, self.lease = self.lease, None
            if held is None or self._lost is not None:
                return
            try:
                if not self.store.swap(
                    self.lease_date, held.token, self._new(held.acquired_at, released=True)
                ):
                    log.warning(
                        "the lease of %s in %s was taken over before its release",
                        self.lease_date,
                        self.output_table,
                    )
            except Exception:  # it expires by itself; the run's own outcome matters more
                log.warning(
                    "could not release the lease of %s in %s",
                    self.lease_date,
                    self.output_table,
                    exc_info=True,
                )

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._heartbeat = threading.Thread(target=self._beat, name="spark-triton-lease", daemon=True)
        self._heartbeat.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                self.renew()
            except DateLeaseLost:
                log.error(self._lost_message())
                return
            except Exception:  # storage hiccup: the next beat (or the commit's own renewal) tries again
                log.warning(
                    "could not renew the lease of %s in %s", self.lease_date, self.output_table, exc_info=True
                )
