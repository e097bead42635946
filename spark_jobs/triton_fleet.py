"""One Triton server per node for the lifetime of one job, as the driver sees it: start them all, stop them all.

The job launches the servers first (:func:`launch_servers`, which does not wait) and waits for
them (:func:`start_servers`) once the input is read and validated, so model loading overlaps the
read. Launch and start run as barrier stages with one task per executor (a task resource profile asks for all of
an executor's cores), so every node gets its server or the stage fails as a whole. What each of those
tasks does on its node is :mod:`spark_jobs.triton_node`'s.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from spark_jobs.triton_node import (
    ServerRequest,
    TritonStartError,
    ensure_local_server,
    launch_local_server,
    stop_local_server,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from spark_jobs.contract import InferenceJobConfig

log = logging.getLogger(__name__)


def _executor_count(spark: SparkSession) -> int:
    if spark.sparkContext.master.startswith("local["):
        return 1  # local mode: the driver is the one executor (and the one node)
    infos = spark.sparkContext._jsc.sc().statusTracker().getExecutorInfos()
    return max(len(infos) - 1, 0)  # the driver is listed too


def wait_for_executors(spark: SparkSession, expected: int | None, timeout_s: float) -> int:
    """Servers are counted per executor, so wait until the cluster has registered the ones we expect."""
    deadline = time.monotonic() + timeout_s
    wanted = expected or 1
    count = _executor_count(spark)
    while count < wanted and time.monotonic() < deadline:
        time.sleep(0.5)
        count = _executor_count(spark)
    if count < wanted:
        raise TritonStartError(
            f"only {count} of {wanted} expected executors registered after {timeout_s:.0f}s"
        )
    return count


def executor_gpus(spark: SparkSession) -> int:
    """GPUs per executor as the cluster was given them (``spark.executor.resource.gpu.amount``,
    which the cluster spec derives); 0 on a cluster without GPU scheduling."""
    return int(float(spark.sparkContext.getConf().get("spark.executor.resource.gpu.amount", "0")))


def start_task_profile(cores: int, gpus: int):
    """The resource profile of a task that takes a whole executor: all its cores, and all its GPUs
    when it has several, so the task's ``TaskContext`` names every GPU the node's server must load
    a model copy on. ``None`` when a default task already takes the executor."""
    if cores <= 1 and gpus <= 1:
        return None
    from pyspark.resource import ResourceProfileBuilder, TaskResourceRequests

    requests = TaskResourceRequests().cpus(cores)
    if gpus > 1:
        requests = requests.resource("gpu", gpus)
    return ResourceProfileBuilder().require(requests).build


def _one_task_per_executor(spark: SparkSession, rdd):
    profile = start_task_profile(int(spark.conf.get("spark.executor.cores", "1")), executor_gpus(spark))
    return rdd if profile is None else rdd.withResources(profile)


def _driver_endpoint(spark: SparkSession) -> str | None:
    conf = spark.sparkContext.getConf()
    host, port = conf.get("spark.driver.host"), conf.get("spark.driver.port")
    return f"{host}:{port}" if host and port else None


def _server_args(job: InferenceJobConfig) -> tuple[str, ...]:
    """The job's dynamic-batcher and instance settings as ``spark_jobs.triton_server`` flags."""
    sizes = ",".join(str(size) for size in job.server_preferred_batch_sizes)
    return (
        *(
            ("--max-queue-delay-us", str(job.server_max_queue_delay_us))
            if job.server_max_queue_delay_us is not None
            else ()
        ),
        *("--preferred-batch-sizes", sizes),
        *(("--instances", str(job.server_model_instances)) if job.server_model_instances else ()),
    )


def server_request(spark: SparkSession, job: InferenceJobConfig) -> ServerRequest:
    return ServerRequest(
        run_id=job.run_id,
        model=job.model,
        model_options_json=json.dumps(job.model_options),
        ready_timeout_s=job.server_ready_timeout_s,
        driver=_driver_endpoint(spark),
        server_args=_server_args(job),
        gpus=executor_gpus(spark),
        client_protocol=job.client_protocol,
    )


def launch_servers(spark: SparkSession, job: InferenceJobConfig) -> list[dict[str, Any]]:
    """Launch every node's server without waiting for it (:func:`launch_local_server`); the job's
    later :func:`start_servers` waits for them. A barrier stage like the start: one task per
    executor, before any other stage of the job holds a slot."""
    executors = wait_for_executors(spark, job.expected_executors, job.server_ready_timeout_s)
    request = server_request(spark, job)

    def launch(_: Any):
        yield launch_local_server(request)

    rdd = spark.sparkContext.parallelize(range(executors), executors)
    return _one_task_per_executor(spark, rdd).barrier().mapPartitions(launch).collect()


def start_servers(spark: SparkSession, job: InferenceJobConfig) -> list[dict[str, Any]]:
    """Every node's ready server: the one launched earlier, or one started now."""
    executors = wait_for_executors(spark, job.expected_executors, job.server_ready_timeout_s)
    request = server_request(spark, job)

    def start(_: Any):
        yield ensure_local_server(request)

    rdd = spark.sparkContext.parallelize(range(executors), executors)
    results = _one_task_per_executor(spark, rdd).barrier().mapPartitions(start).collect()
    servers: dict[tuple[str, int], dict[str, Any]] = {}
    for result in results:  # executors sharing a host report the same server; keep the starter's view
        key = (result["host"], result["pid"])
        if key not in servers or result.get("started_here"):
            servers[key] = result
    return sorted(servers.values(), key=lambda r: r["host"])


def stop_servers(spark: SparkSession, job: InferenceJobConfig) -> list[dict[str, Any]]:
    """Ask every node to stop its server; the driver's node too, when it shares the state dir.

    A plain (non-barrier) stage so that a lost executor cannot block shutdown; servers on nodes it
    misses stop themselves when the driver goes away, and cluster teardown kills what remains.
    """
    run_id = job.run_id

    def stop(_: Any):
        yield stop_local_server(run_id)

    results: list[dict[str, Any]] = []
    try:
        executors = max(_executor_count(spark), 1)
        results = (
            spark.sparkContext.parallelize(range(executors * 2), executors * 2).mapPartitions(stop).collect()
        )
    except Exception as exc:  # the stage can fail when the cluster is already broken
        log.warning("stop stage failed (%s); falling back to the driver node and server watchdogs", exc)
    results.append(stop_local_server(run_id))
    return [r for r in results if r.get("stopped") or r.get("running")]
