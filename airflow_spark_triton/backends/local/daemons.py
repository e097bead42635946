"""The daemons of a local cluster: its master, its workers (each after its node's init script) and its
reaper, started detached and recorded in ``cluster.json``; checked and stopped by that record.

The backend (:mod:`.backend`) owns the cluster's lifecycle (its states, runs and Triton servers) and
calls this module for the processes. Command lines and environments are :mod:`.commands`'.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from airflow_spark_triton.backends.local import commands
from airflow_spark_triton.backends.local.cluster_state import ClusterState, cluster_record, record_timing
from airflow_spark_triton.backends.local.commands import LOCALHOST
from airflow_spark_triton.cluster_spec import GpuClusterSpec
from airflow_spark_triton.errors import ClusterError
from airflow_spark_triton.runs import processes as procs
from airflow_spark_triton.runs.env import run_environment
from airflow_spark_triton.runs.processes import ProcessRecord
from airflow_spark_triton.runs.supervised import STOP_GRACE_S, process_record
from spark_jobs.node_state import free_port

log = logging.getLogger(__name__)

# Started as ``python -m``: the reaper imports the backend only when it deletes (see its module).
REAPER_MODULE = "airflow_spark_triton.backends.local.reaper"
MASTER_START_TIMEOUT_S = 120.0
MASTER_BIND_ATTEMPTS = 4
INIT_SCRIPT_TIMEOUT_S = 600.0
MASTER_JSON_TIMEOUT_S = 3.0
# A master or worker recording its class-data archive writes it as it exits on SIGTERM: 30-60 MB,
# which took over 15 s on a loaded 2-core machine. Killed half way, it would record again next time.
ARCHIVE_DUMP_GRACE_S = 90.0

_BIND_FAILURE = ("BindException", "Address already in use", "could not bind")


def master_json(webui_port: int) -> dict[str, Any] | None:
    """The master's own view (status, alive workers); None while its web UI is not up."""
    url = f"http://{LOCALHOST}:{webui_port}/json/"
    try:
        with urllib.request.urlopen(url, timeout=MASTER_JSON_TIMEOUT_S) as response:
            return json.loads(response.read().decode())
    except (OSError, urllib.error.URLError, ValueError):
        return None  # not serving (yet, or any more): the callers wait or check the process


def _serving_or_dead(webui_port: int, master: ProcessRecord) -> bool:
    """Either outcome ends the wait for a starting master: it serves, or it exited (e.g. bind)."""
    return master_json(webui_port) is not None or not procs.is_alive(master)


# -- the recorded daemons ------------------------------------------------------------------------


def cluster_processes(cluster: dict[str, Any]) -> list[tuple[str, ProcessRecord]]:
    """The recorded master and workers, by name (``master``, ``worker <i>``)."""
    named = [(f"worker {w['index']}", process_record(w)) for w in cluster.get("workers", [])]
    named.append(("master", process_record(cluster.get("master"))))
    return [(name, record) for name, record in named if record is not None]


def process_log(cluster: dict[str, Any], name: str) -> Path:
    if name == "master":
        return Path(cluster["master"]["log"])
    index = int(name.split()[-1])
    return Path(next(w["log"] for w in cluster["workers"] if w["index"] == index))


def logs_summary(cluster: dict[str, Any]) -> str:
    parts = []
    for name, _ in cluster_processes(cluster):
        log_path = process_log(cluster, name)
        parts.append(f"--- {name}: last lines of {log_path}\n{procs.log_tail(log_path, 8)}")
    return "\n".join(parts)


def raise_if_dead(cluster_id: str, cluster: dict[str, Any]) -> None:
    for name, record in cluster_processes(cluster):
        if not procs.is_alive(record):
            log_path = process_log(cluster, name)
            raise ClusterError(
                f"cluster {cluster_id}: {name} (pid {record.pid}) exited; "
                f"last lines of {log_path}:\n{procs.log_tail(log_path, 20)}"
            )


def stop_daemons(daemons: list[dict[str, Any] | None]) -> None:
    """SIGTERM, then SIGKILL after the grace; longer for a JVM writing its class-data archive."""
    records = [r for r in map(process_record, daemons) if r is not None]
    recording = any(d and d.get("records_archive") for d in daemons)
    procs.stop_groups(records, grace_s=ARCHIVE_DUMP_GRACE_S if recording else STOP_GRACE_S)


def stop_reaper(cluster: dict[str, Any]) -> None:
    reaper = process_record(cluster.get("reaper"))
    if reaper is None or reaper.pid == os.getpid():  # the reaper deleting: it exits by itself
        return
    if not procs.stop_groups([reaper], grace_s=5.0):
        log.warning("The reaper of %s (pid %s) did not stop", cluster.get("cluster_id"), reaper.pid)


# -- starting them -------------------------------------------------------------------------------


class ClusterDaemons:
    """Starts the daemons of the cluster in ``cluster_dir``, recording each in its ``cluster.json``."""

    def __init__(self, cluster_id: str, cluster_dir: Path) -> None:
        self.cluster_id = cluster_id
        self.cluster_dir = cluster_dir
        self.record = cluster_record(cluster_dir)

    def _cluster(self) -> dict[str, Any]:
        return self.record.read() or {}

    def start_reaper(self) -> None:
        """The cluster's own net (see backends.local.reaper); it imports Airflow only to delete."""
        cdir = self.cluster_dir
        log_path = cdir / "logs" / "reaper.log"
        record = procs.start_detached(
            [sys.executable, "-m", REAPER_MODULE, "--cluster-dir", str(cdir)],
            env=run_environment(airflow_config=True),
            log_path=log_path,
            cwd=cdir,
        )
        self.record.update(reaper={**record.to_dict(), "log": str(log_path)})
        log.info("Started the reaper of %s: pid %s", self.cluster_id, record.pid)

    def start(self, spec: GpuClusterSpec) -> None:
        """Master first; every node's init script runs while it boots (all at once, as on
        Databricks); then the workers. An init-script failure fails the create, naming the node."""
        self._start_master(attempt=1)
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(max_workers=spec.num_workers) as pool:
            checks = [pool.submit(self._run_init_script, spec, index) for index in range(spec.num_workers)]
            for check in checks:  # in node order, so the first failing node is the one named
                check.result()
        record_timing(self.record, "init_scripts", started)
        self._await_master()
        for index in range(spec.num_workers):
            self._ensure_not_deleted()
            self._start_worker(spec, index)

    def _ensure_not_deleted(self) -> None:
        """A teardown (e.g. the create task's on_kill) may run while create is still starting JVMs."""
        state = self._cluster().get("state")
        if state != ClusterState.PENDING:
            raise ClusterError(f"cluster {self.cluster_id} became {state} while it was being created")

    def _start_master(self, attempt: int) -> None:
        cluster = self._cluster()
        cdir = self.cluster_dir
        port, webui_port = free_port(), free_port()
        log_path = cdir / "logs" / "master.log"
        env = commands.master_env(cluster, cdir)
        record = procs.start_detached(
            commands.master_command(cluster, port, webui_port), env=env, log_path=log_path, cwd=cdir
        )
        master = {
            **record.to_dict(),
            "records_archive": commands.records_archive(env),
            "port": port,
            "webui_port": webui_port,
            "url": f"spark://{LOCALHOST}:{port}",
            "webui_url": f"http://{LOCALHOST}:{webui_port}",
            "log": str(log_path),
            "attempt": attempt,
        }
        self.record.update(master=master)
        log.info("Started Spark master pid %s on %s (web UI %s)", record.pid, master["url"], webui_port)

    def _await_master(self) -> None:
        """Wait until the master serves its JSON; on a lost port race, restart it on new ports."""
        cluster_id = self.cluster_id
        started = time.monotonic()
        for attempt in range(1, MASTER_BIND_ATTEMPTS + 1):
            master = self._cluster()["master"]
            record = ProcessRecord.from_dict(master)
            up = procs.wait_until(
                functools.partial(_serving_or_dead, int(master["webui_port"]), record),
                MASTER_START_TIMEOUT_S,
                interval_s=0.25,
            )
            if up and procs.is_alive(record):
                record_timing(self.record, "master_up", started)
                return
            log_path = Path(master["log"])
            tail = procs.log_tail(log_path, 20)
            if not up:
                raise ClusterError(
                    f"Spark master of {cluster_id} did not serve {master['webui_url']}/json/ within "
                    f"{MASTER_START_TIMEOUT_S:.0f}s; last lines of {log_path}:\n{tail}"
                )
            if not any(marker in tail for marker in _BIND_FAILURE) or attempt == MASTER_BIND_ATTEMPTS:
                raise ClusterError(
                    f"Spark master of {cluster_id} exited during startup (attempt {attempt}); "
                    f"last lines of {log_path}:\n{tail}"
                )
            log.warning("Master lost a port race (attempt %d); retrying with new ports", attempt)
            log_path.rename(log_path.with_name(f"master-attempt-{attempt}.log"))
            self._start_master(attempt=attempt + 1)

    @staticmethod
    def _init_script_path(spec: GpuClusterSpec) -> Path:
        path = Path(spec.init_script).expanduser() if spec.init_script else commands.packaged_init_script()
        if not path.is_file():
            raise ClusterError(f"init script {path} does not exist")
        return path

    def _run_init_script(self, spec: GpuClusterSpec, index: int) -> None:
        """Check the node before its worker starts, as Databricks runs init scripts per node."""
        cluster_id = self.cluster_id
        cluster = self._cluster()
        cdir = self.cluster_dir
        script = self._init_script_path(spec)
        work_dir = cdir / "work" / f"worker-{index}"
        work_dir.mkdir(parents=True, exist_ok=True)
        env = commands.init_script_env(cluster, cdir, index, work_dir)
        out, err = cdir / "logs" / f"init-{index}.out", cdir / "logs" / f"init-{index}.err"
        started = time.monotonic()
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            try:
                result = subprocess.run(
                    ["bash", str(script)],
                    env=env,
                    cwd=cdir,
                    stdin=subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=stderr,
                    timeout=INIT_SCRIPT_TIMEOUT_S,
                    start_new_session=True,  # a timeout kill must not reach the Airflow task
                )
            except subprocess.TimeoutExpired as exc:
                raise ClusterError(
                    f"init script {script} for worker {index} of {cluster_id} timed out after "
                    f"{INIT_SCRIPT_TIMEOUT_S:.0f}s; last lines of {err}:\n{procs.log_tail(err, 20)}"
                ) from exc
        if result.returncode != 0:
            raise ClusterError(
                f"init script {script} failed for worker {index} of {cluster_id} with exit code "
                f"{result.returncode}; last lines of its stderr ({err}):\n{procs.log_tail(err, 20)}"
            )
        log.info("Init script %s passed for worker %d in %.1fs", script, index, time.monotonic() - started)

    def _start_worker(self, spec: GpuClusterSpec, index: int) -> None:
        cluster = self._cluster()
        cdir = self.cluster_dir
        work_dir = cdir / "work" / f"worker-{index}"
        local_dir = commands.scratch_dir(cdir) / f"worker-{index}"
        local_dir.mkdir(parents=True, exist_ok=True)
        webui_port = free_port()
        log_path = cdir / "logs" / f"worker-{index}.log"
        env = commands.worker_env(cluster, cdir, work_dir, local_dir, index)
        record = procs.start_detached(
            commands.worker_command(cluster, spec, webui_port, work_dir),
            env=env,
            log_path=log_path,
            cwd=work_dir,
        )
        worker = {
            **record.to_dict(),
            "records_archive": commands.records_archive(env),
            "index": index,
            "webui_port": webui_port,
            "log": str(log_path),
            "work_dir": str(work_dir),
        }

        def add(record: dict[str, Any]) -> dict[str, Any]:
            return {"workers": [*record.get("workers", []), worker]}

        self.record.update_if(add)
        log.info("Started Spark worker %d pid %s", index, record.pid)
