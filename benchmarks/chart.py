"""The PNG next to each result JSON: throughput, peak memory per node, fixed overhead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.comparison import PATHS, TARGETS

SHORT = {
    "plain_torch": "1. plain torch",
    "inprocess_udf": "2. in-process UDF",
    "triton_udf": "3. Triton UDF",
    "ray_data": "4. Ray Data",
    "mlflow_udf": "5. MLflow spark_udf",
}
COLORS = {
    "plain_torch": "#7f7f7f",
    "inprocess_udf": "#1f77b4",
    "triton_udf": "#76b900",
    "ray_data": "#ff7f0e",
    "mlflow_udf": "#9467bd",
}


def write_chart(summary: dict[str, Any], target: Path) -> Path:
    """Four panels, one bar per path that ran: rows/s, peak PSS per node, CPU ms per row, and the
    fixed overhead (Triton's issue #14 breakdown in that panel's title)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [p for p in PATHS if summary["rows_per_s"].get(p)]
    fig, axes = plt.subplots(2, 2, figsize=(15, 9))
    peers = summary.get("peers") or {}
    panels = (
        ("rows_per_s", "rows/s (higher is better)",
         f"Throughput: 3/2 = {summary['triton_vs_inprocess_udf']}, 3/1 = {summary['triton_vs_plain_torch']}, "
         f"3/best peer = {peers.get('triton_vs_best_peer')} ({peers.get('best_peer')})"),
        ("peak_pss_mb", "MB (PSS summed over one node's processes)", "Peak memory per node (PSS)"),
        ("cpu_ms_per_row", "CPU ms per row (lower is better)", "CPU per row (the node's processes, timed window)"),
        ("fixed_overhead_s", "seconds (lower is better)",
         f"Fixed overhead; Triton's local overhead {summary['local_overhead_s']} s "
         f"(target <= {TARGETS['local_overhead_s']:g})"),
    )  # fmt: skip
    for ax, (key, ylabel, title) in zip(axes.flat, panels, strict=True):
        values = [(summary.get(key) or {}).get(p) or 0.0 for p in paths]
        bars = ax.bar([SHORT[p] for p in paths], values, color=[COLORS[p] for p in paths])
        ax.bar_label(bars, fmt="%.1f" if key == "fixed_overhead_s" else "%.0f")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.margins(y=0.12)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(
        f"{summary['model']} - {summary['rows']} rows - {summary['cores']} cores - device {summary['device']} - "
        f"{summary['machine']} - {summary['date']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target


def write_workers_chart(summary: dict[str, Any], target: Path) -> Path:
    """Workers per node (benchmarks.workers_per_node): rows/s, peak PSS and CPU per row against N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["table"]
    workers = [r["python_workers"] for r in rows]
    paths = ("inprocess_udf", "triton_udf")
    prefix = {"inprocess_udf": "inprocess", "triton_udf": "triton"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    width = 0.38
    panels = (
        ("rows_per_s", "rows/s (higher is better)", "Throughput, one node"),
        ("peak_pss_mb", "MB (PSS summed over the node's processes)", "Peak memory per node (PSS)"),
        ("cpu_ms_per_row", "CPU ms per row (lower is better)", "CPU per row"),
    )
    for ax, (key, ylabel, title) in zip(axes, panels, strict=True):
        for offset, path in zip((-width / 2, width / 2), paths, strict=True):
            values = [r.get(f"{prefix[path]}_{key}") or 0.0 for r in rows]
            bars = ax.bar(
                [i + offset for i in range(len(rows))], values, width, color=COLORS[path], label=SHORT[path]
            )
            ax.bar_label(bars, fmt="%.0f", fontsize=8)
        ax.set_xticks(range(len(rows)), [f"{n} worker{'s' if n > 1 else ''}" for n in workers])
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.margins(y=0.12)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=9)
    top = rows[-1] if rows else {}
    axes[0].set_title(
        f"Throughput, one node: 3/2 = {top.get('triton_vs_inprocess_rows_per_s')} at {workers[-1]}"
    )
    axes[1].set_title(
        f"Peak PSS per node: path 3 saves {top.get('pss_saved_model_copies')} model copies at {workers[-1]}"
    )
    fig.suptitle(
        f"{summary['model']} - {summary['rows']} docs - workers per node - {summary['cores']} cores - "
        f"one model copy {summary['model_copy_mb'].get('model_uss_mb')} MB - {summary['machine']} - {summary['date']}",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.chart RESULT.json``: (re)draw a result's PNG next to it, e.g. where
    the benchmark ran without matplotlib (the ``[bench]`` extra)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("result", type=Path)
    result = parser.parse_args(argv).result
    summary = json.loads(result.read_text())
    draw = write_workers_chart if summary.get("benchmark") == "workers_per_node" else write_chart
    print(draw(summary, result.with_suffix(".png")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
