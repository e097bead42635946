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
    python -m benchmarks.stability --summarize benchmarks/results/tmp/stability-<stamp>   # again, from its runs

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
    parser.add_argument(
        "--summarize",
        default=None,
        metavar="FOLDER",
        help="summarize a kept results/tmp/stability-* folder again",
    )
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


def record_of(size: int, repeat: int, summary: dict[str, Any], result: Path) -> dict[str, Any]:
    """One bench run as the stability summary keeps it: its ratios, and each path's rows/s and CPU
    ms per row (the same path's CPU per row moving from run to run is the machine's speed moving)."""
    return {
        "rows": size,
        "run": repeat,
        "workload": summary.get("workload"),
        "ratios": {k: round(v, 4) for k, v in ratios_of(summary).items()},
        "rows_per_s": summary.get("rows_per_s"),
        "cpu_ms_per_row": summary.get("cpu_ms_per_row"),
        "load_average": summary.get("load_average"),
        "wall_s": summary.get("_wall_s"),
        "result": str(result),
    }


def path_spreads(records: list[dict[str, Any]]) -> dict[int, dict[str, dict[str, Any]]]:
    """Per size, per path: :func:`spread` of its rows/s and of its CPU ms per row over the runs.

    A ratio of two paths that ran one after the other moves when the machine's speed moves between
    them; the CPU each path spends per row on the same forward passes shows whether it did."""
    table: dict[int, dict[str, dict[str, Any]]] = {}
    for size in sorted({r["rows"] for r in records}):
        runs = [r for r in records if r["rows"] == size]
        paths = sorted({p for r in runs for p, v in (r.get("rows_per_s") or {}).items() if v})
        table[size] = {
            path: {
                key: spread([v for r in runs if (v := (r.get(key) or {}).get(path))])
                for key in ("rows_per_s", "cpu_ms_per_row")
            }
            for path in paths
        }
    return table


def format_path_table(table: dict[int, dict[str, dict[str, Any]]]) -> str:
    lines = [
        f"{'rows':>7}  {'path':<14} {'rows/s mean':>11} {'spread':>8}  {'CPU ms/row mean':>15} {'spread':>8}"
    ]
    lines.append("-" * len(lines[0]))
    for size, paths in table.items():
        for path, s in paths.items():
            rps, cpu = s["rows_per_s"], s["cpu_ms_per_row"]
            cells = [
                f"{x['mean']:>{w}.{d}f} {'±' + format(x['spread_pct'], '.1f') + '%':>8}"
                if x
                else f"{'-':>{w}} {'-':>8}"
                for x, w, d in ((rps, 11, 1), (cpu, 15, 2))
            ]
            lines.append(f"{size:>7}  {path:<14} {cells[0]}  {cells[1]}")
    return "\n".join(lines)


def summarize(records: list[dict[str, Any]], args: argparse.Namespace, command: str) -> int:
    """The spreads of the runs' ratios and paths, the stable size; written as JSON and printed."""
    runs: dict[int, list[dict[str, float]]] = {}
    for record in records:
        runs.setdefault(record["rows"], []).append(record["ratios"])
    table = spreads(runs)
    chosen = stable_size(table, args.tolerance, args.repeats)
    paths = path_spreads(records)
    result = {
        "benchmark": "stability",
        "machine": machine_name(),
        "date": dt.date.today().isoformat(),
        "command": command,
        "paths": args.paths.split(","),
        "model": args.model,
        "repeats": args.repeats,
        "tolerance_pct": args.tolerance,
        "spreads": {str(size): ratios for size, ratios in table.items()},
        "path_spreads": {str(size): by_path for size, by_path in paths.items()},
        "stable_size": chosen,
        "runs": records,
    }
    sizes = sorted(runs)
    default_dir = RESULTS / "tmp" if min(sizes) < SMOKE_SIZE else RESULTS
    out = Path(args.out) if args.out else default_dir / f"{result['date']}-{result['machine']}-stability.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(format_table(table, args.tolerance))
    print()
    print(format_path_table(paths))
    verdict = (
        f"smallest size whose ratios all repeat within ±{args.tolerance:g}%: {chosen} documents"
        if chosen
        else f"no size repeated within ±{args.tolerance:g}% on every ratio"
    )
    print(f"\n{verdict}\nresults: {out}")
    return 0


def records_in(folder: Path) -> list[dict[str, Any]]:
    """The records of a kept run folder's ``rows-<size>-run-<n>.json`` results, in run order."""
    found = []
    for result in folder.glob("rows-*-run-*.json"):
        _, size, _, repeat = result.stem.split("-")
        found.append(record_of(int(size), int(repeat), json.loads(result.read_text()), result))
    if not found:
        raise SystemExit(f"no rows-<size>-run-<n>.json results in {folder}")
    return sorted(found, key=lambda r: (r["run"], r["rows"]))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python -m benchmarks.stability " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.summarize:  # the summary again, from the runs a stability run kept; nothing runs
        records = records_in(Path(args.summarize))
        args.repeats = max(r["run"] for r in records)
        args.model = records[0]["workload"] or args.model
        args.paths = ",".join(sorted({p for r in records for p, v in (r["rows_per_s"] or {}).items() if v}))
        return summarize(records, args, command)
    exit_on_sigterm()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = RESULTS / "tmp" / f"stability-{stamp}"
    folder.mkdir(parents=True)
    records: list[dict[str, Any]] = []
    # Sizes interleaved (3k, 20k, 50k, 3k, ...): a slow drift of the machine spreads over every size.
    for repeat in range(1, args.repeats + 1):
        for size in args.size_list:
            summary = run_bench(size, repeat, args, folder)
            records.append(record_of(size, repeat, summary, folder / f"rows-{size}-run-{repeat}.json"))
            log(f"{size} rows, run {repeat}: {records[-1]['ratios']} in {summary['_wall_s']} s")
    return summarize(records, args, command)


if __name__ == "__main__":
    raise SystemExit(main())
