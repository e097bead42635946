"""The PNG next to each result JSON: throughput, peak memory per node, fixed overhead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PATHS = ("plain_torch", "inprocess_udf", "triton_udf")
SHORT = {"plain_torch": "1. plain torch", "inprocess_udf": "2. in-process UDF", "triton_udf": "3. Triton UDF"}
COLORS = {"plain_torch": "#7f7f7f", "inprocess_udf": "#1f77b4", "triton_udf": "#76b900"}


def write_chart(summary: dict[str, Any], target: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [p for p in PATHS if summary["rows_per_s"].get(p)]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))

    ax = axes[0]
    values = [summary["rows_per_s"][p] for p in paths]
    bars = ax.bar([SHORT[p] for p in paths], values, color=[COLORS[p] for p in paths])
    ax.bar_label(bars, fmt="%.0f")
    ax.set_ylabel("rows/s (higher is better)")
    ax.set_title(
        f"Throughput: 3/2 = {summary['triton_vs_inprocess_udf']}, 3/1 = {summary['triton_vs_plain_torch']}"
    )

    ax = axes[1]
    categories = ("jvm", "python", "triton")
    cat_colors = {"jvm": "#c49c94", "python": "#1f77b4", "triton": "#76b900"}
    bottoms = [0.0] * len(paths)
    for cat in categories:
        heights = [(summary["peak_rss_by_category_mb"].get(p) or {}).get(cat, 0.0) for p in paths]
        ax.bar([SHORT[p] for p in paths], heights, bottom=bottoms, color=cat_colors[cat], label=cat)
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    for i, p in enumerate(paths):
        ax.text(i, bottoms[i], f"{summary['peak_rss_mb'][p]:.0f}", ha="center", va="bottom")
    ax.set_ylabel("MB (RSS summed over the node's processes)")
    ax.set_title("Peak memory per node")
    ax.legend(loc="upper left", fontsize=8)

    ax = axes[2]
    breakdown = summary["local_overhead_breakdown_s"]
    parts = [
        ("cluster up", breakdown.get("cluster_up_s")),
        ("servers ready", breakdown.get("servers_ready_s")),
        ("servers stop", breakdown.get("servers_stop_s")),
        ("cluster delete", breakdown.get("delete_s")),
    ]
    parts = [(k, v) for k, v in parts if v is not None]
    bars = ax.barh([k for k, _ in parts], [v for _, v in parts], color="#9467bd")
    ax.bar_label(bars, fmt="%.1f s")
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.set_title(f"Local fixed overhead: {summary['local_overhead_s']} s (target <= 30)")

    fig.suptitle(
        f"{summary['model']} - {summary['rows']} docs - {summary['cores']} cores - device {summary['device']} - "
        f"{summary['machine']} - {summary['date']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target
