"""Reaper of one local cluster: the cluster deletes itself when its owner is gone or it idles.

Databricks deletes a cluster on its own after ``autotermination_minutes``; a local cluster needs the
same net. An Airflow task killed with -9 or by the OOM killer runs neither ``on_kill`` nor
``finally``, and Airflow skips a teardown whose setup failed, so nothing in Airflow would ever
stop a cluster whose create task died. ``LocalSparkBackend.create_cluster`` therefore starts this
small detached process (recorded as ``reaper`` in ``cluster.json``) before any JVM. It polls
``cluster.json`` every :data:`POLL_S` seconds and deletes the cluster, with the teardown's own
code path (``LocalSparkBackend.delete_cluster``), when:

* **owner gone**: while the cluster is PENDING (or TERMINATED before it ever ran), a recorded owner
  process is gone. The owners are the process that creates the cluster and, inside an Airflow
  task, its parent: the Task SDK's supervisor forks the task process into a process group of its
  own and sets no parent-death signal, so a kill -9 of the supervisor leaves the task process
  running, orphaned, its result unable to reach Airflow. ``wait_for_cluster`` marks the cluster
  RUNNING only while every owner lives, under the same lock as the reaper's claim, and hands it
  over to the DAG run's teardown: the owner watch ends. A retry of the killed create task does
  not reuse a cluster with a dead owner (``find_cluster`` skips it): it creates a new one.
* **idle**: RUNNING (or TERMINATED) with no live run (an unfinished run whose supervisor runs) for
  ``autotermination_minutes``, counted from the later of RUNNING and the last run's submit or end.
* **master gone**: the master JVM exited while RUNNING; the cluster is unusable.
* **delete left unfinished**: DELETING, and the process that was deleting it is gone.

It exits once the cluster is DELETED, by itself or by anyone else; ``delete_cluster`` also stops it
by its record. Every process is judged by pid *and* create time, never by pid alone.

While it watches it imports no Airflow (about 20 MB resident); only a reap imports the backend: about
3 s on an idle machine, up to about 12 s on a loaded one. From the fault to a deleted cluster: one
poll (at most :data:`POLL_S`), that import, and the delete (1-3 s: the JVMs exit on SIGTERM);
measured 13-16 s on two heavily loaded cores. The tests allow 30 s.

Usage: ``python -m airflow_spark_triton.backends.local.reaper --cluster-dir DIR [--idle-seconds S]``.
``--idle-seconds`` (or ``$SPARK_TRITON_REAPER_IDLE_S``) replaces ``autotermination_minutes``: for
tests, which cannot wait the Databricks minimum of ten minutes.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airflow_spark_triton.backends.local.cluster_state import ClusterState, cluster_record, gone_owners
from airflow_spark_triton.runs import processes as procs
from airflow_spark_triton.runs.processes import ProcessRecord
from airflow_spark_triton.runs.supervised import RunActivity, process_record, run_activity

log = logging.getLogger("airflow_spark_triton.backends.local.reaper")

IDLE_OVERRIDE_ENV = "SPARK_TRITON_REAPER_IDLE_S"
POLL_S = 2.0
RETRY_S = 30.0  # between attempts when a reap's delete failed
DEFAULT_AUTOTERMINATION_MINUTES = 60
PENDING, RUNNING, DELETING, TERMINATED, DELETED = ClusterState  # in reap_reason's rules, in this order


def idle_limit_s(cluster: dict[str, Any], override_s: float | None = None) -> float:
    if override_s is not None:
        return float(override_s)
    minutes = (cluster.get("spec") or {}).get("autotermination_minutes") or DEFAULT_AUTOTERMINATION_MINUTES
    return float(minutes) * 60.0


def reap_reason(
    cluster: dict[str, Any],
    runs: RunActivity,
    now: float,
    idle_s: float,
    alive: Callable[[ProcessRecord], bool] = procs.is_alive,
) -> str | None:
    """Why the cluster must be deleted now, or None. Pure given ``alive``: unit-testable."""
    state = cluster.get("state")
    if state in (PENDING, TERMINATED):
        gone = gone_owners(cluster, alive)
        if gone:
            return f"reaper: owner pid {gone[0]} gone while {state}"
    if state == DELETING:
        deleter = process_record(cluster.get("deleting_by"))
        if deleter is not None and not alive(deleter):
            return f"reaper: the delete by pid {deleter.pid} was left unfinished"
        return None
    if state == RUNNING:
        master = process_record(cluster.get("master"))
        if master is not None and not alive(master):
            return f"reaper: master pid {master.pid} exited while RUNNING"
    if state in (RUNNING, TERMINATED) and not runs.live:
        started = float(cluster.get("running_epoch") or cluster.get("created_epoch") or now)
        since = max(started, runs.last_epoch or 0.0)
        if now - since >= idle_s:
            minutes = (cluster.get("spec") or {}).get("autotermination_minutes")
            return (
                f"reaper: idle for {now - since:.0f}s with no active run while {state} "
                f"(limit {idle_s:.0f}s, autotermination_minutes={minutes})"
            )
    return None


class Reaper:
    def __init__(self, cluster_dir: Path, idle_override_s: float | None, poll_s: float = POLL_S) -> None:
        self.cluster_dir = cluster_dir
        self.idle_override_s = idle_override_s
        self.poll_s = poll_s
        self.me = ProcessRecord.of(os.getpid())
        self.record = cluster_record(cluster_dir)
        self.claimed: str | None = None  # the reason, once this reaper took the cluster over

    def _reason(self, cluster: dict[str, Any]) -> str | None:
        runs = run_activity(self.cluster_dir)
        return reap_reason(cluster, runs, time.time(), idle_limit_s(cluster, self.idle_override_s))

    def _claim(self) -> str | None:
        """Decide again under the cluster's lock: a create task marking it RUNNING (same lock)
        either wins before the claim or is refused after it."""
        claimed: dict[str, str] = {}

        def decide(cluster: dict[str, Any]) -> dict[str, Any] | None:
            reason = self._reason(cluster) if cluster else None
            if reason is None:
                return None
            claimed["reason"] = reason
            return {"state": DELETING, "deleted_by": reason, "deleting_by": self.me.to_dict()}

        self.record.update_if(decide)
        return claimed.get("reason")

    def _delete(self, cluster: dict[str, Any], reason: str) -> bool:
        """The teardown's own code path. Imported only now: the backend imports Airflow (seconds,
        about 100 MB), which a reaper that mostly sleeps should not carry for hours."""
        try:
            from airflow_spark_triton.backends.local.backend import LocalSparkBackend

            home = cluster.get("home") or str(self.cluster_dir.parents[1])
            # No connection lookup: outside a task it could need Airflow's API or metadata DB, and
            # deleting needs nothing but the records under home.
            backend = LocalSparkBackend(spark_triton_conn_id=None, home=home)
            backend.delete_cluster(cluster["cluster_id"], reason=reason)
        except Exception:
            log.exception("deleting %s failed; retrying in %.0fs", cluster.get("cluster_id"), RETRY_S)
            return False
        return True

    def run(self) -> int:
        log.info("watching %s (pid %s, poll %.1fs)", self.cluster_dir, self.me.pid, self.poll_s)
        last_attempt = 0.0
        while True:
            cluster = self.record.read()
            if cluster is None:
                if not self.cluster_dir.exists():
                    log.info("%s is gone: exiting", self.cluster_dir)
                    return 0
            elif cluster.get("state") == DELETED:
                log.info("cluster is DELETED (%s): exiting", cluster.get("deleted_by") or "by its teardown")
                return 0
            elif self.claimed is None:
                try:
                    self.claimed = self._claim()
                except Exception:  # e.g. a record being rewritten by hand: keep watching
                    log.exception("could not check %s", self.cluster_dir)
                if self.claimed:
                    log.warning("deleting %s: %s", cluster.get("cluster_id"), self.claimed)
            if self.claimed and cluster and time.monotonic() - last_attempt >= RETRY_S:
                last_attempt = time.monotonic()
                if self._delete(cluster, self.claimed):
                    log.info("deleted %s: %s", cluster.get("cluster_id"), self.claimed)
                    return 0
                continue
            time.sleep(self.poll_s)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Delete a local Spark cluster whose owner is gone or idle")
    parser.add_argument("--cluster-dir", required=True)
    override = os.environ.get(IDLE_OVERRIDE_ENV)
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=float(override) if override else None,
        help="replaces the spec's autotermination_minutes (tests only)",
    )
    parser.add_argument("--poll-seconds", type=float, default=POLL_S)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    return Reaper(Path(args.cluster_dir), args.idle_seconds, args.poll_seconds).run()


if __name__ == "__main__":
    sys.exit(main())
