"""``make demo``: embed a day of sample documents with the nightly DAG on the local backend, then check it.

The checks are the product's promises, measured on the real output: one row per scorable input row,
rejects for the rest, counts that add up, and embeddings equal to sentence-transformers' own.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path

import numpy as np

from spark_jobs.contract import RunReport, default_rejects_table


def _data_root() -> Path:
    return Path(os.environ.get("SPARK_TRITON_DATA_DIR", Path.home() / "spark_triton_data"))


def write_input(root: Path, day: dt.date, per_day: int) -> Path:
    from airflow_spark_triton.demo.sample_documents import sample_documents
    from spark_jobs.delta_io import write_pandas_table

    table = root / "documents"
    days = [day - dt.timedelta(days=offset) for offset in (2, 1, 0)]
    write_pandas_table(str(table), sample_documents(days, per_day), partition_by=["date"])
    return table


def check_output(root: Path, day: dt.date, report: RunReport, sample: int) -> list[str]:
    """Return the failed checks (empty when all hold)."""
    from deltalake import DeltaTable

    from spark_jobs.models.minilm import EMBEDDING_DIM, load_sentence_transformer

    failures = []
    documents = DeltaTable(str(root / "documents")).to_pandas(partitions=[("date", "=", day.isoformat())])
    output = DeltaTable(str(root / "document_embeddings")).to_pandas(
        partitions=[("date", "=", day.isoformat())]
    )
    rejects = DeltaTable(default_rejects_table(str(root / "document_embeddings"))).to_pandas(
        partitions=[("date", "=", day.isoformat())]
    )
    if len(output) + len(rejects) != len(documents):
        failures.append(f"{len(output)} scored + {len(rejects)} rejected != {len(documents)} input rows")
    if output["id"].duplicated().any():
        failures.append("duplicate ids in the output")
    if (report.rows_scored, report.rows_rejected) != (len(output), len(rejects)):
        failures.append(f"report counts {report.rows_scored}/{report.rows_rejected} differ from tables")
    dims = {len(v) for v in output["embedding"]}
    if dims != {EMBEDDING_DIM}:
        failures.append(f"embedding sizes {sorted(dims)} != {{{EMBEDDING_DIM}}}")
    joined = output.merge(documents[["id", "text"]], on="id").head(sample)
    reference = load_sentence_transformer({"device": "cpu"}).encode(
        joined["text"].tolist(), convert_to_numpy=True
    )
    served = np.stack(joined["embedding"].to_numpy()).astype(np.float32)
    cosine = np.sum(served * reference, axis=1) / (
        np.linalg.norm(served, axis=1) * np.linalg.norm(reference, axis=1)
    )
    print(f"cosine(served, sentence-transformers) over {len(joined)} rows: min {cosine.min():.6f}")
    if cosine.min() < 0.999:
        failures.append(f"min cosine {cosine.min():.6f} < 0.999")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--date", default=(dt.date.today() - dt.timedelta(days=1)).isoformat())
    parser.add_argument("--docs-per-day", type=int, default=3000)
    parser.add_argument("--check-sample", type=int, default=256)
    parser.add_argument("--dags-folder", default=str(Path(__file__).resolve().parents[2] / "dags"))
    args = parser.parse_args(argv)
    day = dt.date.fromisoformat(args.date)
    root = _data_root()

    from airflow_spark_triton.dag_runner import run_dag

    table = write_input(root, day, args.docs_per_day)
    print(f"input: {table} ({args.docs_per_day} documents per day, 3 days)")
    result = run_dag(args.dags_folder, "nightly_embeddings", day)
    print(f"DAG run {result.run_id}: {result.state} {result.task_states}")
    report = result.xcoms.get("embed_documents") or {}
    print("run report:\n" + json.dumps(report, indent=2, default=str))
    if result.state != "success":
        return 1
    failures = check_output(root, day, RunReport.from_dict(report), args.check_sample)
    print(f"output: {root / 'document_embeddings'} (partition date={day})")
    print(f"rejects: {default_rejects_table(str(root / 'document_embeddings'))}")
    for failure in failures:
        print(f"CHECK FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
