"""The sweep's ratios: each variant against its own round's baseline, then the mean over rounds."""

from __future__ import annotations

from benchmarks.sweep import VARIANTS, mean_vs_baseline, vs_round_baseline


def test_each_round_is_compared_with_its_own_baseline():
    rows = [
        {"variant": "baseline", "round": 1, "path": "triton_udf", "rows_per_s": 100.0},
        {"variant": "table order", "round": 1, "path": "triton_udf", "rows_per_s": 80.0},
        {"variant": "baseline", "round": 2, "path": "triton_udf", "rows_per_s": 150.0},
        {"variant": "table order", "round": 2, "path": "triton_udf", "rows_per_s": 135.0},
    ]
    assert [vs_round_baseline(rows, r) for r in rows] == [1.0, 0.8, 1.0, 0.9]
    assert mean_vs_baseline(rows) == {"baseline": 1.0, "table order": 0.85}
    assert vs_round_baseline([{"round": 1, "path": "inprocess_udf", "rows_per_s": 5.0}], rows[0]) is None


def test_the_row_order_variants_turn_the_jobs_length_order_off():
    assert VARIANTS["rows in table order"] == ("triton_udf", {"row_order": "table"})
    assert VARIANTS["in-process UDF (path 2), rows in table order"][1] == {"row_order": "table"}
