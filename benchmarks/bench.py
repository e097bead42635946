"""``make bench``: one model five ways on the same documents and the same 2 cores.

The package's own three paths:

1. ``plain_torch``: the model in one process, no Spark (the machine's limit);
2. ``inprocess_udf``: ``predict_batch_udf`` with the model loaded in every Spark Python worker;
3. ``triton_udf``: this project's path, ``predict_batch_udf`` through one PyTriton server per node;

and the two peers a team would pick instead (issue #26):

4. ``ray_data``: Ray Data over the same Delta table, ``map_batches`` with an actor pool of one model
   copy per CPU (:mod:`benchmarks.ray_path`, a local Ray instance with the same cores);
5. ``mlflow_udf``: ``mlflow.pyfunc.spark_udf`` over the model logged to a local MLflow store
   (:mod:`benchmarks.mlflow_model`), on the same local Spark cluster.

Paths 2, 3 and 5 run as separate Spark applications on the *same* local standalone cluster
(LocalSparkBackend: 2 workers x 1 core), submitted with the hook like the real job. Paths 1 and 4
run alone. Every path runs the same infer function of the same model (``--model``: all-MiniLM-L6-v2
embeddings, or a t5-small-sized generation model, :mod:`benchmarks.workloads`). Memory is sampled per
node (worker JVMs, executors, Python workers, Triton server tree; Ray's raylet and its workers);
inference is timed apart from the read and warm-up; each path's fixed overhead (what it spends
outside scoring, from nothing running to nothing running) is reported beside its rows/s.

Usage::

    python -m benchmarks.bench            # 20k documents -> benchmarks/results/<date>-<machine>.json + .png
    python -m benchmarks.bench --quick    # 1.5k documents -> benchmarks/results/tmp/ (CI smoke)
    python -m benchmarks.bench --model t5-small   # text generation, 2k documents -> ...-t5-small.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from benchmarks.comparison import GIVES_UP, LABELS, PATHS, PEERS, SPARK_PATHS, TARGETS
from benchmarks.mlflow_model import MLFLOW_ENV
from benchmarks.sampler import TreeSampler
from benchmarks.workloads import MINILM, WORKLOADS, Workload, prepare

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
MODEL = MINILM.reference
MODEL_NAME = MINILM.description
DATE = "2026-01-01"
MODELS_DIR = RESULTS / "tmp" / "models"  # the generation model, built once per machine
ARCHIVE_RUN_LIMIT_S = 1200  # the class-archive run: 64 rows, 1-5 min even on a loaded machine


def machine_name() -> str:
    memory_gb = round(psutil.virtual_memory().total / 2**30)
    return f"cpu-{os.cpu_count()}c-{memory_gb}g"


def gpu_name() -> str | None:
    """The first GPU's name as nvidia-smi reports it (``--device cuda`` runs record it)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def workload_of(args) -> Workload:
    """The prepared workload of a run (``main`` sets it; the sweep and workers_per_node too)."""
    return getattr(args, "workload", None) or MINILM


def device_options(args) -> dict[str, Any]:
    """The workload's model options (generation lengths) and ``--device``, as the model options of
    every path, so they all run the same work on the same device."""
    options = dict(workload_of(args).options)
    if workload_of(args).kind == "generation" and getattr(args, "new_tokens", None):
        options.update(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
    device = getattr(args, "device", None)
    return {**options, **({"device": device} if device else {})}


def stop_child(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    """Stop a path's process if it still runs (a timeout, a SIGTERM of the bench): SIGTERM first, so
    its own ``finally`` runs (the Ray path's ``ray.shutdown()``), then SIGKILL after ``grace_s``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def exit_on_sigterm() -> None:
    """A SIGTERM (``timeout``, the GPU script's limit, a person's kill) raises ``SystemExit``, so the
    ``finally`` blocks run: the local cluster is deleted and a path's process stopped, not left to
    the cluster's idle reaper."""

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows",
        type=int,
        default=None,
        help="documents (default: the model's, 20000 for minilm, 2000 for t5-small; --quick: 1500 / 200)",
    )
    parser.add_argument(
        "--model", default="minilm", choices=sorted(WORKLOADS), help="what to score (benchmarks.workloads)"
    )
    parser.add_argument(
        "--new-tokens",
        type=int,
        default=None,
        help="generation: tokens every row generates (min = max; default benchmarks.workloads.GENERATED_TOKENS)",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run's size, results under results/tmp/")
    parser.add_argument("--batch-size", type=int, default=64, help="predict_batch_udf / encode batch")
    parser.add_argument("--partitions", type=int, default=8, help="Spark partitions of the input")
    parser.add_argument("--workers", type=int, default=2, help="local Spark workers (1 core each)")
    parser.add_argument(
        "--server-options",
        default="{}",
        help="model options of the Triton server (path 3), JSON, e.g. '{\"torch_threads\": 2}'",
    )
    parser.add_argument(
        "--job-settings",
        type=json.loads,
        default={},
        help="InferenceJobConfig fields of paths 2 and 3, JSON, e.g. '{\"server_model_instances\": 2}'",
    )
    parser.add_argument(
        "--session-conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="runtime SQL conf for paths 2 and 3, e.g. spark.sql.execution.arrow.maxRecordsPerBatch=1024",
    )
    parser.add_argument(
        "--jvm-options",
        default=None,
        help="driver and executor JVM flags of paths 2 and 3 (default: the local backend's "
        "LOCAL_JVM_OPTIONS; '' for the JVM's own defaults, C2 and G1)",
    )
    parser.add_argument(
        "--paths", default=",".join(PATHS), help="comma-separated subset of " + ",".join(PATHS)
    )
    parser.add_argument(
        "--device",
        default=None,
        help="torch device of every path, e.g. cuda (default: the model's choice, CUDA if present)",
    )
    parser.add_argument("--out", default=None, help="result JSON (default results/<date>-<machine>.json)")
    parser.add_argument("--no-chart", action="store_true")
    args = parser.parse_args(argv)
    if args.rows is None:
        workload = WORKLOADS[args.model]
        args.rows = workload.quick_rows if args.quick else workload.default_rows
    return args


# -- input ------------------------------------------------------------------------------------


def make_input(table: Path, rows: int) -> dict[str, Any]:
    from airflow_spark_triton.demo.sample_documents import sample_documents
    from spark_jobs.delta_io import write_pandas_table

    started = time.monotonic()
    frame = sample_documents([dt.date.fromisoformat(DATE)], rows, broken_per_day=0)
    write_pandas_table(str(table), frame, partition_by=["date"])
    lengths = frame["text"].str.len()
    return {
        "rows": rows,
        "mean_chars": round(float(lengths.mean()), 1),
        "max_chars": int(lengths.max()),
        "write_s": round(time.monotonic() - started, 3),
    }


def run_sampled(cmd: list[str], roots_of, out: Path, what: str) -> tuple[TreeSampler, float, float]:
    """Run a path's own process (paths 1 and 4) with its process tree sampled; ``roots_of(pid)``
    names the tree's roots. Returns the sampler and the run's start and end epochs; a failure
    raises with the process's output tail."""
    started = time.time()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        with TreeSampler(roots_of(proc.pid)) as sampler:
            output, _ = proc.communicate(timeout=3600)
    finally:
        stop_child(proc)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"{what} failed:\n{output.decode(errors='replace')[-3000:]}")
    return sampler, started, time.time()


# -- path 1 -----------------------------------------------------------------------------------


def run_plain_torch(args, table: Path, work: Path, check_ids: list[int]) -> dict[str, Any]:
    out = work / "plain_torch.json"
    threads = os.cpu_count() or 1
    cmd = [
        sys.executable, "-m", "benchmarks.plain_torch",
        "--input", str(table),
        "--model", workload_of(args).reference,
        "--model-options", json.dumps({"torch_threads": threads, **device_options(args)}),
        "--batch-size", str(args.batch_size),
        "--check-ids", ",".join(map(str, check_ids)),
        "--out", str(out),
    ]  # fmt: skip
    sampler, started, ended = run_sampled(cmd, lambda pid: lambda: [(pid, "python")], out, "plain torch path")
    result = json.loads(out.read_text())
    result.update(sampler.peak(started, ended) or {})
    result["cpu_s_timed"] = sampler.cpu_seconds(result["timed_start_epoch"], result["timed_end_epoch"])
    result["fixed_overhead_s"] = result.get("process_start_to_first_row_s")
    return result


# -- path 4: Ray Data ---------------------------------------------------------------------------

RAY_NODE = "ray_node"  # the raylet and what it starts (the actors' workers, its agents): one Ray node
RAY_HEAD = "ray_head"  # the driver, GCS, monitor, log monitor and minimal dashboard: the head's


def ray_roots(pid: int):
    """The Ray path's process and what it started, the raylet's tree as the node, the rest as head."""

    def roots():
        found = []
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            found.append((pid, RAY_HEAD))
            for child in root.children():
                with contextlib.suppress(psutil.Error):
                    found.append((child.pid, RAY_NODE if child.name() == "raylet" else RAY_HEAD))
        return found[::-1]  # the raylet's tree first: a process is counted under its first root

    return roots


def run_ray(args, table: Path, work: Path, check_ids: list[int]) -> dict[str, Any]:
    out = work / "ray_data.json"
    workload = workload_of(args)
    cmd = [
        sys.executable, "-m", "benchmarks.ray_path",
        "--input", str(table),
        "--date", DATE,
        "--model", workload.reference,
        "--model-options", json.dumps(device_options(args)),
        "--output", workload.output,
        "--batch-size", str(args.batch_size),
        "--workers", str(args.workers),
        "--partitions", str(args.partitions),
        "--num-gpus", "1" if (args.device or "").startswith("cuda") else "0",
        "--check-ids", ",".join(map(str, check_ids)),
        "--out", str(out),
    ]  # fmt: skip
    sampler, started, ended = run_sampled(cmd, ray_roots, out, "Ray Data path")
    result = json.loads(out.read_text())
    stamps = result["stamps"]
    result.update(sampler.peak_of({RAY_NODE}, started, ended) or {})
    whole = sampler.peak(started, ended) or {}
    result["peak_rss_by_category_mb"] = whole.get("peak_rss_by_category_mb")
    result["head_and_node_peak_pss_mb"] = whole.get("peak_pss_mb")
    result["cpu_s_timed"] = sampler.cpu_seconds(stamps["timed_start"], stamps["timed_end"], {RAY_NODE})
    result["head_cpu_s_timed"] = sampler.cpu_seconds(stamps["timed_start"], stamps["timed_end"], {RAY_HEAD})
    result["fixed_overhead_s"] = round(
        result["ray_init_s"] + result["pool_ready_s"] + result["ray_shutdown_s"], 3
    )
    return result


# -- path 5: the model in an MLflow store ---------------------------------------------------------


def log_mlflow_model(args, work: Path) -> dict[str, Any]:
    """Log the workload's model to a local MLflow store in ``work`` (a process of its own)."""
    workload = workload_of(args)
    out = work / "mlflow_model.json"
    cmd = [sys.executable, "-m", "benchmarks.mlflow_model", "--model", workload.name,
           "--store", str(work / "mlflow"), "--batch-size", str(args.batch_size), "--out", str(out)]  # fmt: skip
    if workload.kind == "generation":
        model_dir = workload.reference.split(":", 2)[2]
        cmd += ["--model-dir", model_dir, "--model-options", json.dumps(device_options(args))]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"logging the model to MLflow failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    logged = json.loads(out.read_text())
    logged["result_type"] = workload.spark_result_type
    # sentence-transformers' encode takes the batch size as a parameter (the signature declares it)
    logged["params"] = {"batch_size": args.batch_size} if workload.kind == "embedding" else {}
    return logged


# -- paths 2 and 3 ----------------------------------------------------------------------------


def node_roots(hook, cluster_id: str):
    """Worker JVMs (their executors and Python workers below them) and this cluster's Triton servers."""
    cluster = hook.get_cluster(cluster_id) or {}
    state_dir = hook.state_dir_for_servers(cluster_id)

    def roots():
        found = [(int(w["pid"]), None) for w in cluster.get("workers", [])]
        for pid_file in state_dir.glob("*.pid"):
            with contextlib.suppress(ValueError, OSError, psutil.Error):
                pid = int(pid_file.read_text().strip())
                found.append((pid, "triton"))
                if pid not in seen_env:
                    seen_env[pid] = psutil.Process(pid).environ().get("OMP_NUM_THREADS", "unset")
        return found

    roots.server_omp_threads = seen_env = {}  # type: ignore[attr-defined]

    return roots


def run_spark_path(hook, cluster_id: str, path: str, args, table: Path, work: Path, check_ids) -> dict:
    from airflow_spark_triton.backends.base import RunLifecycle

    out = work / f"{path}.json"
    config = {
        "path": path,
        "input_table": str(table),
        "date": DATE,
        "model": workload_of(args).reference,
        "mlflow": getattr(args, "mlflow", None),  # mlflow_udf: the logged model (log_mlflow_model)
        "model_options": {
            **device_options(args),
            **(json.loads(args.server_options) if path == "triton_udf" else {}),
        },
        "batch_size": args.batch_size,
        "partitions": args.partitions,
        "executors": args.workers,
        "python_workers": getattr(args, "python_workers", args.workers),  # task slots of the cluster
        "job_settings": args.job_settings,  # InferenceJobConfig fields (--job-settings, the sweep)
        "check_ids": check_ids,
        "run_id": f"bench-{path}-{os.getpid()}-{int(time.time())}",
        "session_conf": dict(kv.split("=", 1) for kv in args.session_conf),
        "row_order": getattr(args, "row_order", None),  # None: the path's own (spark_paths.run)
        "out": str(out),
    }
    script = REPO / "benchmarks" / "spark_paths.py"
    submitted = time.time()
    token = f"{config['run_id']}"
    roots = node_roots(hook, cluster_id)
    with TreeSampler(roots) as sampler:
        run_id = hook._submit_script(cluster_id, script, ["--config", json.dumps(config)], token)
        while True:
            status = hook.get_run_status(run_id)
            if status.state.is_terminal:
                break
            time.sleep(0.5)
        ended = time.time()
    if status.state != RunLifecycle.SUCCESS or not out.exists():
        raise RuntimeError(
            f"{path} run {run_id} {status.state}: {status.message}\n{hook.driver_log_tail(run_id, 60)}"
        )
    result = json.loads(out.read_text())
    stamps = result["stamps"]
    result["app_start_s"] = round(stamps["session_ready"] - submitted, 3)
    result["submit_to_end_s"] = round(ended - submitted, 3)
    result.update(sampler.peak(submitted, ended) or {})
    result["cpu_s_timed"] = sampler.cpu_seconds(stamps["timed_start"], stamps["timed_end"])
    result["spark_run_id"] = run_id
    # time the application spends outside scoring (the cluster's up and delete are added by main)
    result["fixed_overhead_s"] = round(
        result["app_start_s"]
        + result.get("executors_registered_s", 0.0)
        + result.get("servers_launch_s", 0.0)
        + result["time_to_first_row_s"]
        + result.get("servers_stop_s", 0.0),
        3,
    )
    if path == "triton_udf":
        result["server_count"] = len(result.get("servers", []))
        result["server_omp_num_threads"] = sorted(set(roots.server_omp_threads.values()))
    return result


# -- cleanup check ----------------------------------------------------------------------------


def leftovers(work: Path) -> list[str]:
    """Our Spark/Triton processes still alive: command line or environment points into ``work``."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if proc.pid == os.getpid():
                continue
            if str(work) in cmdline or any(str(work) in v for v in proc.environ().values()):
                found.append(f"{proc.pid}: {cmdline[:150]}")
    return found


# -- report -----------------------------------------------------------------------------------


def agreement(base: dict[str, Any] | None, other: dict[str, Any] | None) -> float | None:
    """How far two paths' outputs of the same check rows agree: the worst cosine similarity of
    embeddings, or the share of generated texts that are equal. ``None`` without both."""
    if not base or not other:
        return None
    values = [(a, other.get(key)) for key, a in base.items()]
    if any(isinstance(a, str) for a, _ in values):
        return round(sum(a == b for a, b in values) / len(values), 6)
    worst = 1.0
    for a, b in values:
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        worst = min(worst, float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
    return round(worst, 6)


def agreement_vs_plain_torch(results: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    base = results.get("plain_torch", {}).get("check")
    return {p: agreement(base, r.get("check")) for p, r in results.items() if p != "plain_torch" and base}


def peer_comparison(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The Triton path against each peer that ran, and against the best of them by rows/s."""
    triton = results.get("triton_udf", {})
    ran = [p for p in PEERS if results.get(p, {}).get("rows_per_s")]
    if not triton.get("rows_per_s") or not ran:
        return {}
    best = max(ran, key=lambda p: results[p]["rows_per_s"])
    out: dict[str, Any] = {
        f"triton_vs_{p}": round(triton["rows_per_s"] / results[p]["rows_per_s"], 3) for p in ran
    }
    out["best_peer"] = best
    out["triton_vs_best_peer"] = out[f"triton_vs_{best}"]
    if triton.get("peak_pss_mb") and results[best].get("peak_pss_mb"):
        out["triton_pss_minus_best_peer_mb"] = round(triton["peak_pss_mb"] - results[best]["peak_pss_mb"], 1)
    return out


def summarize(args, results: dict[str, dict[str, Any]], overhead: dict[str, float], extra: dict) -> dict:
    rps = {p: r.get("rows_per_s") for p, r in results.items()}

    def ratio(a: str, b: str) -> float | None:
        return round(rps[a] / rps[b], 3) if rps.get(a) and rps.get(b) else None

    triton = results.get("triton_udf", {})
    local_overhead = None
    if triton and overhead:
        local_overhead = round(
            overhead["cluster_up_s"]
            + triton.get("servers_launch_s", 0.0)
            + triton["servers_ready_s"]
            + triton["servers_stop_s"]
            + overhead["delete_s"],
            3,
        )
    workload = workload_of(args)
    spark_fixed = overhead.get("cluster_up_s", 0.0) + overhead.get("delete_s", 0.0)
    fixed = {
        p: round(r["fixed_overhead_s"] + (spark_fixed if p in SPARK_PATHS else 0.0), 3)
        for p, r in results.items()
        if r.get("fixed_overhead_s") is not None
    }
    summary = {
        "model": workload.description,
        "model_ref": workload.reference,
        "workload": workload.name,
        "model_options": device_options(args),
        "rows": args.rows,
        "cores": os.cpu_count(),
        "device": args.device or "cpu",
        "gpu": gpu_name() if (args.device or "").startswith("cuda") else None,
        "machine": machine_name(),
        "date": dt.date.today().isoformat(),
        "command": "python -m benchmarks.bench " + " ".join(sys.argv[1:]),
        "rows_per_s": rps,
        "triton_vs_inprocess_udf": ratio("triton_udf", "inprocess_udf"),
        "triton_vs_plain_torch": ratio("triton_udf", "plain_torch"),
        "inprocess_udf_vs_plain_torch": ratio("inprocess_udf", "plain_torch"),
        "peers": peer_comparison(results),
        # each path from nothing running to nothing running, less its scoring (the Spark paths share
        # the cluster's up and delete); the local_overhead_s below is issue #14's Triton-only sum
        "fixed_overhead_s": fixed,
        "local_overhead_s": local_overhead,
        "local_overhead_breakdown_s": {
            **overhead,
            "servers_launch_s": triton.get("servers_launch_s"),
            "servers_ready_s": triton.get("servers_ready_s"),
            "servers_stop_s": triton.get("servers_stop_s"),
        },
        "app_start_s": {p: r.get("app_start_s") for p, r in results.items() if "app_start_s" in r},
        # Not in the overhead: both Spark paths wait for the executors before they read (the app's start).
        "executors_registered_s": {
            p: r["executors_registered_s"] for p, r in results.items() if "executors_registered_s" in r
        },
        "time_to_first_row_s": {p: r.get("time_to_first_row_s") for p, r in results.items()},
        "peak_rss_mb": {p: r.get("peak_rss_mb") for p, r in results.items()},
        "peak_pss_mb": {p: r.get("peak_pss_mb") for p, r in results.items()},
        "peak_rss_by_category_mb": {p: r.get("peak_rss_by_category_mb") for p, r in results.items()},
        # CPU of the timed window over the rows scored in it (Ray's steady window holds only part)
        "cpu_ms_per_row": {
            p: round(1000 * r["cpu_s_timed"] / (r.get("steady_rows") or r["rows"]), 3)
            if r.get("cpu_s_timed")
            else None
            for p, r in results.items()
        },
        "infer_s": {p: r.get("infer_s") for p, r in results.items()},
        "delta_read_s": {p: r.get("delta_read_s") for p, r in results.items()},
        "agreement_vs_plain_torch": agreement_vs_plain_torch(results),
        "agreement_measure": "min cosine" if workload.kind == "embedding" else "share of equal texts",
        "gives_up": {p: GIVES_UP[p] for p in PATHS if p in results},
        "mlflow_log_model_s": extra.get("mlflow_log_model_s"),
        "versions": extra.get("versions"),
        "settings": {
            "batch_size": args.batch_size,
            "partitions": args.partitions,
            "workers": args.workers,
            "executor_cores": 1,
            "server_model_options": json.loads(args.server_options),
            "job_settings": args.job_settings,
            "session_conf": dict(kv.split("=", 1) for kv in args.session_conf),
            "plain_torch_threads": results.get("plain_torch", {}).get("torch_threads"),
        },
        "load_average": extra.get("load_average"),
        # seconds of the one-time run that recorded the JVMs' class-data archives (None: they existed)
        "class_archive_recording_s": extra.get("class_archive_recording_s"),
        "input": extra.get("input"),
        "leftover_processes": extra.get("leftovers"),
        "targets": {},
    }
    t = summary["targets"]
    if summary["triton_vs_inprocess_udf"] is not None:
        goal = TARGETS["triton_vs_inprocess_udf"]
        t[f"triton_vs_inprocess_udf>={goal}"] = summary["triton_vs_inprocess_udf"] >= goal
    if summary["triton_vs_plain_torch"] is not None:
        goal = TARGETS["triton_vs_plain_torch"]
        t[f"triton_vs_plain_torch>={goal}"] = summary["triton_vs_plain_torch"] >= goal
    if local_overhead is not None:
        goal = TARGETS["local_overhead_s"]
        t[f"local_overhead_s<={goal:g}"] = local_overhead <= goal
    if summary["gpu"] and rps.get("triton_udf"):  # issue #14's GPU targets (4 Spark tasks per GPU)
        t["gpu_triton_rows_per_s>=10000"] = rps["triton_udf"] >= 10_000
        if summary["triton_vs_plain_torch"] is not None:
            t["gpu_triton_vs_plain_torch>=0.8"] = summary["triton_vs_plain_torch"] >= 0.8
    peaks = summary["peak_rss_mb"]
    if peaks.get("triton_udf") and peaks.get("inprocess_udf"):
        t["triton_peak_rss<inprocess_udf"] = peaks["triton_udf"] < peaks["inprocess_udf"]
    peers = summary["peers"]
    if peers.get("triton_vs_best_peer") is not None:
        goal = TARGETS["triton_vs_best_peer"]
        t[f"triton_vs_best_peer>={goal:g}"] = peers["triton_vs_best_peer"] >= goal
    if peers.get("triton_pss_minus_best_peer_mb") is not None:
        t["triton_peak_pss<=best_peer"] = peers["triton_pss_minus_best_peer_mb"] <= 0
    summary["details"] = {p: {k: v for k, v in r.items() if k != "check"} for p, r in results.items()}
    return summary


def table(summary: dict[str, Any]) -> str:
    rows = [("path", "rows/s", "infer s", "1st row s", "fixed s", "peak RSS MB", "peak PSS MB", "CPU ms/row")]
    for path in PATHS:
        if summary["rows_per_s"].get(path) is None:
            continue

        def fmt(key: str, path: str = path) -> str:
            value = summary[key].get(path)
            return "-" if value is None else f"{value:g}"

        rows.append(
            (LABELS[path], fmt("rows_per_s"), fmt("infer_s"), fmt("time_to_first_row_s"), fmt("fixed_overhead_s"),
             fmt("peak_rss_mb"), fmt("peak_pss_mb"), fmt("cpu_ms_per_row"))
        )  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    o = summary["local_overhead_breakdown_s"]
    lines += [
        "",
        f"model {summary['model']}, {summary['rows']} documents, {summary['cores']} cores, device {summary['device']}",
        f"path 3 / path 2 = {summary['triton_vs_inprocess_udf']}   (target >= {TARGETS['triton_vs_inprocess_udf']})",
        f"path 3 / path 1 = {summary['triton_vs_plain_torch']}   (target >= {TARGETS['triton_vs_plain_torch']})",
        "path 3 / peers = "
        + ", ".join(
            f"{k.removeprefix('triton_vs_')} {v}"
            for k, v in summary["peers"].items()
            if k.startswith("triton_vs_")
        )
        + f"   (best peer: {summary['peers'].get('best_peer')}; target >= {TARGETS['triton_vs_best_peer']:g})",
        f"local fixed overhead = {summary['local_overhead_s']} s   (target <= {TARGETS['local_overhead_s']:g}): "
        + ", ".join(f"{k} {v}" for k, v in o.items()),
        f"Spark app start (submit -> session) = {summary['app_start_s']}",
        f"executors registered (session -> executors, not in the overhead) = {summary['executors_registered_s']}",
        f"{summary['agreement_measure']} vs plain torch = {summary['agreement_vs_plain_torch']}",
        "targets: " + ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in summary["targets"].items()),
        "",
        "what each path gives up against the package's nightly job:",
        *(f"  {LABELS[p].split(' ', 1)[0]} {p}: {note}" for p, note in summary["gives_up"].items()),
    ]
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------------


def record_class_archives(hook, spec, work: Path) -> float | None:
    """Record the local cluster's class-data archives if this machine has none yet; their seconds.

    The first local run on a machine (per JDK and Spark install) records the archives every later
    JVM maps (``backends/local/jvm_archive.py``): it runs slower and its cluster's delete waits for
    the master's and workers' dumps. The fixed overhead is what every nightly run pays, so a fresh
    clone's first ``make bench`` first runs the nightly job once on a few rows, on a cluster of its
    own (the executors record on the job's request, the daemons when the cluster stops), and
    reports that set-up apart (``class_archive_recording_s``). ``None``: nothing to record.
    """
    from airflow_spark_triton.backends.base import RunLifecycle
    from airflow_spark_triton.backends.local import commands, jvm_archive
    from spark_jobs.contract import InferenceJobConfig

    spark_home = str(commands.spark_home())
    roles = jvm_archive.RUN_ROLES + jvm_archive.DAEMON_ROLES
    archives = [jvm_archive.archive_path(spark_home, role) for role in roles]
    if any(path is None for path in archives) or all(path.is_file() for path in archives):
        return None
    log("recording the local JVMs' class-data archives (once per machine): the nightly job on 64 rows")
    started = time.monotonic()
    table = work / "data" / "archive-warmup"
    make_input(table, 64)
    cluster_id = hook.create_cluster(spec, {"purpose": "bench-class-archives"})
    try:
        hook.wait_for_cluster(cluster_id, 300)
        job = InferenceJobConfig(
            input_table=str(table), output_table=f"{table}_out", model=MODEL, logical_date=DATE
        )
        run_id = hook.submit_job(cluster_id, job, f"bench-archives-{os.getpid()}")
        deadline = time.monotonic() + ARCHIVE_RUN_LIMIT_S
        while not (status := hook.get_run_status(run_id)).state.is_terminal:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"class-archive run {run_id} still {status.state} after {ARCHIVE_RUN_LIMIT_S} s"
                )
            time.sleep(1)
        if status.state != RunLifecycle.SUCCESS:
            raise RuntimeError(f"class-archive run {run_id} {status.state}: {status.message}")
    finally:
        hook.delete_cluster(cluster_id)
    seconds = round(time.monotonic() - started, 1)
    missing = [role for role, path in zip(roles, archives, strict=True) if not path.is_file()]
    log(f"class-data archives recorded in {seconds} s" + (f"; not recorded: {missing}" if missing else ""))
    return seconds


def bench_workdir(kind: str) -> Path:
    """A fresh directory for one benchmark run; everything the run starts lives under it (Airflow's
    home, the cluster home, the data), and the models load offline."""
    work = RESULTS / "tmp" / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    work.mkdir(parents=True)
    os.environ.update(
        {
            "AIRFLOW_HOME": str(work / "airflow"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_SPARK_TRITON_HOME": str(work / "spark_triton"),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "false"),
            **MLFLOW_ENV,  # the cluster's processes inherit it: mlflow_udf's workers send nothing
        }
    )
    return work


def result_name(summary: dict[str, Any]) -> str:
    """``<date>-<machine>[-<model>].json``: MiniLM's keeps the name of the runs before issue #26."""
    suffix = "" if summary["workload"] == MINILM.name else f"-{summary['workload']}"
    return f"{summary['date']}-{summary['machine']}{suffix}.json"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    paths = [p for p in args.paths.split(",") if p]
    unknown = sorted(set(paths) - set(PATHS))
    if unknown:
        raise SystemExit(f"--paths: unknown path(s) {unknown}; choose from {', '.join(PATHS)}")
    work = bench_workdir("run")
    os.environ.pop("OMP_NUM_THREADS", None)
    args.workload = prepare(args.model, MODELS_DIR)
    table_path = work / "data" / "documents"
    log(f"writing {args.rows} documents to {table_path}")
    extra: dict[str, Any] = {"input": make_input(table_path, args.rows), "load_average": {}, "versions": {}}
    check_ids = [1, 2, 3, args.rows // 2, args.rows]
    results: dict[str, dict[str, Any]] = {}
    overhead: dict[str, float] = {}

    if "mlflow_udf" in paths:  # set-up, not timed: a team logs its model once
        log("logging the model to a local MLflow store (set-up of path 5)")
        args.mlflow = log_mlflow_model(args, work)
        extra["mlflow_log_model_s"] = args.mlflow["log_s"]
        extra["versions"]["mlflow"] = args.mlflow["mlflow_version"]
        log(f"logged {args.mlflow['model_uri']} in {args.mlflow['log_s']} s")

    if "plain_torch" in paths:
        log("path 1: plain torch, one process")
        extra["load_average"]["plain_torch"] = round(os.getloadavg()[0], 2)
        results["plain_torch"] = run_plain_torch(args, table_path, work, check_ids)
        log(f"path 1: {results['plain_torch']['rows_per_s']} rows/s")

    if "ray_data" in paths:
        log("path 4: Ray Data, a local Ray instance")
        extra["load_average"]["ray_data"] = round(os.getloadavg()[0], 2)
        results["ray_data"] = run_ray(args, table_path, work, check_ids)
        extra["versions"]["ray"] = results["ray_data"].get("ray_version")
        log(f"path 4: {results['ray_data'].get('rows_per_s')} rows/s")

    spark_paths = [p for p in SPARK_PATHS if p in paths]
    if spark_paths:
        from airflow_spark_triton.backends.local.backend import LocalSparkBackend
        from airflow_spark_triton.cluster_spec import GpuClusterSpec

        hook = LocalSparkBackend(spark_triton_conn_id=None, home=str(work / "spark_triton"))
        jvm_conf = {}
        if args.jvm_options is not None:
            jvm_conf = dict.fromkeys(
                ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions"), args.jvm_options
            )
        extra["jvm_options"] = args.jvm_options
        spec = GpuClusterSpec(
            num_workers=args.workers, executor_cores=1, worker_memory="2g", spark_conf=jvm_conf
        )
        extra["class_archive_recording_s"] = record_class_archives(hook, spec, work)
        cluster_id = None
        started = time.monotonic()
        try:
            log(f"creating a local Spark cluster: {args.workers} workers x 1 core")
            cluster_id = hook.create_cluster(spec, {"purpose": "bench"})
            overhead["create_s"] = round(time.monotonic() - started, 3)
            hook.wait_for_cluster(cluster_id, 300)
            overhead["cluster_up_s"] = round(time.monotonic() - started, 3)
            log(f"cluster {cluster_id} up in {overhead['cluster_up_s']} s")
            for path in spark_paths:
                log(f"path {PATHS.index(path) + 1}: {path}")
                extra["load_average"][path] = round(os.getloadavg()[0], 2)
                results[path] = run_spark_path(hook, cluster_id, path, args, table_path, work, check_ids)
                log(f"path {PATHS.index(path) + 1}: {results[path]['rows_per_s']} rows/s")
        finally:
            if cluster_id:
                started = time.monotonic()
                hook.delete_cluster(cluster_id)
                overhead["delete_s"] = round(time.monotonic() - started, 3)
                log(f"cluster {cluster_id} deleted in {overhead['delete_s']} s")
    deadline = time.monotonic() + 20
    left = leftovers(work)
    while left and time.monotonic() < deadline:
        time.sleep(1)
        left = leftovers(work)
    extra["leftovers"] = left
    if left:
        log("WARNING: processes left running:\n" + "\n".join(left))

    summary = summarize(args, results, overhead, extra)
    default_dir = RESULTS / "tmp" if args.quick else RESULTS
    out = Path(args.out) if args.out else default_dir / result_name(summary)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, sort_keys=False) + "\n")
    print()
    print(table(summary))
    print(f"\nresults: {out}")
    if not args.no_chart:
        from benchmarks.chart import write_chart

        png = write_chart(summary, out.with_suffix(".png"))
        print(f"chart:   {png}")
    shutil.rmtree(work / "data", ignore_errors=True)
    shutil.rmtree(work / "mlflow", ignore_errors=True)  # the store holds a copy of the model
    return 1 if left else 0


if __name__ == "__main__":
    raise SystemExit(main())
