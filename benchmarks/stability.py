"""Which ``make bench`` size gives ratios that repeat? The comparison, 3 times at each of several sizes.

A ratio of two paths' rows/s measured on a few thousand rows moves from run to run (issue #26: ±10%
at 3,000 documents on this 2-core machine), because each path's timed window is seconds long and
anything else on the machine lands in one window and not the other. This runs
``python -m benchmarks.bench`` ``--repeats`` times at each size (default 3,000, 20,000 and 50,000
documents, one after the other, each a fresh process, cluster and Ray instance), and prints, per
size and per ratio (Triton over in-process, over plain torch, over each peer and the best peer), the
runs' values, their mean and their spread: half the range over the mean, as ±%. The smallest size
whose every ratio repeats within ``--tolerance`` (±3%) is the one ``make bench`` should run.

Usage::

    python -m benchmarks.stability                          # 3 x (3k, 20k, 50k): about 3 h on 2 idle cores
    python -m benchmarks.stability --sizes 300,600 --repeats 2 --paths plain_torch,triton_udf   # smoke

Run it on an otherwise idle machine (``uptime``: 1-minute load under 1.5 before it starts): the
spread is what the machine's own noise does to the ratios, not a neighbour's test suite. Every run's
JSON is kept under ``results/tmp/stability-<stamp>/``; the summary goes to
``results/<date>-<machine>-stability.json`` (``results/tmp/`` for sizes below 3,000).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.bench import REPO, RESULTS, exit_on_sigterm, log, machine_name, stop_child
from benchmarks.comparison import PATHS, PEERS

RATIOS = (
    ("triton_vs_inprocess_udf", ("triton_udf", "inprocess_udf")),
    ("triton_vs_plain_torch", ("triton_udf", "plain_torch")),
    *((f"triton_vs_{peer}", ("triton_udf", peer)) for peer in PEERS),
)
SMOKE_SIZE = 3000  # below this the summary goes under results/tmp/


# -- pure logic (tests/benchmarks/test_stability.py) ------------------------------------------


def ratios_of(summary: dict[str, Any]) -> dict[str, float]:
    """The Triton path's ratios of one bench result, for the paths that ran; and the best peer's."""
    rps = summary.get("rows_per_s") or {}
    out = {}
    for name, (a, b) in RATIOS:
        if rps.get(a) and rps.get(b):
            out[name] = rps[a] / rps[b]
    peers = [rps[p] for p in PEERS if rps.get(p)]
    if rps.get("triton_udf") and peers:
        out["triton_vs_best_peer"] = rps["triton_udf"] / max(peers)
    return out


def spread(values: list[float]) -> dict[str, float] | None:
    """Mean, min, max and the spread (half the range over the mean, in %) of one ratio's runs."""
    if not values:
        return None
    mean = sum(values) / len(values)
    low, high = min(values), max(values)
    return {
        "mean": round(mean, 4),
        "min": round(low, 4),
        "max": round(high, 4),
        "spread_pct": round(100 * (high - low) / 2 / mean, 2) if mean else float("inf"),
        "runs": [round(v, 4) for v in values],
    }


def spreads(runs_by_size: dict[int, list[dict[str, float]]]) -> dict[int, dict[str, dict[str, float]]]:
    """Per size, per ratio: :func:`spread` over that size's runs (a ratio missing from a run is
    left out of that run)."""
    table: dict[int, dict[str, dict[str, float]]] = {}
    for size, runs in sorted(runs_by_size.items()):
        names = sorted({name for run in runs for name in run})
        table[size] = {name: s for name in names if (s := spread([r[name] for r in runs if name in r]))}
    return table


def stable_size(
    table: dict[int, dict[str, dict[str, float]]], tolerance_pct: float, repeats: int
) -> int | None:
    """The smallest size whose every ratio has ``repeats`` runs and repeats within ±``tolerance_pct``."""
    for size in sorted(table):
        ratios = table[size]
        if ratios and all(
            len(r["runs"]) >= repeats and r["spread_pct"] <= tolerance_pct for r in ratios.values()
        ):
            return size
    return None


def format_table(table: dict[int, dict[str, dict[str, float]]], tolerance_pct: float) -> str:
    lines = [f"{'rows':>7}  {'ratio':<26} {'mean':>7} {'min':>7} {'max':>7} {'spread':>8}  runs"]
    lines.append("-" * len(lines[0]))
    for size, ratios in table.items():
        for name, s in ratios.items():
            flag = "" if s["spread_pct"] <= tolerance_pct else "  > tolerance"
            runs = ", ".join(f"{v:.3f}" for v in s["runs"])
            lines.append(
                f"{size:>7}  {name:<26} {s['mean']:>7.3f} {s['min']:>7.3f} {s['max']:>7.3f} "
                f"{'±' + format(s['spread_pct'], '.1f') + '%':>8}  {runs}{flag}"
            )
    return "\n".join(lines)


# -- runs -------------------------------------------------------------------------------------


def run_bench(size: int, repeat: int, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    out = folder / f"rows-{size}-run-{repeat}.json"
    cmd = [sys.executable, "-m", "benchmarks.bench", "--rows", str(size), "--paths", args.paths,
           "--model", args.model, "--out", str(out), "--no-chart"]  # fmt: skip
    log(f"{size} rows, run {repeat}: {' '.join(cmd[2:])} (load average {os.getloadavg()[0]:.2f})")
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=args.run_timeout_s)
    except subprocess.TimeoutExpired:
        output = ""
        log(f"{size} rows, run {repeat}: over {args.run_timeout_s:g} s, stopping it")
    finally:
        stop_child(proc, grace_s=120)  # SIGTERM: the bench deletes its cluster before it exits
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"bench at {size} rows failed (rc {proc.returncode}):\n{output[-3000:]}")
    summary = json.loads(out.read_text())
    summary["_wall_s"] = round(time.monotonic() - started, 1)
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="3000,20000,50000", help="comma-separated document counts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--paths", default=",".join(PATHS), help="bench paths to run (default all five)")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--tolerance", type=float, default=3.0, help="±%% a stable ratio stays within")
    parser.add_argument("--run-timeout-s", type=float, default=7200, help="one bench run's limit")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    try:
        args.size_list = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    if not args.size_list or min(args.size_list) < 100 or args.repeats < 2:
        parser.error("--sizes must be >= 100 documents and --repeats >= 2")
    unknown = set(args.paths.split(",")) - set(PATHS)
    if unknown or "triton_udf" not in args.paths.split(","):
        parser.error(f"--paths must include triton_udf and name only {', '.join(PATHS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = RESULTS / "tmp" / f"stability-{stamp}"
    folder.mkdir(parents=True)
    runs: dict[int, list[dict[str, float]]] = {}
    records: list[dict[str, Any]] = []
    # Sizes interleaved (3k, 20k, 50k, 3k, ...): a slow drift of the machine spreads over every size.
    for repeat in range(1, args.repeats + 1):
        for size in args.size_list:
            summary = run_bench(size, repeat, args, folder)
            ratios = ratios_of(summary)
            runs.setdefault(size, []).append(ratios)
            records.append(
                {
                    "rows": size,
                    "run": repeat,
                    "ratios": {k: round(v, 4) for k, v in ratios.items()},
                    "rows_per_s": summary.get("rows_per_s"),
                    "load_average": summary.get("load_average"),
                    "wall_s": summary["_wall_s"],
                    "result": str(folder / f"rows-{size}-run-{repeat}.json"),
                }
            )
            log(f"{size} rows, run {repeat}: {records[-1]['ratios']} in {summary['_wall_s']} s")
    table = spreads(runs)
    chosen = stable_size(table, args.tolerance, args.repeats)
    result = {
        "benchmark": "stability",
        "machine": machine_name(),
        "date": dt.date.today().isoformat(),
        "command": "python -m benchmarks.stability " + " ".join(sys.argv[1:]),
        "paths": args.paths.split(","),
        "model": args.model,
        "repeats": args.repeats,
        "tolerance_pct": args.tolerance,
        "spreads": {str(size): ratios for size, ratios in table.items()},
        "stable_size": chosen,
        "runs": records,
    }
    default_dir = RESULTS / "tmp" if min(args.size_list) < SMOKE_SIZE else RESULTS
    out = Path(args.out) if args.out else default_dir / f"{result['date']}-{result['machine']}-stability.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(format_table(table, args.tolerance))
    verdict = (
        f"smallest size whose ratios all repeat within ±{args.tolerance:g}%: {chosen} documents"
        if chosen
        else f"no size repeated within ±{args.tolerance:g}% on every ratio"
    )
    print(f"\n{verdict}\nresults: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
