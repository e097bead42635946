"""What ``benchmarks.bench`` compares and what it aims for: read by the benchmark and by its chart."""

from __future__ import annotations

PATHS = ("plain_torch", "inprocess_udf", "triton_udf")
# Issue #14's CPU targets for the default comparison (1 Python worker per node): the Triton path at
# least 0.95x the in-process UDF and 0.85x plain torch, and the local backend's fixed overhead at most
# 15 s. The first targets (0.8, 0.6, 30 s) were met by the 2026-11-25 run.
TARGETS = {"triton_vs_inprocess_udf": 0.95, "triton_vs_plain_torch": 0.85, "local_overhead_s": 15.0}
