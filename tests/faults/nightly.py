"""What the DAG-level faults share: tables, a complete earlier run of each date, the nightly DAG with
fast test settings, probes into a running run, a thread that strikes when a condition holds, and the
measurement that becomes the fault's row in the table.

Each fault starts from dates that an earlier run already scored completely (``seed_previous_run``):
a run that fails must leave them exactly as they were, a run that succeeds must replace them, and
either way every input id of a date is in output + rejects exactly once. That is what the rows
lost/duplicated columns check, so a failed run that half-replaced a date would show up there.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from tests.conftest import REPO
from tests.faults import ledger

TINY = "spark_jobs.models.hashing_embedder:MODEL"
DAY = dt.date(2026, 11, 24)
PER_DAY = 60
BROKEN = 3  # sample_documents makes the first 3 rows of each date unscorable (null, empty, blank)
# Four shuffle partitions instead of Spark's 200: a test date has 60 rows, and 200 near-empty tasks
# per stage would make up most of every run on a two-core CI machine.
TEST_SPARK_CONF = {"spark.sql.shuffle.partitions": "4"}
POLL_S = 1.0  # the inference task's status polling (5 s by default): faults are seen sooner
PREVIOUS = "previous-run"


@dataclass(frozen=True)
class Tables:
    input: Path
    output: Path
    rejects: Path


def make_tables(home: Path, days: Iterable[dt.date], per_day: int = PER_DAY) -> Tables:
    from airflow_spark_triton.demo.sample_documents import sample_documents
    from spark_jobs.delta_io import write_pandas_table

    data = home / "data"
    write_pandas_table(str(data / "documents"), sample_documents(list(days), per_day), ["date"])
    return Tables(data / "documents", data / "embeddings", data / "embeddings_rejects")


def input_rows(tables: Tables, day: dt.date):
    from deltalake import DeltaTable

    return DeltaTable(str(tables.input)).to_pandas(partitions=[("date", "=", day.isoformat())])


def seed_previous_run(tables: Tables, days: Iterable[dt.date]) -> None:
    """The output a complete earlier run left for ``days``, in the job's own schema."""
    import numpy as np
    import pyarrow as pa
    from deltalake import write_deltalake

    from spark_jobs.models.hashing_embedder import DIM

    for day in days:
        docs = input_rows(tables, day)
        text = docs["text"]
        broken = text.isna() | text.fillna("").str.strip().eq("")
        scored, rejected = docs[~broken], docs[broken]
        when = pa.array([dt.datetime.now(dt.UTC)] * len(docs), pa.timestamp("us", tz="UTC"))
        output = pa.table(
            {
                "id": pa.array(scored["id"].astype("int64")),
                "embedding": pa.array([np.zeros(DIM, np.float32)] * len(scored), pa.list_(pa.float32())),
                "model": pa.array([PREVIOUS] * len(scored)),
                "run_id": pa.array([PREVIOUS] * len(scored)),
                "scored_at": when[: len(scored)],
                "date": pa.array([day.isoformat()] * len(scored)),
            }
        )
        rejects = pa.table(
            {
                "id": pa.array([str(i) for i in rejected["id"]], pa.string()),
                "reason": pa.array([PREVIOUS] * len(rejected), pa.string()),
                "input_preview": pa.array([""] * len(rejected), pa.string()),
                "run_id": pa.array([PREVIOUS] * len(rejected), pa.string()),
                "rejected_at": when[: len(rejected)],
                "date": pa.array([day.isoformat()] * len(rejected), pa.string()),
            }
        )
        write_deltalake(str(tables.output), output, partition_by=["date"], mode="append")
        write_deltalake(str(tables.rejects), rejects, partition_by=["date"], mode="append")


def table_version(table: Path) -> int | None:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(str(table)).version()
    except TableNotFoundError:
        return None


def run_ids_of(tables: Tables, day: dt.date) -> set[str]:
    """Which runs wrote the date's rows now (``previous-run`` for the seeded ones)."""
    from deltalake import DeltaTable

    ids: set[str] = set()
    for table in (tables.output, tables.rejects):
        frame = DeltaTable(str(table)).to_pandas(
            partitions=[("date", "=", day.isoformat())], columns=["run_id"]
        )
        ids |= set(frame["run_id"])
    return ids


def nightly_conf(tables: Tables, **params: Any) -> dict[str, Any]:
    return {
        "input_table": str(tables.input),
        "output_table": str(tables.output),
        "model": TINY,
        "num_workers": 1,
        "batch_size": 4,
        "spark_conf": TEST_SPARK_CONF,
        **params,
    }


def embed_overrides(**attributes: Any) -> dict[str, dict[str, Any]]:
    return {"embed_documents": {"poll_interval_s": POLL_S, **attributes}}


def run_nightly(
    tables: Tables, day: dt.date = DAY, *, overrides: dict[str, Any] | None = None, **params: Any
):
    """The nightly DAG through ``dag.test()`` in this process, without retries."""
    from airflow_spark_triton.dag_runner import run_dag

    return run_dag(
        REPO / "dags",
        "nightly_embeddings",
        day,
        nightly_conf(tables, **params),
        retries=0,
        task_overrides=embed_overrides(**(overrides or {})),
    )


def start_nightly_process(
    home: Path, tables: Tables, day: dt.date = DAY, **params: Any
) -> tuple[subprocess.Popen, Path]:
    """The nightly DAG in a process of its own (see :mod:`tests.faults.dag_process`)."""
    spec = home / "dag_spec.json"
    result = home / "dag_result.json"
    spec.write_text(
        json.dumps(
            {
                "dags_folder": str(REPO / "dags"),
                "dag_id": "nightly_embeddings",
                "date": day.isoformat(),
                "conf": nightly_conf(tables, **params),
                "retries": 0,
                "task_overrides": embed_overrides(),
            }
        )
    )
    log = open(home / "dag_process.log", "wb")  # noqa: SIM115  (closed by the caller via the process)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.faults.dag_process", str(spec), str(result)],
        cwd=REPO,
        env=dict(os.environ),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    return proc, result


# -- probes into a running run -------------------------------------------------------------------


class Probe:
    """Finds the processes and records of the runs under one fault home."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.backend_home = home / "spark_triton"

    def run_dirs(self) -> list[Path]:
        return sorted(self.backend_home.glob("clusters/*/runs/*/"), key=lambda p: p.stat().st_mtime)

    def run_status(self) -> dict[str, Any]:
        """The latest run's status record (``{}`` before there is one)."""
        dirs = self.run_dirs()
        return self.status_of(dirs[-1]) if dirs else {}

    @staticmethod
    def status_of(run_dir: Path) -> dict[str, Any]:
        with contextlib.suppress(OSError, ValueError):
            return json.loads((run_dir / "status.json").read_text())
        return {}

    def driver_log_tail(self, max_bytes: int = 1 << 16) -> str:
        """The end of the latest run's driver log (spark-submit's and the job's output)."""
        dirs = self.run_dirs()
        if not dirs:
            return ""
        with contextlib.suppress(OSError), open(dirs[-1] / "driver.log", "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - max_bytes))
            return handle.read().decode(errors="replace")
        return ""

    def supervisor_log(self) -> str:
        dirs = self.run_dirs()
        with contextlib.suppress(OSError):
            return (dirs[-1] / "supervisor.log").read_text(errors="replace") if dirs else ""
        return ""

    def server_records(self) -> list[dict[str, Any]]:
        records = []
        for path in self.backend_home.glob("clusters/*/triton/*.json"):
            with contextlib.suppress(OSError, ValueError):
                record = json.loads(path.read_text())
                if record.get("state") == "READY":
                    records.append(record)
        return records

    def inference_requests(self) -> int:
        """Successful inference requests the run's live servers answered (Triton's own metrics)."""
        total = 0
        for record in self.server_records():
            url = f"http://127.0.0.1:{record['metrics_port']}/metrics"
            with contextlib.suppress(OSError, ValueError), urllib.request.urlopen(url, timeout=10) as reply:
                for line in reply.read().decode().splitlines():
                    if line.startswith("nv_inference_request_success{"):
                        total += int(float(line.rsplit(" ", 1)[1]))
        return total

    def serving(self) -> bool:
        return self.inference_requests() > 0

    def _processes(self, marker: str) -> list[psutil.Process]:
        return ledger.processes_under(self.home, markers=[marker])

    def python_driver(self) -> psutil.Process | None:
        found = [p for p in self._processes("batch_inference.py") if "java" not in p.name()]
        return found[0] if found else None

    def kill_whole_driver(self) -> list[dict[str, Any]]:
        """kill -9 spark-submit's JVM and the Python job together: a driver node lost at once."""
        procs = self._processes("org.apache.spark.deploy.SparkSubmit")
        driver = self.python_driver()
        procs += [driver] if driver is not None else []
        if not procs:
            raise RuntimeError("no driver process to kill")
        return [kill9(p) for p in procs]

    def executors(self) -> list[psutil.Process]:
        return self._processes("CoarseGrainedExecutorBackend")

    def server_watch_pids(self) -> set[int]:
        """The executor JVMs the live servers watch (``--watch-pid``): the ones that started them."""
        pids = set()
        for proc in ledger.processes_under(self.home, markers=["spark_jobs.triton_server"]):
            with contextlib.suppress(psutil.Error, ValueError, IndexError):
                args = proc.cmdline()
                pids.add(int(args[args.index("--watch-pid") + 1]))
        return pids

    def staged_output_files(self, tables: Tables, day: dt.date) -> list[Path]:
        """Parquet files a running write has produced for the date but not committed yet."""
        return [p for p in (tables.output / f"date={day.isoformat()}").glob("run-*/**/part-*.parquet")]

    def server_logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in self.backend_home.glob("clusters/*/triton/*.log")
        )


class Strike(threading.Thread):
    """Runs ``action`` once ``condition`` holds; remembers when (monotonic) and what it returned."""

    def __init__(self, condition: Callable[[], bool], action: Callable[[], Any], timeout_s: float = 300.0,
                 interval_s: float = 0.1) -> None:  # fmt: skip
        super().__init__(name="fault-strike", daemon=True)
        self.condition, self.action = condition, action
        self.timeout_s, self.interval_s = timeout_s, interval_s
        self.fired_at: float | None = None
        self.result: Any = None
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        try:
            while not self._stop_event.is_set():
                if self.condition():
                    self.fired_at = time.monotonic()
                    self.result = self.action()
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the fault's condition never held in {self.timeout_s:.0f}s")
                self._stop_event.wait(self.interval_s)
        except BaseException as exc:
            self.error = exc

    def finish(self) -> None:
        self._stop_event.set()
        self.join(30)

    def check(self, result: Any = None, detail: str = "") -> None:
        """The fault fired; if not, say how the run ended instead, so a miss is diagnosable from CI."""
        ended = ""
        if result is not None:
            data = result if isinstance(result, dict) else vars(result)
            ended = f"; the run ended {data.get('state')} with tasks {data.get('task_states')}"
        ended += f": {detail}" if detail else ""
        assert self.error is None, f"fault injection failed: {self.error!r}{ended}"
        assert self.fired_at is not None, f"the fault was never injected{ended}"


def kill9(proc: psutil.Process) -> dict[str, Any]:
    info = {"pid": proc.pid, "cmdline": " ".join(proc.cmdline())[:160]}
    proc.send_signal(signal.SIGKILL)
    return info


# -- the row ------------------------------------------------------------------------------------


def measure(
    request,
    fault: str,
    outcome: str,
    home: Path,
    tables: Tables | None,
    days: Iterable[dt.date],
    t0: float | None,
    timeline: ledger.Timeline,
    backend: str = "local",
    **details: Any,
) -> ledger.FaultRow:
    """Wait until nothing of the fault's home runs, then record the fault's row.

    ``t0``: the fault's moment (monotonic); None for faults that are no single moment (storms,
    reruns), whose cleanup is the longest from a run's end, per the ``timeline``.
    """
    t_final = ledger.wait_until_no_process(home)
    leftover = ledger.describe(ledger.processes_under(home)) if t_final is None else ""
    timeline.catch_up()
    if t_final is None:
        cleanup = None
    elif t0 is None:
        cleanup = timeline.worst_run_cleanup()
    else:
        cleanup = timeline.cleanup_after(t0)
    backend_home = home / "spark_triton"
    clusters = ledger.local_clusters_left(backend_home)
    servers = ledger.servers_left(ledger.cluster_state_dirs(backend_home), [home])
    lost = duplicated = 0
    if tables is not None:
        lost, duplicated = ledger.rows_lost_and_duplicated(tables.input, tables.output, tables.rejects, days)
    return ledger.record(
        ledger.FaultRow(
            fault=fault,
            backend=backend,
            outcome=outcome,
            clusters_left=len(clusters),
            servers_left=len(servers),
            rows_lost=lost,
            rows_duplicated=duplicated,
            cleanup_s=cleanup,
            test=request.node.nodeid,
            details={"clusters": clusters, "servers": servers, "processes_left": leftover, **details},
        )
    )


def assert_clean(row: ledger.FaultRow) -> None:
    assert row.clusters_left == 0, f"clusters left: {row.details['clusters']}"
    assert row.servers_left == 0, f"Triton servers left: {row.details['servers']}"
    assert row.cleanup_s is not None, f"processes still running:\n{row.details['processes_left']}"
    assert row.rows_lost == 0, "input rows missing from output + rejects"
    assert row.rows_duplicated == 0, "rows written more than once"
