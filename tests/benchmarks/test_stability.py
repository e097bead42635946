"""The pure logic of benchmarks.stability: the ratios of a run, their spread, the stable size."""

from __future__ import annotations

import json

import pytest

from benchmarks import stability
from benchmarks.stability import (
    format_path_table,
    format_table,
    parse_args,
    path_spreads,
    ratios_of,
    record_of,
    records_in,
    spread,
    spreads,
    stable_size,
)


def test_ratios_of_a_run_are_the_triton_paths_over_each_other_path_and_the_best_peer():
    summary = {
        "rows_per_s": {
            "plain_torch": 200.0,
            "inprocess_udf": 100.0,
            "triton_udf": 110.0,
            "ray_data": 125.0,
            "mlflow_udf": None,
        }
    }
    ratios = ratios_of(summary)
    assert ratios["triton_vs_inprocess_udf"] == pytest.approx(1.1)
    assert ratios["triton_vs_plain_torch"] == pytest.approx(0.55)
    assert ratios["triton_vs_ray_data"] == ratios["triton_vs_best_peer"] == pytest.approx(0.88)
    assert "triton_vs_mlflow_udf" not in ratios, "a path that did not run has no ratio"
    assert ratios_of({"rows_per_s": {"plain_torch": 1.0}}) == {}


def test_spread_is_half_the_range_over_the_mean():
    s = spread([0.97, 1.00, 1.03])
    assert s["mean"] == pytest.approx(1.0) and s["spread_pct"] == pytest.approx(3.0)
    assert (s["min"], s["max"], s["runs"]) == (0.97, 1.03, [0.97, 1.0, 1.03])
    assert spread([]) is None


def _runs():
    # 3k rows swing by ±10%, 20k by ±2%, 50k by ±1%
    return {
        3000: [{"a": 0.9, "b": 1.0}, {"a": 1.1, "b": 1.0}, {"a": 1.0, "b": 1.0}],
        20000: [{"a": 0.98, "b": 1.0}, {"a": 1.02, "b": 1.01}, {"a": 1.0, "b": 0.99}],
        50000: [{"a": 0.99, "b": 1.0}, {"a": 1.01, "b": 1.0}, {"a": 1.0, "b": 1.0}],
    }


def test_the_stable_size_is_the_smallest_whose_every_ratio_repeats_within_the_tolerance():
    table = spreads(_runs())
    assert table[3000]["a"]["spread_pct"] == pytest.approx(10.0)
    assert stable_size(table, 3.0, 3) == 20000
    assert stable_size(table, 1.5, 3) == 50000
    assert stable_size(table, 0.5, 3) is None


def test_a_size_with_a_ratio_missing_from_a_run_is_not_stable():
    runs = _runs()
    del runs[20000][1]["b"]  # a path failed to give its ratio once
    table = spreads(runs)
    assert len(table[20000]["b"]["runs"]) == 2
    assert stable_size(table, 3.0, 3) == 50000


def test_the_table_flags_ratios_beyond_the_tolerance():
    text = format_table(spreads(_runs()), 3.0)
    lines = text.splitlines()
    assert "spread" in lines[0] and set(lines[1]) == {"-"}
    flagged = [line for line in lines if "> tolerance" in line]
    assert len(flagged) == 1 and flagged[0].split()[:2] == ["3000", "a"] and "±10.0%" in flagged[0]


def test_parse_args_reads_sizes_and_refuses_runs_that_cannot_say_anything():
    args = parse_args(["--sizes", "20000,3000", "--repeats", "3"])
    assert args.size_list == [3000, 20000]
    for bad in (
        ["--sizes", "abc"],
        ["--sizes", "50"],
        ["--repeats", "1"],
        ["--paths", "plain_torch,inprocess_udf"],  # no Triton path: no ratio to measure
        ["--paths", "triton_udf,spark"],
    ):
        with pytest.raises(SystemExit):
            parse_args(bad)


def _bench_result(triton: float, inprocess: float, cpu_triton: float, cpu_inprocess: float) -> dict:
    return {
        "workload": "minilm",
        "rows_per_s": {"inprocess_udf": inprocess, "triton_udf": triton, "plain_torch": None},
        "cpu_ms_per_row": {"inprocess_udf": cpu_inprocess, "triton_udf": cpu_triton, "plain_torch": None},
    }


def test_path_spreads_show_the_machine_changing_speed_between_runs(tmp_path):
    records = [
        record_of(3000, 1, _bench_result(110.0, 100.0, 10.0, 11.0), tmp_path / "a.json"),
        record_of(3000, 2, _bench_result(90.0, 100.0, 12.0, 11.0), tmp_path / "b.json"),
    ]
    assert records[0]["ratios"]["triton_vs_inprocess_udf"] == pytest.approx(1.1)
    table = path_spreads(records)
    assert set(table[3000]) == {"inprocess_udf", "triton_udf"}, "a path that did not run is left out"
    assert table[3000]["triton_udf"]["rows_per_s"]["spread_pct"] == pytest.approx(10.0)
    assert table[3000]["triton_udf"]["cpu_ms_per_row"]["spread_pct"] == pytest.approx(100 * 1 / 11, abs=0.01)
    assert table[3000]["inprocess_udf"]["cpu_ms_per_row"]["spread_pct"] == 0.0
    text = format_path_table(table)
    assert "±10.0%" in text and "triton_udf" in text.splitlines()[2] + text.splitlines()[3]


def test_summarize_rebuilds_the_summary_from_a_kept_run_folder(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "stability-20261207-000000"
    folder.mkdir()
    values = {
        (3000, 1): (110.0, 100.0),
        (3000, 2): (90.0, 100.0),
        (20000, 1): (101.0, 100.0),
        (20000, 2): (99.0, 100.0),
    }
    for (size, run), (triton, inprocess) in values.items():
        (folder / f"rows-{size}-run-{run}.json").write_text(
            json.dumps(_bench_result(triton, inprocess, 10.0, 10.0))
        )
    assert [(r["rows"], r["run"]) for r in records_in(folder)] == [
        (3000, 1),
        (20000, 1),
        (3000, 2),
        (20000, 2),
    ]
    out = tmp_path / "summary.json"
    monkeypatch.setattr(stability, "machine_name", lambda: "test-machine")
    assert stability.main(["--summarize", str(folder), "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["repeats"] == 2 and summary["paths"] == ["inprocess_udf", "triton_udf"]
    assert summary["spreads"]["3000"]["triton_vs_inprocess_udf"]["spread_pct"] == pytest.approx(10.0)
    assert summary["stable_size"] == 20000, "±1% at 20k, ±10% at 3k"
    assert summary["path_spreads"]["20000"]["triton_udf"]["rows_per_s"]["spread_pct"] == pytest.approx(1.0)
    assert "smallest size whose ratios all repeat within ±3%: 20000" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no rows-"):
        records_in(tmp_path)
