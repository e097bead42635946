"""Paths 2 and 3 as one Spark application each, submitted to the local cluster by :mod:`benchmarks.bench`.

``--config '<json>'`` picks the path:

* ``inprocess_udf``: ``predict_batch_udf`` whose ``make_predict_fn`` loads the model in every Spark
  Python worker (what users do without Triton);
* ``triton_udf``: this project's path, unchanged: ``spark_jobs.triton_fleet.launch_servers`` before
  the read and ``start_servers`` after it (one PyTriton server per node), ``spark_jobs.inference.triton_predict_udf``, ``stop_servers`` in ``finally``;
* ``mlflow_udf``: the peer Databricks documents, ``mlflow.pyfunc.spark_udf`` over the model that
  :mod:`benchmarks.mlflow_model` logged to a local MLflow store (``cfg["mlflow"]``): the model is
  downloaded on the driver, shipped to every executor and loaded in every Python worker.

Both read the same Delta snapshot with the project's ``delta_io`` and cache it first (the read is
timed separately); inference is timed on a ``noop`` sink, so no output write is in the number.
Phases are stamped with wall-clock epochs so the parent can line them up with its memory samples.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any


def inprocess_predict_udf(model_ref: str, options: dict[str, Any], batch_size: int):
    """The usual no-Triton pattern: the model lives in each Python worker (cached across batches)."""
    import numpy as np
    from pyspark.ml.functions import predict_batch_udf

    from spark_jobs.inference import return_type
    from spark_jobs.models.references import resolve_model

    model = resolve_model(model_ref)

    def make_predict_fn():
        infer = model.load(options)  # the same infer function the Triton server runs
        name = model.output.name

        def predict(text: np.ndarray) -> np.ndarray:
            encoded = np.array([t.encode("utf-8") for t in text], dtype=np.object_).reshape(-1, 1)
            out = infer(encoded)[name]
            return np.array(out, dtype=np.object_) if isinstance(out, list) else out  # texts: a list

        return predict

    return predict_batch_udf(make_predict_fn, return_type=return_type(model), batch_size=batch_size)


def mlflow_udf(spark, settings: dict[str, Any]):
    """``mlflow.pyfunc.spark_udf`` as its documentation shows it, over the logged model's URI."""
    import mlflow

    mlflow.set_tracking_uri(settings["tracking_uri"])
    return mlflow.pyfunc.spark_udf(
        spark,
        settings["model_uri"],
        result_type=settings["result_type"],
        params=settings.get("params") or None,
        env_manager="local",  # the cluster's own environment, as the other paths use
    )


def run(spark, cfg: dict[str, Any], result: dict[str, Any]) -> None:
    from pyspark.sql import functions as F

    from spark_jobs.batch_order import length_ordered
    from spark_jobs.contract import InferenceJobConfig
    from spark_jobs.delta_io import delta_io_for
    from spark_jobs.models.references import resolve_model
    from spark_jobs.triton_fleet import wait_for_executors

    stamps = result["stamps"]
    job = InferenceJobConfig(
        input_table=cfg["input_table"],
        output_table=cfg["input_table"] + "_unused_out",
        model=cfg["model"],
        logical_date=cfg["date"],
        model_options=cfg.get("model_options", {}),
        batch_size=int(cfg["batch_size"]),
        expected_executors=int(cfg["executors"]),
        run_id=cfg["run_id"],
        **cfg.get("job_settings", {}),  # Triton batcher / protocol knobs of benchmarks.sweep
    )
    # Both Spark paths wait for their executors to register first (the app's start, not a cost of
    # Triton): apart, so that neither path 2's read nor path 3's server launch carries it.
    started = time.monotonic()
    wait_for_executors(spark, job.expected_executors, job.server_ready_timeout_s)
    result["executors_registered_s"] = round(time.monotonic() - started, 3)
    launch_start = time.monotonic()
    if cfg["path"] == "triton_udf":  # as the job does: the servers load while the input is read
        from spark_jobs.triton_fleet import launch_servers

        launch_servers(spark, job)
    result["servers_launch_s"] = round(time.monotonic() - launch_start, 3)
    io = delta_io_for(spark)
    started = time.monotonic()
    read = io.read_date(cfg["input_table"], "date", cfg["date"], ["id", "text"])
    docs = read.df.repartition(int(cfg["partitions"])).cache()
    result["rows"] = docs.count()
    result["delta_read_s"] = round(time.monotonic() - started, 3)
    first = spark.createDataFrame(docs.orderBy("id").limit(1).collect(), docs.schema)
    # One partition per Python worker (task slot): every worker pays its warm-up before the clock starts.
    slots = max(int(cfg.get("python_workers", 2)), 1)
    warm = spark.createDataFrame(
        docs.orderBy("id").limit(max(2, slots) * int(cfg["batch_size"])).collect(), docs.schema
    ).repartition(max(2, slots))
    check_ids = [int(i) for i in cfg.get("check_ids", [])]

    model = resolve_model(cfg["model"])
    result["model_name"] = model.name
    path_start = time.monotonic()
    stamps["path_start"] = time.time()
    try:
        if cfg["path"] == "triton_udf":
            from spark_jobs.inference import triton_predict_udf
            from spark_jobs.triton_fleet import server_request, start_servers

            servers = start_servers(spark, job)
            result["servers_ready_s"] = round(time.monotonic() - path_start, 3)
            result["servers"] = servers
            stamps["servers_ready"] = time.time()
            predict = triton_predict_udf(
                model, server_request(spark, job), job.batch_size, job.inference_timeout_s
            )
        elif cfg["path"] == "mlflow_udf":
            predict = mlflow_udf(spark, cfg["mlflow"])
        else:
            predict = inprocess_predict_udf(cfg["model"], job.model_options, job.batch_size)

        first.select(predict("text").alias("e")).collect()
        result["time_to_first_row_s"] = round(time.monotonic() - path_start, 3)
        stamps["first_row"] = time.time()
        started = time.monotonic()
        warm.select(predict("text").alias("e")).write.format("noop").mode("overwrite").save()
        result["warmup_s"] = round(time.monotonic() - started, 3)

        stamps["timed_start"] = time.time()
        started = time.monotonic()
        # Paths 2 and 3 take the rows in the job's order (spark_jobs.batch_order); spark_udf takes
        # them as a user's DataFrame has them (its sentence-transformers flavor sorts inside encode).
        # ``row_order`` "table" turns the job's order off (benchmarks.sweep measures what it buys).
        order = cfg.get("row_order") or ("table" if cfg["path"] == "mlflow_udf" else "length")
        ordered = length_ordered(docs, ["text"]) if order == "length" else docs
        result["row_order"] = order
        scored = ordered.select("id", predict("text").alias("embedding"))
        scored.write.format("noop").mode("overwrite").save()
        result["infer_s"] = round(time.monotonic() - started, 3)
        stamps["timed_end"] = time.time()
        result["rows_per_s"] = round(result["rows"] / result["infer_s"], 1)

        rows = docs.where(F.col("id").isin(check_ids)).select("id", predict("text").alias("e")).collect()
        result["check"] = {str(r.id): r.e if isinstance(r.e, str) else list(r.e) for r in rows}
    finally:
        if cfg["path"] == "triton_udf":
            from spark_jobs.triton_fleet import stop_servers

            started = time.monotonic()
            result["servers_stopped"] = stop_servers(spark, job)
            result["servers_stop_s"] = round(time.monotonic() - started, 3)
        stamps["path_end"] = time.time()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    cfg = json.loads(parser.parse_args().config)
    result: dict[str, Any] = {"path": cfg["path"], "stamps": {"driver_start": time.time()}}
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.getOrCreate()
    for key, value in (cfg.get("session_conf") or {}).items():
        spark.conf.set(key, value)
    result["stamps"]["session_ready"] = time.time()
    try:
        run(spark, cfg, result)
        result["status"] = "ok"
    except BaseException as exc:
        result["status"] = "failed"
        result["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        with open(cfg["out"], "w") as handle:
            json.dump(result, handle, default=str)
        spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
