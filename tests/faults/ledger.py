"""The fault table: one row per fault, measured for real, printed and saved by ``tests/faults/conftest.py``.

Columns: fault · backend · task outcome · clusters left · servers left · rows lost · rows duplicated
· seconds to clean up. Every number comes from the machine, not from what the code under test says:

* clusters left: local cluster records under the fault's home that are not DELETED or still have a
  live recorded JVM, plus emulated Databricks clusters never permanently deleted;
* servers left: live Triton processes (the server, ``tritonserver``, Python-backend stubs) whose
  command line or environment points into the fault's state directory, plus recorded servers whose
  pid and create time still match;
* rows lost / duplicated: the input ids of the date(s) against the ids in output + rejects; an id in
  neither is lost, an id found more than once (in either table, or in both) is duplicated;
* cleanup seconds: from the fault until no process of the fault's home is left, as sampled by a
  :class:`Timeline` while the test runs. The fault is the kill, signal or timeout where the test
  strikes, or, where the job runs into the failure itself, the moment it shows (Spark aborting the
  job, the init script exiting). A storm or a rerun is no single moment: there it is the longest
  time from a run's end (its status turning terminal) until nothing was left.

A test records its row *before* asserting, so a failing fault still shows up in the table.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tests.processes import processes_under

TRITON_MARKERS = ("spark_jobs.triton_server", "tritonserver", "triton_python_backend_stub")
CLEANUP_TIMEOUT_S = 90.0


@dataclass
class FaultRow:
    fault: str
    backend: str
    outcome: str
    clusters_left: int
    servers_left: int
    rows_lost: int
    rows_duplicated: int
    cleanup_s: float | None
    test: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not (self.clusters_left or self.servers_left or self.rows_lost or self.rows_duplicated)


ROWS: list[FaultRow] = []


def record(row: FaultRow) -> FaultRow:
    ROWS.append(row)
    return row


COLUMNS = (
    ("fault", "fault"),
    ("backend", "backend"),
    ("outcome", "task outcome"),
    ("clusters_left", "clusters left"),
    ("servers_left", "servers left"),
    ("rows_lost", "rows lost"),
    ("rows_duplicated", "rows dup"),
    ("cleanup_s", "cleanup s"),
)


def _cell(row: FaultRow, name: str) -> str:
    value = getattr(row, name)
    if name == "cleanup_s":
        return "-" if value is None else f"{value:.1f}"
    return str(value)


def format_table(rows: Sequence[FaultRow]) -> str:
    header = [title for _, title in COLUMNS]
    body = [[_cell(row, name) for name, _ in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    numeric = {i for i, (name, _) in enumerate(COLUMNS) if name not in ("fault", "backend", "outcome")}

    def line(cells: list[str]) -> str:
        return " | ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    rule = "-+-".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(cells) for cells in body)])


def write_json(rows: Sequence[FaultRow], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([asdict(row) for row in rows], indent=2, default=str))


# -- processes ---------------------------------------------------------------------------------


def _record_alive(record: dict[str, Any]) -> bool:
    try:
        proc = psutil.Process(int(record["pid"]))
        same = abs(proc.create_time() - float(record["create_time"])) < 0.01
        return same and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


def servers_left(state_dirs: Iterable[Path], roots: Sequence[Path] = ()) -> list[str]:
    """Live Triton processes: recorded in a state dir, or pointing into one of the dirs or roots."""
    dirs = [Path(d) for d in state_dirs]
    live = {p.pid: p for p in processes_under(*dirs, *roots, markers=TRITON_MARKERS)}
    for directory in dirs:
        for path in directory.glob("*.json"):
            with contextlib.suppress(OSError, ValueError):
                record = json.loads(path.read_text())
                if isinstance(record, dict) and record.get("pid") and _record_alive(record):
                    with contextlib.suppress(psutil.Error):
                        live.setdefault(int(record["pid"]), psutil.Process(int(record["pid"])))
    return [f"{pid}: {' '.join(p.cmdline())[:160]}" for pid, p in live.items() if p.is_running()]


class Timeline(threading.Thread):
    """Samples, twice a second, how many processes point into a root and which runs under it have
    ended, so cleanup times are taken when things happen, not when a test gets round to looking."""

    TERMINAL = frozenset({"SUCCESS", "FAILED", "CANCELED"})
    STATUS_FILES = ("*/clusters/*/runs/*/status.json", "*/*/clusters/*/runs/*/status.json")

    def __init__(self, root: Path, interval_s: float = 0.5) -> None:
        super().__init__(name="fault-timeline", daemon=True)
        self.root, self.interval_s = root, interval_s
        self.samples: list[tuple[float, int]] = []
        self.run_ended: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            now = time.monotonic()
            live = len(processes_under(self.root))
            for pattern in self.STATUS_FILES:
                for path in self.root.glob(pattern):
                    if str(path.parent) in self.run_ended:
                        continue
                    with contextlib.suppress(OSError, ValueError):
                        if json.loads(path.read_text()).get("state") in self.TERMINAL:
                            self.run_ended[str(path.parent)] = now
            with self._lock:
                self.samples.append((now, live))
            self._stop_event.wait(self.interval_s)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(30)

    def catch_up(self, timeout_s: float = 10.0) -> None:
        """Wait for a sample taken after now, so the samples cover everything until now."""
        now = time.monotonic()
        deadline = now + timeout_s
        while time.monotonic() < deadline and self.is_alive():
            with self._lock:
                if self.samples and self.samples[-1][0] >= now:
                    return
            time.sleep(0.05)

    def gone_after(self, t0: float) -> float | None:
        """The first sample at or after ``t0`` that found no process left."""
        with self._lock:
            samples = list(self.samples)
        return next((t for t, live in samples if t >= t0 and live == 0), None)

    def cleanup_after(self, t0: float) -> float | None:
        """Seconds from ``t0`` until nothing was left, to the sampling interval; 0.0 when the
        samples on both sides of ``t0`` found nothing running (nothing had to be cleaned up)."""
        with self._lock:
            samples = list(self.samples)
        before = [live for t, live in samples if t < t0]
        after = [(t, live) for t, live in samples if t >= t0]
        gone = next((t for t, live in after if live == 0), None)
        if gone is None:
            return None
        if before and before[-1] == 0 and after[0][1] == 0:
            return 0.0
        return round(gone - t0, 1)

    def worst_run_cleanup(self) -> float | None:
        """From each run's end until nothing was left, the longest; None if one never got clean."""
        times = [self.cleanup_after(ended) for ended in self.run_ended.values()]
        if not times or None in times:
            return None
        return max(t for t in times if t is not None)


def wait_until_no_process(*roots: Path, timeout_s: float = CLEANUP_TIMEOUT_S) -> float | None:
    """Monotonic time at which no process points into ``roots`` any more; None on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        if not processes_under(*roots):
            return time.monotonic()
        if time.monotonic() > deadline:
            return None
        time.sleep(0.25)


# -- local clusters ----------------------------------------------------------------------------


def local_clusters_left(home: Path) -> list[str]:
    """Cluster records under ``home`` that are not DELETED, or whose recorded JVMs still run."""
    left = []
    for path in sorted((home / "clusters").glob("*/cluster.json")):
        with contextlib.suppress(OSError, ValueError):
            cluster = json.loads(path.read_text())
            records = [cluster.get("master") or {}, *cluster.get("workers", [])]
            alive = [r["pid"] for r in records if r.get("pid") and _record_alive(r)]
            if cluster.get("state") != "DELETED" or alive:
                left.append(f"{cluster.get('cluster_id')}: {cluster.get('state')}, live pids {alive}")
    return left


def cluster_state_dirs(home: Path) -> list[Path]:
    return sorted((home / "clusters").glob("*/triton"))


# -- rows --------------------------------------------------------------------------------------


def date_ids(table: Path, dates: Iterable[str], column: str = "id") -> list[str]:
    """Every id of the dates in a Delta table, as strings (rejects keep ids as strings)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        delta = DeltaTable(str(table))
    except TableNotFoundError:
        return []
    ids: list[str] = []
    for day in dates:
        frame = delta.to_pandas(partitions=[("date", "=", day)], columns=[column])
        ids += [str(v) for v in frame[column].tolist()]
    return ids


def active_leases(output_table: Path) -> list[dict[str, Any]]:
    """The unreleased rows of an output table's date-lease table (:mod:`spark_jobs.date_lease`):
    who is writing which date; empty before any run took a lease."""
    from deltalake import DeltaTable

    from spark_jobs.contract.job_config import default_lease_table

    table = Path(default_lease_table(str(output_table)))
    if not (table / "_delta_log").exists():
        return []
    rows = DeltaTable(str(table)).to_pandas()
    return rows[rows["released_at"].isna()].to_dict("records")


def rows_lost_and_duplicated(
    input_table: Path, output_table: Path, rejects_table: Path, dates: Iterable[str | dt.date]
) -> tuple[int, int]:
    days = [d.isoformat() if isinstance(d, dt.date) else d for d in dates]
    wanted = set(date_ids(input_table, days))
    written = Counter(date_ids(output_table, days) + date_ids(rejects_table, days))
    lost = len(wanted - set(written))
    duplicated = sum(1 for count in written.values() if count > 1)
    return lost, duplicated


def epoch_to_monotonic(epoch_s: float) -> float:
    return time.monotonic() - (time.time() - epoch_s)
