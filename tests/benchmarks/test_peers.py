"""The pure logic of the peer comparison (issue #26): Ray's steady-state window, the agreement of the
paths' outputs, the Triton path against the best peer, the node's share of a sampled tree."""

from __future__ import annotations

import argparse

import pytest

from benchmarks.bench import (
    RAY_HEAD,
    RAY_NODE,
    agreement,
    device_options,
    parse_args,
    peer_comparison,
    result_name,
)
from benchmarks.chart import COLORS, SHORT
from benchmarks.comparison import GIVES_UP, LABELS, PATHS, PEERS, SPARK_PATHS
from benchmarks.ray_path import RAY_ENV, steady_window
from benchmarks.sampler import Sample, TreeSampler
from benchmarks.workloads import GENERATED_TOKENS, MINILM, T5_SMALL


def test_every_path_has_a_label_a_colour_and_a_note_of_what_it_gives_up():
    assert PATHS[-2:] == PEERS == ("ray_data", "mlflow_udf")
    for table in (LABELS, GIVES_UP, SHORT, COLORS):
        assert set(table) == set(PATHS)
    assert set(SPARK_PATHS) < set(PATHS) and "ray_data" not in SPARK_PATHS
    assert "Delta" in GIVES_UP["ray_data"] and "teardown" in GIVES_UP["ray_data"]


def test_ray_runs_on_loopback_and_reports_nothing():
    assert RAY_ENV["RAY_USAGE_STATS_ENABLED"] == "0"
    assert RAY_ENV["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0", "else Ray binds the node's own address"
    assert RAY_ENV["RAY_AUTH_MODE"] == "disabled", "else ray.init writes ~/.ray/auth_token"


def test_the_steady_window_opens_when_every_actor_has_scored_a_batch():
    # (ready, start, end, rows, actor): actor a is warm at t=10, actor b only at t=20
    batches = [
        (5.0, 6.0, 10.0, 64, "a"),
        (10.0, 10.0, 14.0, 64, "a"),
        (10.0, 14.0, 18.0, 64, "a"),
        (10.0, 18.0, 22.0, 64, "a"),  # half inside the window
        (15.0, 16.0, 20.0, 64, "b"),  # b's first batch closes the warm-up
        (15.0, 20.0, 24.0, 64, "b"),
        (15.0, 24.0, 28.0, 64, "b"),
    ]
    window = steady_window(batches)
    assert window["opens"] == 20.0 and window["closes"] == 28.0
    assert window["rows"] == pytest.approx(32 + 64 + 64)
    assert window["rows_per_s"] == pytest.approx(160 / 8)


def test_no_steady_window_without_batches_after_the_warm_up():
    assert steady_window([]) is None
    assert steady_window([(0.0, 1.0, 2.0, 64, "a"), (0.0, 1.0, 2.0, 64, "b")]) is None


def test_agreement_is_the_worst_cosine_of_embeddings_and_the_share_of_equal_texts():
    base = {"1": [1.0, 0.0], "2": [0.0, 1.0]}
    assert agreement(base, {"1": [2.0, 0.0], "2": [0.0, 3.0]}) == 1.0
    assert agreement(base, {"1": [1.0, 1.0], "2": [0.0, 1.0]}) == pytest.approx(0.707107, abs=1e-6)
    assert agreement({"1": "le chat", "2": "la maison"}, {"1": "le chat", "2": "le chien"}) == 0.5
    assert agreement(None, base) is None and agreement(base, {}) is None


def test_the_triton_path_is_compared_with_the_faster_peer():
    results = {
        "triton_udf": {"rows_per_s": 120.0, "peak_pss_mb": 2400.0},
        "ray_data": {"rows_per_s": 150.0, "peak_pss_mb": 2000.0},
        "mlflow_udf": {"rows_per_s": 100.0, "peak_pss_mb": 2900.0},
    }
    peers = peer_comparison(results)
    assert peers["best_peer"] == "ray_data"
    assert peers["triton_vs_ray_data"] == peers["triton_vs_best_peer"] == 0.8
    assert peers["triton_vs_mlflow_udf"] == 1.2
    assert peers["triton_pss_minus_best_peer_mb"] == 400.0
    assert peer_comparison({"triton_udf": {"rows_per_s": 1.0}}) == {}, "no peer ran"
    assert peer_comparison({"ray_data": {"rows_per_s": 1.0}}) == {}, "no Triton path"


def test_generation_options_fix_the_tokens_of_every_row_on_every_path():
    args = parse_args(["--model", "t5-small", "--new-tokens", "4", "--device", "cuda"])
    args.workload = T5_SMALL
    assert device_options(args) == {"max_new_tokens": 4, "min_new_tokens": 4, "device": "cuda"}
    args.new_tokens = None
    assert (
        device_options(args)["min_new_tokens"] == device_options(args)["max_new_tokens"] == GENERATED_TOKENS
    )
    assert device_options(argparse.Namespace()) == {}, "MiniLM takes no options"
    with pytest.raises(SystemExit):
        parse_args(["--model", "bert"])


def test_result_names_keep_minilms_and_name_the_generation_model():
    summary = {"date": "2026-12-06", "machine": "cpu-2c-24g", "workload": MINILM.name}
    assert result_name(summary) == "2026-12-06-cpu-2c-24g.json"
    assert result_name({**summary, "workload": "t5-small"}) == "2026-12-06-cpu-2c-24g-t5-small.json"


def test_a_ray_nodes_memory_and_cpu_leave_the_head_out():
    sampler = TreeSampler(lambda: [])
    sampler.samples = [
        Sample(1.0, 0, 0, 0, {RAY_NODE: 900.0, RAY_HEAD: 500.0}, 5, {RAY_NODE: 700.0, RAY_HEAD: 400.0},
               {RAY_NODE: 10.0, RAY_HEAD: 3.0}),
        Sample(2.0, 0, 0, 0, {RAY_NODE: 1100.0, RAY_HEAD: 450.0}, 5, {RAY_NODE: 800.0, RAY_HEAD: 420.0},
               {RAY_NODE: 14.0, RAY_HEAD: 3.5}),
    ]  # fmt: skip
    assert sampler.peak_of({RAY_NODE}, 0, 3) == {"peak_rss_mb": 1100.0, "peak_pss_mb": 800.0}
    assert sampler.cpu_seconds(1, 2, {RAY_NODE}) == 4.0
    assert sampler.cpu_seconds(1.5, 2, {RAY_NODE}) == 2.0, "interpolated between the samples around it"
    assert sampler.cpu_seconds(0, 3, {RAY_NODE}) == 12.0, "extended at the rate of the nearest samples"
    assert sampler.cpu_seconds(0, 3, {RAY_HEAD}) == 1.5
    assert sampler.cpu_seconds(5, 6, {RAY_NODE}) is None, "no sample inside the window"
    assert sampler.peak_of({RAY_NODE}, 5, 6) is None


def test_the_summary_counts_cpu_per_row_over_the_rows_of_each_paths_timed_window():
    from benchmarks.bench import summarize

    args = parse_args(["--rows", "400"])
    args.workload = MINILM
    results = {
        "plain_torch": {"rows": 400, "rows_per_s": 20.0, "cpu_s_timed": 10.0, "fixed_overhead_s": 5.0},
        # Ray's steady window held 250 of the 400 rows: its CPU is that window's
        "ray_data": {"rows": 400, "steady_rows": 250.0, "rows_per_s": 50.0, "cpu_s_timed": 5.0,
                     "fixed_overhead_s": 30.0},
    }  # fmt: skip
    summary = summarize(args, results, {}, {})
    assert summary["cpu_ms_per_row"] == {"plain_torch": 25.0, "ray_data": 20.0}
    assert summary["fixed_overhead_s"] == {"plain_torch": 5.0, "ray_data": 30.0}
    assert list(summary["gives_up"]) == ["plain_torch", "ray_data"], "in the paths' order"
    assert summary["peers"] == {}, "no Triton path ran: no peer ratio"


def test_padding_counts_each_batch_at_its_longest_row():
    from benchmarks.padding import padded_tokens, padding_ratios, partition_slices

    assert padded_tokens([1, 5, 2, 2], [[0, 1], [2, 3]]) == 5 * 2 + 2 * 2
    assert partition_slices(10, 3) == [slice(0, 3), slice(3, 6), slice(6, 10)]
    ratios = padding_ratios([1, 5, 1, 5], partitions=1, batch_size=2)
    assert ratios == {"table_order": 1.667, "length_ordered": 1.0, "table_over_length_ordered": 1.667}


def test_both_orders_hold_the_same_rows_and_alternate_which_runs_first():
    from benchmarks.padding import batches_in_both_orders, interleaved_cpu_seconds

    lengths = [5, 1, 4, 2, 9, 3]
    table, ordered = batches_in_both_orders(lengths, partitions=2, batch_size=2)
    assert table == [[0, 1], [2], [3, 4], [5]]
    assert ordered == [[1, 2], [0], [3, 5], [4]], "sorted within each partition, never across"
    calls: list[list[int]] = []
    cpu = interleaved_cpu_seconds(calls.append, table, ordered)
    assert calls == [[0, 1], [1, 2], [0], [2], [3, 4], [3, 5], [4], [5]]
    assert set(cpu) == {"table_order", "length_ordered"}
