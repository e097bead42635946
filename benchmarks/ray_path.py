"""Peer path: Ray Data, what a team would pick instead of Spark + Triton (Anyscale's batch inference).

Run by :mod:`benchmarks.bench` as its own process, which starts a local Ray instance (``ray.init``
with ``--workers`` CPUs: the same cores as the Spark paths), reads the same Delta table with
``ray.data.read_delta`` (the date filtered, split into ``--partitions`` blocks and materialized: the
read is timed apart, as the Spark paths cache theirs), and scores it with ``map_batches`` over an
actor pool of ``--workers`` actors of one CPU each, one model copy per actor, the same infer
function as every other path, in batches of ``--batch-size``. Writes one JSON result.

Ray's own processes (GCS, raylet, the actors' workers, its agents) are this process's descendants:
they are started on loopback only (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, ``_node_ip_address``
127.0.0.1), with no dashboard, no usage statistics and no auth token written to the home
directory, under a short temp dir of their own (Ray's Unix socket paths must stay under 108
characters); ``ray.shutdown()`` stops them and anything still alive afterwards is killed by pid.

What is timed. An actor pool is started per ``map_batches`` execution (it cannot be warmed up
before, as a Spark Python worker is), so the model loads inside the execution. Each batch carries
its actor's ready time and its own start and end; the steady-state window starts when every actor
has scored its first batch (every model loaded and warm, like the Spark paths' warm-up) and ends
with the last batch; rows/s counts the rows of that window (a batch straddling its start counts
in proportion). ``end_to_end_rows_per_s`` is the whole execution, pool start included.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from typing import Any

START_EPOCH = time.time()
# Columns of the stamps every output batch carries (one value per row, read per batch).
STAMPS = ("_actor", "_ready", "_start", "_end")

# Ray's settings for a benchmark on this machine: loopback only, nothing sent anywhere, nothing
# written outside its temp dir.
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # Linux too: the node's address is 127.0.0.1
    "RAY_AUTH_MODE": "disabled",  # else ray.init writes a token to ~/.ray/auth_token
    "RAY_DEDUP_LOGS": "0",
    # Ray starts its workers at nice 15; the other paths' Python workers run at 0, and on a shared
    # machine a niced pool measures its neighbours, not Ray
    "RAY_worker_niceness": "0",
}


def steady_window(batches: list[tuple[float, float, float, int, str]]) -> dict[str, float] | None:
    """The steady-state rate of an actor pool from its batches ``(ready, start, end, rows, actor)``.

    The window opens when every actor has finished its first batch and closes with the last batch;
    a batch counts with the share of its duration inside the window. ``None`` without a window
    (a single batch per actor, or none).
    """
    if not batches:
        return None
    firsts: dict[str, float] = {}
    for _ready, _start, end, _rows, actor in batches:
        firsts[actor] = min(end, firsts.get(actor, end))
    opens, closes = max(firsts.values()), max(end for _, _, end, _, _ in batches)
    if closes <= opens:
        return None
    rows = 0.0
    for _ready, start, end, count, _actor in batches:
        inside = min(end, closes) - max(start, opens)
        if inside > 0:
            rows += count * inside / (end - start) if end > start else count
    return {"opens": opens, "closes": closes, "rows": rows, "rows_per_s": rows / (closes - opens)}


class Predictor:
    """One actor of the pool: one model copy, loaded once, scoring the batches it is given."""

    def __init__(self, reference: str, options: dict[str, Any], output: str):
        import numpy as np

        from spark_jobs.models.references import resolve_model

        self._np = np
        self._infer = resolve_model(reference).load(options)
        self._output = output
        self._actor = f"{os.getpid()}"
        self._ready = time.time()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        np = self._np
        start = time.time()
        text = np.array([t.encode("utf-8") for t in batch["text"]], dtype=np.object_).reshape(-1, 1)
        out = self._infer(text)[self._output]
        end = time.time()
        rows = len(batch["id"])
        values = np.asarray(out) if not isinstance(out, list) else np.array(out, dtype=np.object_)
        return {
            "id": batch["id"],
            self._output: values,
            "_actor": np.full(rows, self._actor, dtype=np.object_),
            "_ready": np.full(rows, self._ready),
            "_start": np.full(rows, start),
            "_end": np.full(rows, end),
        }


def run(args: argparse.Namespace, result: dict[str, Any]) -> None:
    import ray
    from ray.data.expressions import col

    check_ids = {int(i) for i in args.check_ids.split(",") if i}
    started = time.monotonic()
    ray.init(
        num_cpus=args.workers,
        num_gpus=args.num_gpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=args.temp_dir,
        log_to_driver=False,
        configure_logging=False,
    )
    result["ray_init_s"] = round(time.monotonic() - started, 3)
    result["ray_version"] = ray.__version__
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        started = time.monotonic()
        docs = (
            ray.data.read_delta(args.input, columns=["id", "text", "date"])
            .filter(expr=col("date") == args.date)
            .select_columns(["id", "text"])
            .repartition(args.partitions)
            .materialize()
        )
        result["rows"] = docs.count()
        result["delta_read_s"] = round(time.monotonic() - started, 3)

        options = {**json.loads(args.model_options), "torch_threads": 1}
        scored = docs.map_batches(
            Predictor,
            fn_constructor_kwargs={"reference": args.model, "options": options, "output": args.output},
            batch_size=args.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=args.workers),  # one actor (model copy) per CPU
            num_cpus=1,
            # Ray hides the GPUs from an actor that asks for none: the actors share the node's
            num_gpus=args.num_gpus / args.workers if args.num_gpus else None,
        )
        result["stamps"] = {"exec_start": time.time()}
        started = time.monotonic()
        calls: dict[tuple[str, float], list] = {}  # (actor, start) -> [ready, start, end, rows, actor]
        check: dict[str, Any] = {}
        seen = 0
        for batch in scored.iter_batches(batch_size=None, batch_format="numpy"):
            if seen == 0:
                result["time_to_first_row_s"] = round(time.monotonic() - started, 3)
            # one map_batches call = one (actor, start); output blocks can split or merge calls
            stamps = zip(*(batch[k].tolist() for k in STAMPS), strict=True)
            for actor, ready, start, end in stamps:
                calls.setdefault((actor, start), [ready, start, end, 0, actor])[3] += 1
            for row_id, value in zip(batch["id"].tolist(), batch[args.output], strict=True):
                if row_id in check_ids:
                    check[str(row_id)] = value.tolist() if hasattr(value, "tolist") else value
            seen += len(batch["id"])
        batches = [tuple(c) for c in calls.values()]
        result["map_batches_wall_s"] = round(time.monotonic() - started, 3)
        result["stamps"]["exec_end"] = time.time()
        result["scored_rows"] = seen
        result["end_to_end_rows_per_s"] = round(seen / result["map_batches_wall_s"], 1)
        window = steady_window(batches)
        if window:
            result["rows_per_s"] = round(window["rows_per_s"], 1)
            result["infer_s"] = round(window["closes"] - window["opens"], 3)
            result["steady_rows"] = round(window["rows"], 1)
            result["stamps"].update(timed_start=window["opens"], timed_end=window["closes"])
        ready = sorted({b[0] for b in batches})
        result["pool_size"] = args.workers
        result["actors"] = len({b[4] for b in batches})  # the pool's actors that scored a batch
        result["pool_ready_s"] = round(max(ready) - result["stamps"]["exec_start"], 3) if ready else None
        result["batches"] = len(batches)
        result["check"] = check
    finally:
        started = time.monotonic()
        ray.shutdown()
        result["ray_shutdown_s"] = round(time.monotonic() - started, 3)


def stop_leftovers(timeout_s: float = 10.0) -> list[str]:
    """Kill, by pid, whatever of this process's descendants outlived ``ray.shutdown()``."""
    import psutil

    children = psutil.Process().children(recursive=True)
    _gone, alive = psutil.wait_procs(children, timeout=timeout_s)
    left = []
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            left.append(f"{proc.pid} {proc.name()}")
            proc.kill()
    psutil.wait_procs(alive, timeout=timeout_s)
    return left


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input", required=True, help="Delta table (id, text, date)")
    parser.add_argument("--date", required=True)
    parser.add_argument("--model", required=True, help="model reference, as every path takes it")
    parser.add_argument("--model-options", default="{}")
    parser.add_argument("--output", default="embedding", help="the model's output to keep")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="CPUs of the Ray node = actors in the pool")
    parser.add_argument("--partitions", type=int, default=8, help="blocks of the input")
    parser.add_argument("--num-gpus", type=int, default=0, help="GPUs of the Ray node, shared by the actors")
    parser.add_argument("--check-ids", default="")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    os.environ.update(RAY_ENV)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # the bench's stop: ray.shutdown() still runs
    args.temp_dir = tempfile.mkdtemp(prefix="ray-bench-")
    result: dict[str, Any] = {"path": "ray_data", "pid": os.getpid(), "temp_dir": args.temp_dir}
    result["status"] = "failed"  # until run returns
    try:
        run(args, result)
        result["status"] = "ok"
    except BaseException as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        result["ray_processes_killed"] = stop_leftovers()
        result["process_start_epoch"] = START_EPOCH
        shutil.rmtree(args.temp_dir, ignore_errors=True)
        with open(args.out, "w") as handle:
            json.dump(result, handle, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
