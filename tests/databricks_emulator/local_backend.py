"""Real execution behind the emulator: each Databricks cluster is a local Spark cluster, each run a real job.

Uses ``LocalSparkBackend`` (the project's local backend) through the ``GpuSparkBackend`` protocol only,
so the emulator checks the Databricks hook end to end without knowing how local Spark is run.
Work happens in threads so HTTP handlers answer at once, as Databricks' asynchronous API does.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_spark_triton.backends.base import RunLifecycle
from airflow_spark_triton.backends.databricks.cluster_spec import STATE_DIR_ENV, WHEEL_ENV
from airflow_spark_triton.cluster_spec import GpuClusterSpec
from spark_jobs.contract import ERROR_PREFIX, InferenceJobConfig

if TYPE_CHECKING:
    from tests.databricks_emulator.state import Cluster, Run, Workspace


def local_spec(body: dict[str, Any]) -> GpuClusterSpec:
    """The local twin of a ``clusters/create`` body: same workers, cores and conf, no GPUs."""
    conf = dict(body.get("spark_conf") or {})
    cores = int(conf.pop("spark.executor.cores", "1"))
    gpus = float(conf.pop("spark.executor.resource.gpu.amount", "1"))
    amount = conf.pop("spark.task.resource.gpu.amount", None)
    env = {k: v for k, v in (body.get("spark_env_vars") or {}).items() if k not in (WHEEL_ENV, STATE_DIR_ENV)}
    return GpuClusterSpec(
        num_workers=body.get("num_workers", 1),
        executor_cores=cores,
        tasks_per_gpu=round(gpus / float(amount)) if amount else None,  # tasks per executor, no GPUs here
        spark_conf=conf,
        spark_env_vars=env,
        autotermination_minutes=body.get("autotermination_minutes") or 60,
        cluster_name=body.get("cluster_name"),
    )


class LocalBackend:
    def __init__(self, home: Path, ready_timeout_s: float = 300.0, poll_s: float = 0.5) -> None:
        from airflow_spark_triton.backends.local.backend import LocalSparkBackend

        self.hook = LocalSparkBackend(spark_triton_conn_id=None, home=str(home))
        self.ready_timeout_s = ready_timeout_s
        self.poll_s = poll_s
        self.cluster_threads: dict[str, threading.Thread] = {}
        self.run_threads: list[threading.Thread] = []
        self.local_clusters: set[str] = set()

    def _spawn(self, target: Any, name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        return thread

    # -- clusters --------------------------------------------------------------------------------

    def start_cluster(self, ws: Workspace, cluster: Cluster) -> None:
        def work() -> None:
            try:
                local_id = self.hook.create_cluster(
                    local_spec(cluster.spec), cluster.spec.get("custom_tags", {})
                )
                with ws.lock:
                    cluster.local_id = local_id
                    self.local_clusters.add(local_id)
                self.hook.wait_for_cluster(local_id, self.ready_timeout_s)
            except Exception as exc:
                with ws.lock:
                    if cluster.state == "PENDING":
                        cluster.terminate(
                            "SPARK_STARTUP_FAILURE", "SERVICE_FAULT", f"Spark startup failure: {exc}",
                            databricks_error_message=str(exc),
                        )  # fmt: skip
                return
            with ws.lock:
                if cluster.state == "PENDING":
                    ws.mark_running(cluster)

        self.cluster_threads[cluster.cluster_id] = self._spawn(work, f"emulator-cluster-{cluster.cluster_id}")

    def delete_cluster(self, cluster: Cluster, active: list[Run]) -> None:
        starting = self.cluster_threads.get(cluster.cluster_id)
        if starting is not None:
            starting.join(self.ready_timeout_s)
        for run in active:
            if run.local_id:
                with contextlib.suppress(Exception):
                    self.hook.cancel_run(run.local_id)
        if cluster.local_id:
            self.hook.delete_cluster(cluster.local_id)
            self.local_clusters.discard(cluster.local_id)

    # -- runs ------------------------------------------------------------------------------------

    def _wait_for_cluster(self, ws: Workspace, run: Run) -> str | None:
        while True:
            with ws.lock:
                cluster = ws.clusters.get(run.cluster_id)
                if run.cancel_at is not None:
                    run.user_cancelled = True
                    run.finish("TERMINATED", "CANCELED", "Run cancelled.")
                    return None
                if cluster is None or cluster.state == "TERMINATED":
                    why = "does not exist" if cluster is None else f"is terminated: {cluster.state_message}"
                    run.finish("INTERNAL_ERROR", "FAILED", f"Cluster {run.cluster_id} {why}")
                    return None
                if cluster.state == "RUNNING":
                    return cluster.local_id
            time.sleep(self.poll_s)

    def start_run(self, ws: Workspace, run: Run) -> None:
        def work() -> None:
            local_cluster = self._wait_for_cluster(ws, run)
            if local_cluster is None:
                return
            job = InferenceJobConfig.from_args(run.task["spark_python_task"].get("parameters", []))
            token = run.body.get("idempotency_token") or str(run.run_id)
            try:
                local_id = self.hook.submit_job(local_cluster, job, token)
            except Exception as exc:
                with ws.lock:
                    run.error = f"{type(exc).__name__}: {exc}"
                    run.finish("INTERNAL_ERROR", "FAILED", f"Could not start the run: {exc}")
                return
            with ws.lock:
                run.local_id = local_id
                run.life_cycle_state, run.state_message = "RUNNING", "In run"
            status = self.hook.get_run_status(local_id)
            while not status.state.is_terminal:
                time.sleep(self.poll_s)
                status = self.hook.get_run_status(local_id)
            self._publish_report(ws, job, local_id)
            with ws.lock:
                if status.state is RunLifecycle.SUCCESS:
                    run.finish("TERMINATED", "SUCCESS", "")
                elif status.state is RunLifecycle.CANCELED:
                    run.user_cancelled = True
                    run.finish("TERMINATED", "CANCELED", "Run cancelled.")
                else:
                    line = (
                        status.message
                        if status.message.startswith(ERROR_PREFIX)
                        else f"{ERROR_PREFIX} {status.message}"
                    )
                    run.logs, run.error = line + "\n", status.message
                    run.finish("TERMINATED", "FAILED", "Workload failed, see run output for details")

        self.run_threads.append(self._spawn(work, f"emulator-run-{run.run_id}"))

    def _publish_report(self, ws: Workspace, job: InferenceJobConfig, local_id: str) -> None:
        """The local backend keeps the report in its run directory; on Databricks the job writes it
        to ``job.report_path`` on the volume, so put it there for the Files API to serve."""
        if not job.report_path:
            return
        with contextlib.suppress(Exception):
            report = self.hook.get_run_report(local_id)
            ws.files.write(job.report_path, report.to_json().encode(), overwrite=True)

    def cancel_run(self, ws: Workspace, run: Run) -> None:
        def work() -> None:
            deadline = time.monotonic() + self.ready_timeout_s
            while time.monotonic() < deadline:
                with ws.lock:
                    local_id, done = run.local_id, run.is_terminal
                if done:
                    return
                if local_id:
                    self.hook.cancel_run(local_id)
                    return
                time.sleep(self.poll_s)

        self.run_threads.append(self._spawn(work, f"emulator-cancel-{run.run_id}"))

    def close(self, ws: Workspace) -> None:
        """Cancel what still runs and delete every local cluster this emulator started."""
        with ws.lock:
            runs = [r for r in ws.runs.values() if not r.is_terminal]
        for thread in self.cluster_threads.values():
            thread.join(self.ready_timeout_s)
        for run in runs:
            if run.local_id:
                with contextlib.suppress(Exception):
                    self.hook.cancel_run(run.local_id)
        for thread in self.run_threads:
            thread.join(30)
        for local_id in list(self.local_clusters):
            with contextlib.suppress(Exception):
                self.hook.delete_cluster(local_id)
            self.local_clusters.discard(local_id)
