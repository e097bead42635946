"""The local backend: a real Spark standalone cluster (one master, N workers) on this machine.

It exists so the whole pipeline (cluster lifecycle, spark-submit, one Triton server per node,
teardown) runs and is tested without Databricks. Every cluster and run lives in a directory under
the backend's home, and every process is started detached and recorded with its create time, so any
later Airflow task (a retry, the teardown, the triggerer) can find, watch and stop it.

Composed of: the ``spark_triton_local`` connection's settings
(:class:`~airflow_spark_triton.hooks.local_spark.LocalSparkHook`), the cluster record
(:mod:`.cluster_state`, guarded state transitions), the cluster's daemons (:mod:`.daemons`: master,
workers after their init scripts, reaper; their command lines are :mod:`.commands`') and the
supervised runs (:class:`~airflow_spark_triton.runs.supervised.SupervisedRuns`). This module is the
lifecycle: states, runs, Triton servers and the order of a delete.

No Airflow task has to survive for the cluster to go away: each cluster has a reaper
(:mod:`~airflow_spark_triton.backends.local.reaper`), a small detached process that deletes it when
its creating task is killed (kill -9, OOM) while it is PENDING, when it has idled past the spec's
``autotermination_minutes``, or when its master died; the teardown stops the reaper.

Cluster directory ``<home>/clusters/<cluster_id>/``::

    cluster.json            state, tags, spec, host, master URL and ports, pids + create times; owners
                            (creating process and, in an Airflow task, its supervisor) while
                            PENDING; reaper; deleted_by (who deleted it and why)
    logs/master.log         master JVM output (failed bind attempts: master-attempt-<n>.log)
    logs/reaper.log         the reaper's decisions
    logs/worker-<i>.log     worker JVM output
    logs/init-<i>.out|.err  the init script's output for worker i
    work/worker-<i>/        SPARK_WORKER_DIR: executor stdout/stderr per application
    local/                  SPARK_LOCAL_DIRS of workers and drivers (removed on delete)
    triton/                 Triton server records the job writes (SPARK_TRITON_STATE_DIR)
    runs/<run_id>/          one supervised spark-submit (see runs.supervised), plus
                            local/ (driver scratch, removed on delete)
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil

from airflow_spark_triton import secret_env
from airflow_spark_triton.backends.base import RunStatus
from airflow_spark_triton.backends.local import commands, daemons, jvm_archive
from airflow_spark_triton.backends.local.cluster_state import (
    CLUSTER_FILE,
    LIVE_STATES,
    ClusterState,
    cluster_record,
    gone_owners,
    owner_records,
    record_timing,
)
from airflow_spark_triton.backends.local.commands import memory_mb
from airflow_spark_triton.backends.supervised import SupervisedRunsBackend
from airflow_spark_triton.backends.table_schema import delta_rs_columns
from airflow_spark_triton.cluster_spec import GpuClusterSpec
from airflow_spark_triton.errors import ClusterError
from airflow_spark_triton.hooks.local_spark import LocalSparkHook
from airflow_spark_triton.runs import processes as procs
from airflow_spark_triton.runs.hosts import elsewhere_message, foreign_host, this_host
from airflow_spark_triton.runs.processes import ProcessRecord
from airflow_spark_triton.runs.records import JsonRecord, now_iso
from airflow_spark_triton.runs.supervised import STOP_GRACE_S, process_record
from spark_jobs.contract import JOB_SCRIPT, REPORT_FILE, InferenceJobConfig
from spark_jobs.json_files import read_json
from spark_jobs.models.huggingface import local_reader

log = logging.getLogger(__name__)

CLUSTER_ID_PATTERN = r"local-[0-9a-f]{12}"
_CLUSTER_ID = re.compile(rf"^{CLUSTER_ID_PATTERN}$")


class LocalSparkBackend(SupervisedRunsBackend):
    """:class:`~airflow_spark_triton.backends.base.GpuSparkBackend` on a local Spark standalone cluster.

    :param spark_triton_conn_id: optional connection of type ``spark_triton_local``; its extras
        may set ``home``, ``python`` and ``worker_memory``. A missing connection is fine: this is
        the embedded default backend. ``None`` skips the lookup.
    :param home: state directory; overrides the connection, ``$AIRFLOW_SPARK_TRITON_HOME`` and
        ``~/.airflow_spark_triton``.
    """

    conn_name_attr = LocalSparkHook.conn_name_attr  # where the connection id is, as on Airflow hooks
    owners_subdir = "clusters"
    owner_pattern = CLUSTER_ID_PATTERN
    finished_state = ClusterState.DELETED

    def __init__(
        self, spark_triton_conn_id: str | None = LocalSparkHook.default_conn_name, home: str | None = None
    ) -> None:
        self.spark_triton_conn_id = spark_triton_conn_id
        super().__init__(LocalSparkHook(spark_triton_conn_id), home)

    # -- settings and places ------------------------------------------------------------------

    @functools.cached_property
    def python(self) -> str:
        """Interpreter of drivers and executors: needs pyspark, pytriton, deltalake and spark_jobs."""
        return self.hook.python

    clusters_dir = SupervisedRunsBackend.owners_dir

    def cluster_dir(self, cluster_id: str) -> Path:
        if not _CLUSTER_ID.match(cluster_id):
            raise ClusterError(f"{cluster_id!r} is not a local cluster id (local-<12 hex>)")
        return self.clusters_dir / cluster_id

    def state_dir_for_servers(self, cluster_id: str) -> Path:
        """Where the job records this cluster's Triton servers, so delete can stop them by pid."""
        return commands.servers_dir(self.cluster_dir(cluster_id))

    # -- cluster records ----------------------------------------------------------------------

    def _record(self, cluster_id: str) -> JsonRecord:
        return cluster_record(self.cluster_dir(cluster_id))

    def get_cluster(self, cluster_id: str) -> dict[str, Any] | None:
        """The cluster's record (``cluster.json``), or None for an unknown id."""
        return self._record(cluster_id).read()

    def _update_cluster(self, _cluster_id: str, /, **changes: Any) -> dict[str, Any]:
        return self._record(_cluster_id).update(**changes)

    def _update_cluster_if(
        self, cluster_id: str, decide: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> dict[str, Any] | None:
        """Compare-and-set under the record's lock (shared with the reaper): ``decide`` sees the
        current record and returns the changes to write, or None. State changes are guarded."""
        return self._record(cluster_id).update_if(decide)

    def _iter_clusters(self) -> Iterator[dict[str, Any]]:
        """Newest first, so a retried create reuses the cluster it made last."""
        records = []
        for path in self.clusters_dir.glob(f"local-*/{CLUSTER_FILE}"):
            record = read_json(path)
            if record and "cluster_id" in record:
                records.append(record)
        yield from sorted(records, key=lambda r: r.get("created_at", ""), reverse=True)

    # -- create -------------------------------------------------------------------------------

    def create_cluster(self, spec: GpuClusterSpec, tags: dict[str, str]) -> str:
        """Start a master and ``spec.num_workers`` workers; returns once they are launched.

        Workers register asynchronously: :meth:`wait_for_cluster` waits for that. If anything
        fails here, everything this call started is stopped before the ClusterError propagates.
        """
        if self.hook.worker_memory:
            spec = GpuClusterSpec.from_dict({**spec.to_dict(), "worker_memory": self.hook.worker_memory})
        memory_mb(spec.worker_memory)  # fail before starting anything
        # Secret values are sealed in the record; the processes get them opened, in their environment.
        recorded_spec = {**spec.to_dict(), "spark_env_vars": secret_env.seal(spec.spark_env_vars, "local")}
        # The served model's requirements, checked on each node by the init script before its worker.
        requirements = commands.model_requirements(spec.model, self.python) if spec.model else []
        cluster_id = f"local-{secrets.token_hex(6)}"
        cdir = self.cluster_dir(cluster_id)
        for sub in ("logs", "work", "local", "triton", "runs"):
            (cdir / sub).mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        self._update_cluster(
            cluster_id,
            cluster_id=cluster_id,
            state=ClusterState.PENDING.value,
            tags={str(k): str(v) for k, v in tags.items()},
            spec=recorded_spec,
            model_requirements=requirements,
            created_at=now_iso(),
            home=str(self.home),
            # Its pids are this host's: another host never judges or signals them (runs.hosts).
            host=this_host(),
            python=self.python,
            spark_home=str(commands.spark_home()),
            spark_version=commands.spark_version(),
            workers=[],
            timings_s={},
            created_epoch=time.time(),
            # Watched by the reaper while PENDING: if one is killed, nothing else would delete it.
            owners=[owner.to_dict() for owner in owner_records()],
        )
        log.info("Creating local Spark cluster %s in %s", cluster_id, cdir)
        processes = daemons.ClusterDaemons(cluster_id, cdir)
        try:
            processes.start_reaper()  # before any JVM: from here on the cluster cannot leak
            self._update_cluster(cluster_id, python_libdir=commands.python_libdir(self.python))
            processes.start(spec)
        except BaseException as exc:
            self._abort_create(cluster_id, exc)
            if isinstance(exc, ClusterError) or not isinstance(exc, Exception):
                raise
            raise ClusterError(
                f"could not create local cluster {cluster_id}: {type(exc).__name__}: {exc}"
            ) from exc
        record_timing(self._record(cluster_id), "launch", started)
        return cluster_id

    def _abort_create(self, cluster_id: str, exc: BaseException) -> None:
        """A create that fails cleans up after itself: no half-made cluster outlives the task."""
        cluster = self.get_cluster(cluster_id) or {}
        records = [record for _, record in daemons.cluster_processes(cluster)]
        log.error("Creating cluster %s failed (%s); stopping %d process(es)", cluster_id, exc, len(records))
        procs.stop_groups(records, grace_s=STOP_GRACE_S)
        if self._terminate(cluster_id, str(exc)):
            daemons.stop_reaper(cluster)  # nothing of the cluster runs any more
        else:
            log.info("Cluster %s is being deleted by another process, which finishes it", cluster_id)

    # -- wait / find --------------------------------------------------------------------------

    def wait_for_cluster(self, cluster_id: str, timeout_s: float) -> None:
        """Block until every worker registered with the master; fail fast if a JVM died.

        The cluster becomes RUNNING only from PENDING (a guarded transition: a cluster a teardown or
        the reaper took never comes back) and only while every owner it recorded at create lives;
        from then on the DAG run's teardown owns it and the reaper no longer watches the owners.
        """
        cluster = self._require_cluster(cluster_id)
        state = ClusterState(cluster["state"])
        if state not in LIVE_STATES:
            raise ClusterError(
                f"cluster {cluster_id} is {state.value}: {cluster.get('error') or 'not usable'}"
            )
        expected = int(cluster["spec"]["num_workers"])
        webui_port = int(cluster["master"]["webui_port"])
        seen: dict[str, Any] = {}
        started = time.monotonic()

        def ready() -> bool:
            self._raise_if_not_live(cluster_id)
            daemons.raise_if_dead(cluster_id, cluster)
            info = daemons.master_json(webui_port)
            if info is None:
                return False
            seen.update(info)
            return info.get("status") == "ALIVE" and int(info.get("aliveworkers", 0)) == expected

        try:
            ok = procs.wait_until(ready, timeout_s, interval_s=0.5)
        except ClusterError as exc:
            self._terminate(cluster_id, str(exc))
            raise
        if not ok:
            error = (
                f"cluster {cluster_id} not ready after {timeout_s:.0f}s: master status "
                f"{seen.get('status', 'unreachable')}, {seen.get('aliveworkers', 0)}/{expected} workers alive"
                f"\n{daemons.logs_summary(cluster)}"
            )
            self._terminate(cluster_id, error)
            raise ClusterError(error)
        self._mark_running(cluster_id, round(time.monotonic() - started, 3))
        log.info("Cluster %s is running: %s, %d workers", cluster_id, cluster["master"]["url"], expected)
        reaper = process_record(cluster.get("reaper"))
        if reaper is not None and not procs.is_alive(reaper):
            log.warning(
                "The reaper of %s (pid %s) is not running: nothing deletes the cluster if its "
                "teardown never runs; see %s", cluster_id, reaper.pid, cluster["reaper"].get("log"),
            )  # fmt: skip

    def _mark_running(self, cluster_id: str, ready_wait_s: float) -> None:
        """PENDING → RUNNING under the lock the reaper claims with: either the reaper saw a dead
        owner first (and this fails), or the cluster is handed over to the teardown first. Any other
        state (DELETING, DELETED, TERMINATED) is refused: the record's transitions allow RUNNING
        only from PENDING."""
        refused: list[str] = []

        def decide(record: dict[str, Any]) -> dict[str, Any] | None:
            state = record.get("state")
            timings = {**record.get("timings_s", {}), "ready_wait": ready_wait_s}
            if state == ClusterState.RUNNING:  # waited for again, e.g. by a retried create task
                return {"timings_s": timings}
            if state != ClusterState.PENDING:
                refused.append(f"it became {state} ({record.get('deleted_by') or record.get('error')})")
                return None
            gone = gone_owners(record)
            if gone:
                refused.append(f"its owner pid {gone[0]} is gone: its reaper deletes it")
                return None
            return {
                "state": ClusterState.RUNNING.value,
                "running_epoch": time.time(),
                "timings_s": timings,
                "owners": [],  # handed over: the DAG run's teardown (or idleness) ends it now
                "created_by": record.get("owners", []),
            }

        self._update_cluster_if(cluster_id, decide)
        if refused:
            raise ClusterError(f"cluster {cluster_id} cannot become RUNNING: {refused[0]}")

    def _terminate(self, cluster_id: str, error: str) -> bool:
        """Mark a live cluster unusable; a cluster a deleter already took keeps its state (and
        gets the error). Returns whether it became TERMINATED."""
        error = error[:4000]
        if self._record(cluster_id).transition(
            ClusterState.TERMINATED, allowed_from=LIVE_STATES, error=error
        ):
            return True
        self._update_cluster(cluster_id, error=error)
        return False

    def _raise_if_not_live(self, cluster_id: str) -> None:
        """A deleter (the reaper, a teardown) may take the cluster while it is waited for."""
        cluster = self._require_cluster(cluster_id)
        if cluster.get("state") not in LIVE_STATES:
            reason = cluster.get("deleted_by") or cluster.get("error") or "not usable"
            raise ClusterError(f"cluster {cluster_id} became {cluster.get('state')} while waiting: {reason}")

    def find_cluster(self, tags: dict[str, str]) -> str | None:
        wanted = {str(k): str(v) for k, v in tags.items()}
        for cluster in self._iter_clusters():
            if cluster.get("state") not in LIVE_STATES or foreign_host(cluster):
                continue  # another host's cluster: unusable from here, a retry here makes its own
            if any(cluster.get("tags", {}).get(k) != v for k, v in wanted.items()):
                continue
            if cluster.get("state") == ClusterState.PENDING and gone_owners(cluster):
                continue  # its creating task was killed: its reaper deletes it, a retry makes a new one
            if procs.is_alive(process_record(cluster.get("master"))):
                return cluster["cluster_id"]
        return None

    def _require_cluster(self, cluster_id: str) -> dict[str, Any]:
        cluster = self.get_cluster(cluster_id)
        if cluster is None:
            raise ClusterError(f"unknown local cluster {cluster_id} (home {self.home})")
        self._require_this_host(cluster_id, cluster)
        return cluster

    @staticmethod
    def _require_this_host(cluster_id: str, cluster: dict[str, Any]) -> None:
        """Every pid in the record is its host's: another host fails here instead of judging them."""
        host = foreign_host(cluster)
        if host:
            raise ClusterError(elsewhere_message(f"cluster {cluster_id}", host))

    def _require_usable(self, cluster_id: str) -> None:
        cluster = self._require_cluster(cluster_id)
        state = cluster.get("state")
        if state not in LIVE_STATES:
            raise ClusterError(f"cannot submit to cluster {cluster_id}: it is {state}")
        if not procs.is_alive(process_record(cluster.get("master"))):
            raise ClusterError(f"cannot submit to cluster {cluster_id}: its Spark master is not running")

    # -- delete -------------------------------------------------------------------------------

    def delete_cluster(self, cluster_id: str, *, reason: str | None = None) -> None:
        """Stop runs, Triton servers, workers and master, in that order; then verify and mark DELETED.

        Every recorded driver whose process group still has members is stopped too, whatever its
        run's state: a supervisor killed with -9 leaves its spark-submit running. Last, the
        cluster's reaper is stopped (unless it is the caller).

        Idempotent: an unknown or deleted cluster is a no-op, and a teardown that was killed half
        way can simply run again (DELETING and TERMINATED clusters are stopped the same way; if
        nobody does, the reaper finishes it).

        :param reason: recorded as ``deleted_by`` (default: this process); the reaper says why.
        """
        cluster = self.get_cluster(cluster_id)
        if cluster is None:
            log.info(
                "Cluster %s is unknown in %s on host %s: nothing to delete here (a cluster another host "
                "created, in a state directory of its own, is that host's to delete)",
                cluster_id, self.home, this_host(),
            )  # fmt: skip
            return
        if cluster.get("state") == ClusterState.DELETED:
            log.info("Cluster %s was already deleted", cluster_id)
            return
        self._require_this_host(cluster_id, cluster)  # before DELETING: nothing is marked, nothing leaks
        started = time.monotonic()
        me = ProcessRecord.of(os.getpid())

        def deleting(record: dict[str, Any]) -> dict[str, Any] | None:
            if record.get("state") == ClusterState.DELETED:  # a concurrent deleter just finished
                return None
            by = reason or f"delete_cluster in pid {me.pid}"
            if record.get("state") == ClusterState.DELETING and record.get("deleted_by") and not reason:
                by = record["deleted_by"]  # taking over an unfinished delete: its reason stands
            # deleting_by: the reaper finishes the delete if this process dies before it does.
            return {"state": ClusterState.DELETING.value, "deleted_by": by, "deleting_by": me.to_dict()}

        if self._update_cluster_if(cluster_id, deleting) is None:
            log.info("Cluster %s was just deleted by another process", cluster_id)
            return
        for run_id in self.runs.active(cluster_id):
            log.info("Canceling run %s of cluster %s", run_id, cluster_id)
            try:
                self.runs.cancel(run_id)
            except Exception:  # the driver dies with the workers anyway; keep tearing down
                log.exception("Could not cancel run %s; continuing the teardown", run_id)
        drivers_left = self.runs.stop_leftover_drivers(cluster_id)
        servers = self._triton_servers(cluster_id)
        if servers:
            log.info("Stopping %d Triton server(s) of %s", len(servers), cluster_id)
            procs.stop_groups(servers, grace_s=STOP_GRACE_S)
        cluster = self._require_cluster(cluster_id)
        daemons.stop_daemons(list(cluster.get("workers", [])))
        daemons.stop_daemons([cluster.get("master")])

        left = [
            f"{name} pid {r.pid}" for name, r in daemons.cluster_processes(cluster) if procs.group_members(r)
        ]
        left += [f"Triton server pid {r.pid}" for r in servers if procs.group_members(r)]
        left += drivers_left
        if left:
            raise ClusterError(f"could not stop every process of cluster {cluster_id}: {', '.join(left)}")
        self._remove_scratch(cluster_id)
        timings = {**cluster.get("timings_s", {}), "delete": round(time.monotonic() - started, 3)}
        cluster = self._update_cluster(
            cluster_id, state=ClusterState.DELETED.value, deleted_at=now_iso(), timings_s=timings
        )
        daemons.stop_reaper(cluster)
        log.info(
            "Cluster %s deleted in %.1fs (%s); logs kept in %s",
            cluster_id,
            timings["delete"],
            cluster.get("deleted_by"),
            self.cluster_dir(cluster_id),
        )

    def _remove_scratch(self, cluster_id: str) -> None:
        """Shuffle and spill files can be large; logs, records and reports are kept. Every JVM of
        the cluster has exited: the class-data archives they recorded are settled first."""
        cdir = self.cluster_dir(cluster_id)
        spark_home = self._spark_home(cluster_id)
        for run_dir in (cdir / "runs").glob("*"):
            if jvm_archive.recorded_files(run_dir):
                jvm_archive.settle(spark_home, run_dir)
        if jvm_archive.recorded_files(commands.scratch_dir(cdir), jvm_archive.DAEMON_ROLES):
            jvm_archive.settle(spark_home, commands.scratch_dir(cdir), jvm_archive.DAEMON_ROLES)
        for scratch in [commands.scratch_dir(cdir), *(cdir / "runs").glob("*/local")]:
            shutil.rmtree(scratch, ignore_errors=True)

    def _triton_servers(self, cluster_id: str) -> list[ProcessRecord]:
        """Servers the job recorded. A server still loading its model has only a ``.pid`` file; it
        counts if its command line names this cluster's state dir (a pid-reuse stranger won't)."""
        directory = self.state_dir_for_servers(cluster_id)
        records: dict[int, ProcessRecord] = {}
        for path in sorted(directory.glob("*.json")):
            data = read_json(path)
            with contextlib.suppress(KeyError, TypeError, ValueError):  # a half-written or foreign file
                if data and data.get("pid") and data.get("create_time") is not None:
                    record = ProcessRecord.from_dict(data)
                    records[record.pid] = record
        for path in sorted(directory.glob("*.pid")):
            with contextlib.suppress(ValueError, OSError, psutil.Error):  # gone, or not a pid: not ours
                pid = int(path.read_text().strip())
                if pid not in records and str(directory) in " ".join(psutil.Process(pid).cmdline()):
                    records[pid] = ProcessRecord.of(pid)
        return list(records.values())

    # -- runs ---------------------------------------------------------------------------------

    def get_run_status(self, run_id: str) -> RunStatus:
        """The supervised run's status; once it is over, the class-data archives its driver and
        an executor recorded, if any and whole, are published to the cache, and removed
        (:mod:`.jvm_archive`)."""
        status = super().get_run_status(run_id)
        run_dir = self.run_dir(run_id)
        if status.state.is_terminal and jvm_archive.recorded_files(run_dir):
            jvm_archive.settle(self._spark_home(self.runs.owner_of(run_id)), run_dir)
        return status

    def _spark_home(self, cluster_id: str) -> str:
        return (self.get_cluster(cluster_id) or {}).get("spark_home") or str(commands.spark_home())

    def submit_job(
        self,
        cluster_id: str,
        job: InferenceJobConfig,
        idempotency_token: str,
        *,
        time_limit_s: float | None = None,  # no platform-side limit here: see the contract
    ) -> str:
        cluster = self._require_cluster(cluster_id)
        num_workers = int(cluster["spec"]["num_workers"])

        def job_args(run_id: str, run_dir: Path) -> list[str]:
            return job.for_run(
                run_id=run_id, report_path=str(run_dir / REPORT_FILE), workers=num_workers
            ).to_args()

        return self._submit_script(cluster_id, JOB_SCRIPT, job_args, idempotency_token)

    def _submit_script(
        self,
        cluster_id: str,
        script: str | Path,
        args: Sequence[str] | Callable[[str, Path], Sequence[str]],
        idempotency_token: str,
        extra_conf: dict[str, str] | None = None,
    ) -> str:
        """spark-submit ``script`` under a detached supervisor. ``args`` may depend on the run id/dir.

        Public ``submit_job`` uses this with the batch-inference job; tests use tiny scripts.
        """
        self._require_cluster(cluster_id)

        def build(run_id: str, run_dir: Path) -> tuple[list[str], dict[str, str], str]:
            script_args = list(args(run_id, run_dir) if callable(args) else args)
            cluster = self._require_cluster(cluster_id)
            log.info("No GPUs locally: submitting without GPU resource confs (stage-level CPU only)")
            argv, env = commands.spark_submit_command(
                cluster, self.cluster_dir(cluster_id), run_id, run_dir, Path(script), script_args, extra_conf
            )
            return argv, env, str(script)

        cluster = self._require_cluster(cluster_id)
        _, secret = secret_env.plain_and_secret(secret_env.unseal(cluster["spec"].get("spark_env_vars")))
        return self.runs.start(
            cluster_id,
            idempotency_token,
            build,
            lambda: self._require_usable(cluster_id),
            secret_names=secret,
        )

    # -- pre-flight ---------------------------------------------------------------------------

    def describe_table(self, table: str) -> dict[str, Any] | None:
        """delta-rs reads the schema: the nodes are this machine, so a missing path is a missing table."""
        return delta_rs_columns(table)

    def node_file_reader(self, directory: str) -> Callable[[str], bytes | None] | None:
        return local_reader(directory)
