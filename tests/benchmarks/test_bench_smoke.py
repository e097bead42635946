"""``make bench`` end to end on a few rows: all five paths (the package's three, Ray Data and MLflow's
``spark_udf``) really run, score every row, agree with plain torch and leave nothing running.

A smoke run, never a timing: only that each path produced a rate, the ratios and fixed overheads are
in the result, and the outputs match. The generation run uses the benchmark's own recipe at a size
that builds in a moment (the real t5-small's cost is the benchmark's, not the test's).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from benchmarks import bench, workloads
from benchmarks.comparison import PATHS, PEERS
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

TINY_T5 = {"d_model": 16, "d_ff": 32, "d_kv": 8, "num_layers": 1, "num_decoder_layers": 1, "num_heads": 2,
           "vocab_size": 400}  # fmt: skip


@pytest.fixture
def bench_sandbox(monkeypatch):
    """The bench's work directories and built models under the session's root (not pytest's
    ``tmp_path``, which another pytest session on the machine may rotate away while a run is under
    way); the environment it sets for its child processes (Airflow home, cluster home, MLflow's
    telemetry) restored afterwards."""
    tmp_path = Path(tempfile.mkdtemp(prefix="bench-smoke-", dir=ROOT))
    saved = dict(os.environ)
    monkeypatch.setattr(bench, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(bench, "MODELS_DIR", tmp_path / "models")
    monkeypatch.setattr(workloads, "T5_SMALL_DIMENSIONS", TINY_T5)
    # the once-per-machine JVM archive run (minutes on a loaded machine) is set-up the bench reports
    # apart; tests/spark_jobs/test_class_archive.py covers it
    monkeypatch.setattr(bench, "record_class_archives", lambda *_: None)
    yield tmp_path
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.parametrize("model", ["t5-small", "minilm"])
def test_every_path_runs_and_agrees_with_plain_torch(bench_sandbox, model):
    out = bench_sandbox / f"{model}.json"
    # 96 rows in batches of 16: several batches per Ray actor, so its steady window exists
    argv = ["--model", model, "--rows", "96", "--batch-size", "16", "--partitions", "4", "--out", str(out)]
    if model == "t5-small":
        argv += ["--new-tokens", "4", "--no-chart"]
    assert bench.main(argv) == 0, "the bench left processes running (see its log above)"

    summary = json.loads(out.read_text())
    assert summary["workload"] == model and summary["rows"] == 96
    for path in PATHS:
        assert summary["rows_per_s"][path] > 0, f"{path} gave no rate: {summary['details'].get(path)}"
        assert summary["fixed_overhead_s"][path] > 0, path
        assert summary["details"][path].get("peak_pss_mb"), f"{path}: no memory sampled"
    assert summary["details"]["ray_data"]["scored_rows"] == 96
    ray = summary["details"]["ray_data"]
    assert ray["pool_size"] == 2, "one model copy per CPU"
    # on 96 rows one actor may score every block while the other still loads its model
    assert 1 <= ray["actors"] <= 2
    assert ray["ray_processes_killed"] == [], "ray.shutdown stopped its own"
    for peer in PEERS:
        assert summary["peers"][f"triton_vs_{peer}"] > 0
    assert summary["peers"]["best_peer"] in PEERS
    assert summary["leftover_processes"] == []
    agreement = summary["agreement_vs_plain_torch"]
    assert set(agreement) == set(PATHS) - {"plain_torch"}
    if model == "minilm":
        assert all(a is not None and a > 0.999 for a in agreement.values()), agreement
        assert (bench_sandbox / f"{model}.png").stat().st_size > 10_000, "the chart of the five paths"
    else:  # 4 generated tokens of one random model: the same greedy text on every path
        assert summary["model_options"] == {"max_new_tokens": 4, "min_new_tokens": 4}
        assert all(a is not None for a in agreement.values()), agreement
        details = summary["details"]
        assert details["plain_torch"]["rows"] == details["mlflow_udf"]["rows"] == 96
