"""Issue #14 item 4: does the nightly job scale linearly? The real job, the real model, 20k and 200k rows.

Each size is one date of all-MiniLM-L6-v2 documents in a Delta table that also holds a second,
small date (so the date filter has something to prune). The nightly job itself
(``spark_jobs/batch_inference.py``: validation, rejects, one PyTriton server per node,
``predict_batch_udf``, Delta commits) runs on one local cluster (2 workers x 1 core), submitted
through the local backend as the inference operator submits it. For each size it prints, side by
side: the job's rows/s, its phases, and the peak memory of the driver side (supervisor,
spark-submit JVM, driver Python) and of the nodes (worker and executor JVMs, Python workers, Triton
servers), sampled every 0.5 s. The 200k run's rows/s over the 20k run's is the scaling ratio.

Usage::

    python -m benchmarks.scale                       # 20k and 200k rows (~30 min on 2 cores)
    python -m benchmarks.scale --rows 2000,20000     # a quicker look
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

from benchmarks.bench import MODEL, RESULTS, bench_workdir, leftovers, log, machine_name, node_roots
from benchmarks.sampler import TreeSampler

DATE = dt.date(2026, 1, 2)
OTHER_DATE_ROWS = 2_000  # the day before: read by nobody, pruned by the date filter


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", default="20000,200000", help="comma-separated sizes of the scored date")
    parser.add_argument("--workers", type=int, default=2, help="local Spark workers (1 core each)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--out", default=None, help="result JSON (default results/<date>-<machine>-scale.json)"
    )
    return parser.parse_args(argv)


def make_input(table: Path, rows: int) -> None:
    from airflow_spark_triton.demo.sample_documents import sample_documents
    from spark_jobs.delta_io import write_pandas_table

    other = sample_documents([DATE - dt.timedelta(days=1)], OTHER_DATE_ROWS, broken_per_day=0)
    scored = sample_documents([DATE], rows)  # with the sample's few unscorable rows: rejects too
    scored["id"] += OTHER_DATE_ROWS
    write_pandas_table(str(table), other, ["date"])
    write_pandas_table(str(table), scored, ["date"], mode="append")


def driver_roots(backend, run_id: str):
    """The run's supervisor: spark-submit, the driver JVM and the driver's Python below it."""

    def roots():
        record = json.loads((backend.run_dir(run_id) / "run.json").read_text())
        return [(int(record["supervisor"]["pid"]), "driver")]

    return roots


def run_size(backend, cluster_id: str, rows: int, work: Path, batch_size: int) -> dict[str, Any]:
    from airflow_spark_triton.backends.base import RunLifecycle
    from spark_jobs.contract import InferenceJobConfig

    data = work / f"rows-{rows}"
    log(f"writing {rows} documents (+{OTHER_DATE_ROWS} on another date) to {data}")
    make_input(data / "documents", rows)
    job = InferenceJobConfig(
        input_table=str(data / "documents"),
        output_table=str(data / "embeddings"),
        model=MODEL,
        logical_date=DATE.isoformat(),
        batch_size=batch_size,
    )
    submitted = time.monotonic()
    run_id = backend.submit_job(cluster_id, job, f"scale-{rows}-{int(time.time())}")
    nodes = TreeSampler(node_roots(backend, cluster_id))
    driver = TreeSampler(driver_roots(backend, run_id))
    with nodes, driver:
        while not (status := backend.get_run_status(run_id)).state.is_terminal:
            time.sleep(1)
    wall = time.monotonic() - submitted
    if status.state != RunLifecycle.SUCCESS:
        raise RuntimeError(f"{rows} rows: run {run_id} {status.state}: {status.message}")
    report = backend.get_run_report(run_id)
    far = time.time() + 1e9
    node_peak = nodes.peak(0, far) or {}
    driver_peak = driver.peak(0, far) or {}
    result = {
        "rows_read": report.rows_read,
        "rows_scored": report.rows_scored,
        "rows_rejected": report.rows_rejected,
        "rows_per_s": report.rows_per_s,
        "timings_s": report.timings_s,
        "submit_to_end_s": round(wall, 1),
        "driver_peak_rss_mb": driver_peak.get("peak_rss_mb"),
        "nodes_peak_rss_mb": node_peak.get("peak_rss_mb"),
        "nodes_peak_rss_by_category_mb": node_peak.get("peak_rss_by_category_mb"),
    }
    log(f"{rows} rows: {result['rows_per_s']} rows/s, driver peak {result['driver_peak_rss_mb']} MB")
    return result


def table(results: dict[int, dict[str, Any]]) -> str:
    sizes = list(results)
    rows = [
        (
            "rows read (scored + rejected)",
            lambda r: f"{r['rows_read']} ({r['rows_scored']} + {r['rows_rejected']})",
        ),
        ("rows/s (inference and write)", lambda r: r["rows_per_s"]),
        ("read and validate, s", lambda r: r["timings_s"].get("read_and_validate")),
        ("servers ready, s", lambda r: r["timings_s"].get("servers_ready")),
        ("inference and write, s", lambda r: r["timings_s"].get("inference_and_write")),
        ("servers stop, s", lambda r: r["timings_s"].get("servers_stop")),
        ("job total, s", lambda r: r["timings_s"].get("total")),
        ("submit to end, s", lambda r: r["submit_to_end_s"]),
        ("driver side peak RSS, MB", lambda r: r["driver_peak_rss_mb"]),
        ("nodes peak RSS, MB", lambda r: r["nodes_peak_rss_mb"]),
    ]
    lines = [f"{'':34}" + "".join(f"{n:>26}" for n in sizes)]
    for label, get in rows:
        lines.append(f"{label:34}" + "".join(f"{get(results[n])!s:>26}" for n in sizes))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = [int(n) for n in args.rows.split(",") if n]
    work = bench_workdir("scale")
    from airflow_spark_triton.backends.local.backend import LocalSparkBackend
    from airflow_spark_triton.cluster_spec import GpuClusterSpec

    backend = LocalSparkBackend(spark_triton_conn_id=None, home=str(work / "spark_triton"))
    spec = GpuClusterSpec(num_workers=args.workers, executor_cores=1, worker_memory="2g")
    results: dict[int, dict[str, Any]] = {}
    cluster_id = backend.create_cluster(spec, {"purpose": "scale-bench"})
    try:
        backend.wait_for_cluster(cluster_id, 300)
        for rows in sizes:
            results[rows] = run_size(backend, cluster_id, rows, work, args.batch_size)
    finally:
        backend.delete_cluster(cluster_id)
    left = leftovers(work)
    smallest, largest = results[sizes[0]], results[sizes[-1]]
    summary = {
        "date": dt.date.today().isoformat(),
        "machine": machine_name(),
        "model": MODEL,
        "workers": args.workers,
        "batch_size": args.batch_size,
        "sizes": {str(n): r for n, r in results.items()},
        "rows_per_s_ratio_largest_vs_smallest": round(largest["rows_per_s"] / smallest["rows_per_s"], 3),
        "leftover_processes": left,
    }
    out = Path(args.out) if args.out else RESULTS / f"{summary['date']}-{summary['machine']}-scale.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(table(results))
    print(
        f"rows/s {sizes[-1]} vs {sizes[0]}: {summary['rows_per_s_ratio_largest_vs_smallest']} "
        f"(target: within 10%, i.e. >= 0.9); leftovers: {len(left)}; saved {out}"
    )
    return 0 if not left else 1


if __name__ == "__main__":
    raise SystemExit(main())
