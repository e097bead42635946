"""The pure logic of benchmarks.workers_per_node: the side-by-side table and its ratios."""

from __future__ import annotations

import pytest

from benchmarks.workers_per_node import compare, format_table, parse_args, pss_growth_per_worker, slope


def _configs() -> dict[int, dict[str, dict[str, float]]]:
    # path 2 grows by 300 MB per worker, path 3 stays at 1500 MB
    return {
        n: {
            "inprocess_udf": {
                "rows_per_s": 100.0,
                "cpu_ms_per_row": 12.0,
                "peak_rss_mb": 900.0 + 400 * n,
                "peak_pss_mb": 700.0 + 300 * n,
            },
            "triton_udf": {
                "rows_per_s": 50.0 * n,
                "cpu_ms_per_row": 11.0,
                "peak_rss_mb": 1800.0,
                "peak_pss_mb": 1500.0,
            },
        }
        for n in (1, 2, 4)
    }


def test_slope_is_the_least_squares_fit_and_undefined_for_fewer_than_two_distinct_x():
    assert slope([(1, 10.0), (2, 20.0), (4, 40.0)]) == pytest.approx(10.0)
    assert slope([(1, 0.0), (2, 3.0), (3, 3.0)]) == pytest.approx(1.5)
    assert slope([(1, 10.0)]) is None
    assert slope([(2, 10.0), (2, 12.0)]) is None


def test_compare_puts_both_paths_side_by_side_with_ratio_and_model_copies_saved():
    rows = compare(_configs(), model_copy_mb=250.0)
    assert [r["python_workers"] for r in rows] == [1, 2, 4]
    one, four = rows[0], rows[-1]
    assert one["triton_vs_inprocess_rows_per_s"] == 0.5
    assert four["triton_vs_inprocess_rows_per_s"] == 2.0
    assert one["pss_saved_mb"] == -500.0  # at 1 worker the server is the extra process
    assert four["pss_saved_mb"] == 400.0  # 700 + 1200 - 1500
    assert four["pss_saved_model_copies"] == 1.6
    assert four["inprocess_peak_rss_mb"] == 2500.0 and four["triton_peak_rss_mb"] == 1800.0


def test_compare_leaves_gaps_for_a_missing_path_or_copy_size():
    configs = {4: {"triton_udf": {"rows_per_s": 10.0, "peak_pss_mb": 1.0}}}
    (row,) = compare(configs, model_copy_mb=None)
    assert row["inprocess_rows_per_s"] is None
    assert row["triton_vs_inprocess_rows_per_s"] is None
    assert row["pss_saved_mb"] is None and row["pss_saved_model_copies"] is None
    assert compare({4: {**_configs()[4]}}, model_copy_mb=None)[0]["pss_saved_model_copies"] is None


def test_pss_growth_per_worker_is_one_model_copy_for_path_2_and_flat_for_path_3():
    assert pss_growth_per_worker(_configs()) == {"inprocess_udf": 300.0, "triton_udf": 0.0}


def test_format_table_has_one_line_per_configuration_and_dashes_for_gaps():
    rows = compare(_configs(), model_copy_mb=250.0)
    rows[0]["triton_cpu_ms_per_row"] = None
    text = format_table(rows, 250.0)
    lines = text.splitlines()
    assert "3/2" in lines[0] and "= model copies" in lines[0]
    assert set(lines[1]) == {"-"}
    assert lines[2].split()[0] == "1" and " - " in lines[2]
    assert lines[4].split()[0] == "4" and lines[4].split()[-1] == "1.6"
    assert "250.0 MB" in text


def test_parse_args_reads_worker_counts_and_rejects_bad_ones():
    args = parse_args(["--workers", "4,1,2,2", "--rows", "300"])
    assert args.worker_counts == [1, 2, 4] and args.rows == 300
    for bad in (["--workers", "0,2"], ["--workers", "two"], ["--paths", "plain_torch"]):
        with pytest.raises(SystemExit):
            parse_args(bad)
