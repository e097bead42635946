"""Workers per node: paths 2 and 3 with 1, 2 and 4 Spark Python workers feeding ONE node.

The reason the Triton path exists is one model copy and one batching queue per node however many
Spark tasks feed it. This runs, for each worker count N, a local cluster of one worker whose one
executor has N cores (so N concurrent tasks, N Python workers, on one host), and on it:

* path 2 (``inprocess_udf``): ``predict_batch_udf`` loading the model in every Python worker;
* path 3 (``triton_udf``): ``predict_batch_udf`` through the node's one PyTriton server.

Per configuration it reports rows/s, CPU ms per row (CPU of the node's process trees while timed),
and the peak RSS and PSS of the node's process trees. PSS is the number to read: the Python workers
are forked from one daemon and share the pages they have not written, which RSS counts once per
process. "One model copy" is measured apart, in a fresh process: the private memory (USS) loading
the model and scoring one batch adds to a bare interpreter, i.e. what each extra path-2 worker pays.

``--model t5-small`` runs the text-generation model instead (:mod:`benchmarks.workloads`), where
the node's server can batch the workers' requests (Triton's dynamic batcher) and the in-process
workers cannot; ``--job-settings`` passes serving knobs (``server_max_queue_delay_us``, ...) to
both paths' job settings, so one knob can be compared at every worker count.

Usage::

    python -m benchmarks.workers_per_node                 # 2500 docs, N = 1,2,4
    python -m benchmarks.workers_per_node --rows 200      # smoke run, results under results/tmp/
    python -m benchmarks.workers_per_node --model t5-small --rows 600 --batch-size 16
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.bench import (
    MODELS_DIR,
    REPO,
    RESULTS,
    bench_workdir,
    device_options,
    leftovers,
    log,
    machine_name,
    make_input,
    run_spark_path,
)
from benchmarks.bench import (
    parse_args as bench_args,
)
from benchmarks.workloads import WORKLOADS, Workload, prepare

PATHS = ("inprocess_udf", "triton_udf")
SMOKE_ROWS = 500  # below this a run is a smoke test: its results go under results/tmp/


# -- pure logic (tested in tests/benchmarks/test_workers_per_node.py) -------------------------


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x: MB of peak PSS each added worker costs."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if var == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / var


def _ratio(a: float | None, b: float | None, digits: int = 3) -> float | None:
    return round(a / b, digits) if a is not None and b else None


def compare(configs: dict[int, dict[str, dict[str, Any]]], model_copy_mb: float | None) -> list[dict]:
    """One row per worker count: both paths side by side, path 3 / path 2 and the memory saved.

    ``configs[n][path]`` holds ``rows_per_s``, ``cpu_ms_per_row``, ``peak_rss_mb``, ``peak_pss_mb``.
    ``pss_saved_model_copies`` = (path 2 PSS - path 3 PSS) / one model copy: > 1 means the Triton
    node holds at least one model copy less than the in-process one.
    """
    rows = []
    for n in sorted(configs):
        p2, p3 = configs[n].get("inprocess_udf", {}), configs[n].get("triton_udf", {})
        saved = (
            round(p2["peak_pss_mb"] - p3["peak_pss_mb"], 1)
            if p2.get("peak_pss_mb") is not None and p3.get("peak_pss_mb") is not None
            else None
        )
        rows.append(
            {
                "python_workers": n,
                "inprocess_rows_per_s": p2.get("rows_per_s"),
                "triton_rows_per_s": p3.get("rows_per_s"),
                "triton_vs_inprocess_rows_per_s": _ratio(p3.get("rows_per_s"), p2.get("rows_per_s")),
                "inprocess_cpu_ms_per_row": p2.get("cpu_ms_per_row"),
                "triton_cpu_ms_per_row": p3.get("cpu_ms_per_row"),
                "inprocess_peak_rss_mb": p2.get("peak_rss_mb"),
                "triton_peak_rss_mb": p3.get("peak_rss_mb"),
                "inprocess_peak_pss_mb": p2.get("peak_pss_mb"),
                "triton_peak_pss_mb": p3.get("peak_pss_mb"),
                "pss_saved_mb": saved,
                "pss_saved_model_copies": _ratio(saved, model_copy_mb, 2) if saved is not None else None,
            }
        )
    return rows


def pss_growth_per_worker(configs: dict[int, dict[str, dict[str, Any]]]) -> dict[str, float | None]:
    """Per path, the fitted MB of peak node PSS per added Python worker."""
    out: dict[str, float | None] = {}
    for path in PATHS:
        points = [
            (float(n), float(c[path]["peak_pss_mb"]))
            for n, c in configs.items()
            if c.get(path, {}).get("peak_pss_mb") is not None
        ]
        value = slope(points)
        out[path] = round(value, 1) if value is not None else None
    return out


def format_table(rows: list[dict], model_copy_mb: float | None) -> str:
    head = ("workers", "rows/s 2", "rows/s 3", "3/2", "CPU ms/row 2", "CPU ms/row 3",
            "PSS MB 2", "PSS MB 3", "RSS MB 2", "RSS MB 3", "PSS saved MB", "= model copies")  # fmt: skip
    keys = ("python_workers", "inprocess_rows_per_s", "triton_rows_per_s", "triton_vs_inprocess_rows_per_s",
            "inprocess_cpu_ms_per_row", "triton_cpu_ms_per_row", "inprocess_peak_pss_mb", "triton_peak_pss_mb",
            "inprocess_peak_rss_mb", "triton_peak_rss_mb", "pss_saved_mb", "pss_saved_model_copies")  # fmt: skip
    table = [head] + [tuple("-" if r.get(k) is None else f"{r[k]:g}" for k in keys) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in table]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(f"path 2 = in-process predict_batch_udf, path 3 = through the node's PyTriton server; "
                 f"one model copy = {model_copy_mb} MB (USS a process gains loading the model after its imports)")  # fmt: skip
    return "\n".join(lines)


# -- one model copy ---------------------------------------------------------------------------


def probe_model_copy(workload: Workload) -> dict[str, float]:
    """In this (fresh) process: private memory (USS) of the libraries, then of the model itself.

    ``model_uss_mb`` (weights, tokenizer and the working memory of scoring one 64-row batch, after
    torch and transformers are imported) is "one model copy", the unit of the table.
    ``libraries_uss_mb`` (importing torch, transformers, sentence-transformers) is what every
    path-2 worker pays on top, partly shared between forked workers (PSS divides it).
    """
    import numpy as np
    import psutil

    me = psutil.Process()
    bare = me.memory_full_info()
    import sentence_transformers  # noqa: F401  (the libraries, before any weights)
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from spark_jobs.models.references import resolve_model

    libraries = me.memory_full_info()
    infer = resolve_model(workload.reference).load({**workload.options, "torch_threads": 1})
    infer(np.array([[b"warm up the model with one short sentence"]] * 64, dtype=np.object_))
    loaded = me.memory_full_info()
    mb = 1024 * 1024
    return {
        "model_uss_mb": round((loaded.uss - libraries.uss) / mb, 1),
        "libraries_uss_mb": round((libraries.uss - bare.uss) / mb, 1),
        "total_uss_mb": round((loaded.uss - bare.uss) / mb, 1),
        "total_pss_mb": round((loaded.pss - bare.pss) / mb, 1),
    }


def measure_model_copy(model: str) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.workers_per_node", "--probe-model-copy", "--model", model],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"model copy probe failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- runs -------------------------------------------------------------------------------------


def run_config(n: int, paths: list[str], args, table: Path, work: Path, check_ids) -> dict[str, Any]:
    """One local cluster: one worker, one executor with ``n`` cores; both paths on it, one after the other."""
    from airflow_spark_triton.backends.local.backend import LocalSparkBackend
    from airflow_spark_triton.cluster_spec import GpuClusterSpec

    hook = LocalSparkBackend(spark_triton_conn_id=None, home=str(work / "spark_triton"))
    spec = GpuClusterSpec(num_workers=1, executor_cores=n, worker_memory=args.worker_memory)
    run_args = bench_args(["--rows", str(args.rows), "--batch-size", str(args.batch_size),
                           "--partitions", str(args.partitions), "--workers", "1"])  # fmt: skip
    run_args.python_workers = n
    run_args.workload = args.workload
    run_args.job_settings = args.job_settings
    results: dict[str, Any] = {}
    cluster_id = hook.create_cluster(spec, {"purpose": f"bench-workers-{n}"})
    try:
        hook.wait_for_cluster(cluster_id, 300)
        for path in paths:
            log(f"{n} worker(s): {path}")
            load = round(os.getloadavg()[0], 2)
            r = run_spark_path(hook, cluster_id, path, run_args, table, work, check_ids)
            results[path] = {
                "rows_per_s": r["rows_per_s"],
                "cpu_ms_per_row": round(1000 * r["cpu_s_timed"] / r["rows"], 2)
                if r.get("cpu_s_timed")
                else None,
                "peak_rss_mb": r.get("peak_rss_mb"),
                "peak_pss_mb": r.get("peak_pss_mb"),
                "peak_rss_by_category_mb": r.get("peak_rss_by_category_mb"),
                "processes_at_peak": r.get("processes_at_peak"),
                "infer_s": r.get("infer_s"),
                "time_to_first_row_s": r.get("time_to_first_row_s"),
                "servers_ready_s": r.get("servers_ready_s"),
                "load_average": load,
            }
            log(f"{n} worker(s): {path}: {r['rows_per_s']} rows/s, peak PSS {r.get('peak_pss_mb')} MB")
    finally:
        hook.delete_cluster(cluster_id)
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2500, help="documents (default 2500)")
    parser.add_argument("--workers", default="1,2,4", help="Python workers per node to run (default 1,2,4)")
    parser.add_argument("--paths", default=",".join(PATHS), help="subset of " + ",".join(PATHS))
    parser.add_argument("--model", default="minilm", choices=sorted(WORKLOADS))
    parser.add_argument(
        "--job-settings",
        type=json.loads,
        default={},
        help="InferenceJobConfig fields of both paths, JSON, e.g. '{\"server_max_queue_delay_us\": 2000}'",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--worker-memory", default="2g", help="the executor JVM's memory")
    parser.add_argument(
        "--out", default=None, help="result JSON (default results/<date>-<machine>-workers.json)"
    )
    parser.add_argument("--no-chart", action="store_true")
    parser.add_argument("--probe-model-copy", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        args.worker_counts = sorted({int(w) for w in args.workers.split(",") if w.strip()})
    except ValueError:
        parser.error(f"--workers must be comma-separated integers, got {args.workers!r}")
    if not args.worker_counts or min(args.worker_counts) < 1:
        parser.error(f"--workers must name worker counts >= 1, got {args.workers!r}")
    unknown = set(args.paths.split(",")) - set(PATHS)
    if unknown:
        parser.error(f"--paths: unknown path(s) {sorted(unknown)}; choose from {', '.join(PATHS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.probe_model_copy:
        print(json.dumps(probe_model_copy(prepare(args.model, MODELS_DIR))))
        return 0
    paths = [p for p in PATHS if p in args.paths.split(",")]
    work = bench_workdir("workers")
    os.environ.pop("OMP_NUM_THREADS", None)
    args.workload = prepare(args.model, MODELS_DIR)
    log("measuring one model copy in a fresh process")
    copy = measure_model_copy(args.model)
    log(f"one model copy: {copy}")
    table_path = work / "data" / "documents"
    log(f"writing {args.rows} documents")
    input_info = make_input(table_path, args.rows)
    check_ids = [1, args.rows]
    configs: dict[int, dict[str, dict[str, Any]]] = {}
    try:
        for n in args.worker_counts:
            configs[n] = run_config(n, paths, args, table_path, work, check_ids)
    finally:
        deadline = time.monotonic() + 20
        left = leftovers(work)
        while left and time.monotonic() < deadline:
            time.sleep(1)
            left = leftovers(work)
        if left:
            log("WARNING: processes left running:\n" + "\n".join(left))

    rows = compare(configs, copy["model_uss_mb"])
    summary = {
        "benchmark": "workers_per_node",
        "model": args.workload.description,
        "model_ref": args.workload.reference,
        "workload": args.workload.name,
        "model_options": device_options(args),
        "rows": args.rows,
        "cores": os.cpu_count(),
        "device": "cpu",
        "machine": machine_name(),
        "date": dt.date.today().isoformat(),
        "command": "python -m benchmarks.workers_per_node " + " ".join(sys.argv[1:]),
        "layout": "one local Spark worker, one executor with N cores (N concurrent tasks / Python workers)",
        "model_copy_mb": copy,
        "table": rows,
        "pss_growth_mb_per_worker": pss_growth_per_worker(configs),
        "settings": {
            "batch_size": args.batch_size,
            "partitions": args.partitions,
            "worker_memory": args.worker_memory,
            "job_settings": args.job_settings,
        },
        "input": input_info,
        "leftover_processes": left,
        "configs": {str(n): c for n, c in configs.items()},
    }
    top = rows[-1] if rows else {}
    summary["checks"] = {
        f"triton_pss_below_inprocess_by_one_copy_at_{top.get('python_workers')}_workers": (
            top.get("pss_saved_model_copies") is not None and top["pss_saved_model_copies"] >= 1
        ),
        f"triton_rows_per_s_at_least_inprocess_at_{top.get('python_workers')}_workers": (
            top.get("triton_vs_inprocess_rows_per_s") is not None
            and top["triton_vs_inprocess_rows_per_s"] >= 1
        ),
    }
    default_dir = RESULTS / "tmp" if args.rows < SMOKE_ROWS else RESULTS
    suffix = "" if args.workload.name == "minilm" else f"-{args.workload.name}"
    out = (
        Path(args.out)
        if args.out
        else default_dir / f"{summary['date']}-{summary['machine']}-workers{suffix}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print()
    print(format_table(rows, copy["model_uss_mb"]))
    print(f"PSS growth per added worker (MB): {summary['pss_growth_mb_per_worker']}")
    print("checks: " + ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in summary["checks"].items()))
    print(f"\nresults: {out}")
    if not args.no_chart:
        try:
            from benchmarks.chart import write_workers_chart

            print(f"chart:   {write_workers_chart(summary, out.with_suffix('.png'))}")
        except ImportError as exc:  # matplotlib is the [bench] extra; the JSON is the result
            print(f"chart:   not written ({exc}); later: python -m benchmarks.chart {out}")
    shutil.rmtree(work / "data", ignore_errors=True)
    return 1 if left else 0


if __name__ == "__main__":
    raise SystemExit(main())
