"""Tuning sweep of path 3 (predict_batch_udf -> PyTriton per node): one knob at a time, side by side.

Every variant runs on the *same* local cluster and the same documents, one after another, so the
ratios to the baseline are comparable; CPU ms per row (CPU of the node's process trees while timed)
is printed too, because wall-clock rows/s also moves with anything else the machine runs. The
in-process UDF (path 2) runs at the baseline's settings as the reference.

Usage::

    python -m benchmarks.sweep               # 2000 documents -> results/<date>-<machine>-sweep.json
    python -m benchmarks.sweep --rows 500    # a quick look
    python -m benchmarks.sweep --rows 6000 --repeat 3 --only "baseline (batch 64)" --only "rows in table order"
                                             # A/B interleaved 3 times: the machine's drift
                                             # between rounds moves both sides alike
    python -m benchmarks.sweep --batching    # batcher / instances / HTTP vs gRPC, 4 workers on one node
                                             # -> results/<date>-<machine>-batching-4w.json
    python -m benchmarks.sweep --batching --model t5-small --rows 600
                                             # the generation model's serving knobs, one at a time
                                             # -> results/<date>-<machine>-batching-4w-t5-small.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.bench import (
    MODELS_DIR,
    RESULTS,
    agreement,
    log,
    machine_name,
    make_input,
    parse_args,
    run_spark_path,
)
from benchmarks.workloads import WORKLOADS, prepare

ARROW_BATCH = "spark.sql.execution.arrow.maxRecordsPerBatch"

# name -> (path, overrides of bench's arguments). The first triton_udf variant is the baseline.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "baseline (batch 64)": ("triton_udf", {}),
    "batch 32": ("triton_udf", {"batch_size": 32}),
    "batch 128": ("triton_udf", {"batch_size": 128}),
    "batch 256": ("triton_udf", {"batch_size": 256}),
    "arrow batch 256 rows": ("triton_udf", {"session_conf": [f"{ARROW_BATCH}=256"]}),
    "server torch threads 1": ("triton_udf", {"server_options": json.dumps({"torch_threads": 1})}),
    "partitions 2": ("triton_udf", {"partitions": 2}),
    "in-process UDF (path 2), batch 64": ("inprocess_udf", {}),
    # spark_jobs.batch_order: each partition length-ordered (the job's default) against table order
    "rows in table order": ("triton_udf", {"row_order": "table"}),
    "in-process UDF (path 2), rows in table order": ("inprocess_udf", {"row_order": "table"}),
}

# ``--batching``: PyTriton's dynamic batcher, model instances and the client protocol, with N Python
# workers (default 4) feeding ONE node (one executor with N cores), where a batcher can merge the
# workers' requests. Overrides of InferenceJobConfig fields; the first variant is the baseline
# (today's defaults: 2 ms queue delay, no preferred sizes, 1 instance, HTTP).
BATCHING_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "baseline (delay 2 ms; 1 instance; http)": ("triton_udf", {}),
    "max queue delay 0": ("triton_udf", {"job_settings": {"server_max_queue_delay_us": 0}}),
    "max queue delay 10 ms": ("triton_udf", {"job_settings": {"server_max_queue_delay_us": 10_000}}),
    "preferred batch sizes 128+256": (
        "triton_udf",
        {"job_settings": {"server_preferred_batch_sizes": [128, 256]}},
    ),
    "model instances 2": ("triton_udf", {"job_settings": {"server_model_instances": 2}}),
    "grpc client": ("triton_udf", {"job_settings": {"client_protocol": "grpc"}}),
    "in-process UDF (path 2)": ("inprocess_udf", {}),
}

# ``--batching --model t5-small``: the same knobs for text generation, where a batch's cost per row
# falls with its size (every decoding step is one forward pass over the whole batch). The text2text
# task serves batches of at most 64 rows (``max_batch_size``), so the server can only merge requests
# smaller than that: the client batch is the first knob. The baseline is today's CPU default (one
# single-threaded instance per core, no queue delay) at the bench's 64-row batches.
GENERATION_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "baseline (batch 64; per-core instances; no delay)": ("triton_udf", {}),
    "batch 16": ("triton_udf", {"batch_size": 16}),
    "batch 16, queue delay 2 ms": (
        "triton_udf",
        {"batch_size": 16, "job_settings": {"server_max_queue_delay_us": 2000}},
    ),
    "batch 16, queue delay 10 ms": (
        "triton_udf",
        {"batch_size": 16, "job_settings": {"server_max_queue_delay_us": 10_000}},
    ),
    "batch 16, delay 10 ms, preferred 64": (
        "triton_udf",
        {
            "batch_size": 16,
            "job_settings": {"server_max_queue_delay_us": 10_000, "server_preferred_batch_sizes": [64]},
        },
    ),
    "queue delay 10 ms": ("triton_udf", {"job_settings": {"server_max_queue_delay_us": 10_000}}),
    "model instances 1 (node's threads)": ("triton_udf", {"job_settings": {"server_model_instances": 1}}),
    "in-process UDF (path 2), batch 64": ("inprocess_udf", {}),
    "in-process UDF (path 2), batch 16": ("inprocess_udf", {"batch_size": 16}),
}


def vs_round_baseline(rows: list[dict[str, Any]], row: dict[str, Any]) -> float | None:
    """``row``'s rows/s over its round's baseline (the round's first triton_udf variant): the
    variants of one round ran minutes apart, the rounds tens of minutes apart."""
    baseline = next(
        (r["rows_per_s"] for r in rows if r["path"] == "triton_udf" and r["round"] == row["round"]), None
    )
    return round(row["rows_per_s"] / baseline, 3) if baseline else None


def mean_vs_baseline(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Per variant, the mean of its rounds' ratios to their baselines."""
    ratios: dict[str, list[float]] = {}
    for row in rows:
        if (ratio := vs_round_baseline(rows, row)) is not None:
            ratios.setdefault(row["variant"], []).append(ratio)
    return {name: round(sum(v) / len(v), 3) for name, v in ratios.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument(
        "--only", action="append", default=[], help="a variant's name, repeatable (default: all variants)"
    )
    parser.add_argument(
        "--batching",
        action="store_true",
        help="sweep the dynamic batcher, model instances and HTTP vs gRPC on one node instead",
    )
    parser.add_argument(
        "--workers-per-node", type=int, default=4, help="with --batching: Python workers feeding the node"
    )
    parser.add_argument("--model", default="minilm", choices=sorted(WORKLOADS))
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of the chosen variants, interleaved (A B A B ...)"
    )
    parser.add_argument(
        "--out", default=None, help="result JSON (default results/<date>-<machine>-<kind>.json)"
    )
    options = parser.parse_args(argv)
    generation = WORKLOADS[options.model].kind == "generation"
    if generation and not options.batching:
        parser.error("--model t5-small sweeps the serving knobs: add --batching")
    variants = GENERATION_VARIANTS if generation else BATCHING_VARIANTS if options.batching else VARIANTS
    unknown = sorted(set(options.only) - set(variants))
    if unknown:  # names hold commas ("in-process UDF (path 2), batch 64"): one --only per name
        parser.error(f"unknown variant(s) {unknown}; choose from {sorted(variants)}")
    chosen = [v for v in variants if not options.only or v in options.only]

    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = RESULTS / "tmp" / f"sweep-{stamp}-{os.getpid()}"
    os.environ.update(
        {
            "AIRFLOW_HOME": str(work / "airflow"),
            "AIRFLOW_SPARK_TRITON_HOME": str(work / "spark_triton"),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    os.environ.pop("OMP_NUM_THREADS", None)
    table = work / "data" / "documents"
    make_input(table, options.rows)
    from airflow_spark_triton.backends.local.backend import LocalSparkBackend
    from airflow_spark_triton.cluster_spec import GpuClusterSpec

    base = parse_args(["--rows", str(options.rows), "--model", options.model])
    base.workload = prepare(options.model, MODELS_DIR)
    if options.batching:  # one node: one worker, one executor whose N cores run N Python workers
        base.workers, base.python_workers = 1, options.workers_per_node
        spec = GpuClusterSpec(num_workers=1, executor_cores=options.workers_per_node, worker_memory="2g")
    else:
        spec = GpuClusterSpec(num_workers=2, worker_memory="2g")
    check_ids = [1, options.rows]

    hook = LocalSparkBackend(spark_triton_conn_id=None, home=str(work / "spark_triton"))
    cluster_id = hook.create_cluster(spec, {"purpose": "sweep"})
    rows: list[dict[str, Any]] = []
    checks: list[dict | None] = []  # embeddings of the check rows: every variant must score the same
    try:
        hook.wait_for_cluster(cluster_id, 300)
        for round_, name in ((r, n) for r in range(1, options.repeat + 1) for n in chosen):
            path, overrides = variants[name]
            args = argparse.Namespace(**{**vars(base), **overrides})
            log(f"{name}: {path} {overrides or ''}")
            result = run_spark_path(hook, cluster_id, path, args, table, work, check_ids)
            rows.append(
                {
                    "variant": name,
                    "round": round_,
                    "path": path,
                    "overrides": overrides,
                    "rows_per_s": result["rows_per_s"],
                    "cpu_ms_per_row": round(1000 * result["cpu_s_timed"] / result["rows"], 2)
                    if result.get("cpu_s_timed")
                    else None,
                    "load_average": round(os.getloadavg()[0], 2),
                    "agreement_vs_first": agreement(checks[0], result.get("check")) if checks else 1.0,
                }
            )
            checks.append(result.get("check"))
            log(f"{name}: {result['rows_per_s']} rows/s")
    finally:
        hook.delete_cluster(cluster_id)

    print(f"\n{'variant':<46} {'round':>5} {'rows/s':>8} {'vs baseline':>12} {'CPU ms/row':>11} {'load':>6}")
    for row in rows:
        row["vs_baseline"] = vs_round_baseline(rows, row)
        print(
            f"{row['variant']:<46} {row['round']:>5} {row['rows_per_s']:>8} {row['vs_baseline'] or '-':>12} "
            f"{row['cpu_ms_per_row'] or '-':>11} {row['load_average']:>6}"
        )
    means = mean_vs_baseline(rows)
    if options.repeat > 1:
        print("\nmean over rounds, vs the same round's baseline:")
        for name, value in means.items():
            print(f"  {name:<46} {value}")
    kind = f"batching-{options.workers_per_node}w" if options.batching else "sweep"
    kind += "" if options.model == "minilm" else f"-{options.model}"
    out = (
        Path(options.out)
        if options.out
        else RESULTS / f"{time.strftime('%Y-%m-%d')}-{machine_name()}-{kind}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    layout = {"workers": spec.num_workers, "executor_cores": spec.executor_cores}
    out.write_text(
        json.dumps(
            {
                "rows": options.rows,
                "model": base.workload.description,
                "model_ref": base.workload.reference,
                "machine": machine_name(),
                "layout": layout,
                "rounds": options.repeat,
                "variants": rows,
                "mean_vs_baseline": means,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
