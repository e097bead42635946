"""``make demo``: embed a day of sample documents and translate a day of sample sentences with the
nightly DAGs on the local backend, then check both.

The checks are the product's promises, measured on the real output: one row per scorable input row,
rejects for the rest, counts that add up, embeddings equal to sentence-transformers' own, and
translations equal to transformers' own generation for each sentence alone. No pretrained T5 is
reachable offline, so the translations come from a tiny randomly initialised T5 built under
``var/models`` (:mod:`.tiny_models`): nonsense French, deterministically; a deployment points the
DAG's ``model`` param at a real one (``docs/serving-models.md``).
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


def embed(root: Path, day: dt.date, args: argparse.Namespace) -> list[str]:
    """Run ``nightly_embeddings`` on a day of sample documents; return the failed checks."""
    from airflow_spark_triton.dag_runner import run_dag

    table = write_input(root, day, args.docs_per_day)
    print(f"input: {table} ({args.docs_per_day} documents per day, 3 days)")
    result = run_dag(args.dags_folder, "nightly_embeddings", day)
    print(f"DAG run {result.run_id}: {result.state} {result.task_states}")
    report = result.xcoms.get("embed_documents") or {}
    print("run report:\n" + json.dumps(report, indent=2, default=str))
    if result.state != "success":
        return ["nightly_embeddings did not succeed"]
    failures = check_output(root, day, RunReport.from_dict(report), args.check_sample)
    print(f"output: {root / 'document_embeddings'} (partition date={day})")
    print(f"rejects: {default_rejects_table(str(root / 'document_embeddings'))}")
    return failures


# The translation run's options: T5's task prefix and greedy generation.
TRANSLATION_OPTIONS = {"max_new_tokens": 16, "num_beams": 1, "do_sample": False}


def tiny_t5_dir(root: Path) -> Path:
    """Where the demo's tiny T5 lives: ``var/models`` next to the data (``SPARK_TRITON_MODELS_DIR``)."""
    return Path(os.environ.get("SPARK_TRITON_MODELS_DIR") or root.parent / "models") / "tiny-t5-en-fr"


def translate(root: Path, day: dt.date, args: argparse.Namespace) -> list[str]:
    """Run ``nightly_translations`` on a day of sample sentences; return the failed checks."""
    from airflow_spark_triton.dag_runner import run_dag
    from airflow_spark_triton.demo.sample_sentences import sample_sentences
    from airflow_spark_triton.demo.tiny_models import T5_PREFIX, build_tiny_t5, t5_reference
    from spark_jobs.delta_io import write_pandas_table

    model_dir = tiny_t5_dir(root)
    if not (model_dir / "config.json").exists():
        build_tiny_t5(model_dir)
    days = [day - dt.timedelta(days=1), day]
    write_pandas_table(str(root / "sentences"), sample_sentences(days, args.sentences_per_day), ["date"])
    options = {"prefix": T5_PREFIX, **TRANSLATION_OPTIONS}
    # The DAG's own default model (what `make demo` sets too): a conf `hf:` reference would need the
    # deployment's [spark_triton] allowed_models (trigger params are data).
    model = os.environ["SPARK_TRITON_TRANSLATION_MODEL"] = f"hf:text2text-generation:{model_dir}"
    print(f"input: {root / 'sentences'} ({args.sentences_per_day} sentences per day); model {model}")
    result = run_dag(args.dags_folder, "nightly_translations", day, {"model_options": options})
    print(f"DAG run {result.run_id}: {result.state} {result.task_states}")
    report = result.xcoms.get("translate.infer") or {}
    print("run report:\n" + json.dumps(report, indent=2, default=str))
    if result.state != "success":
        return ["nightly_translations did not succeed"]

    from deltalake import DeltaTable

    partition = [("date", "=", day.isoformat())]
    rejects_table = default_rejects_table(str(root / "translations"))
    sentences = DeltaTable(str(root / "sentences")).to_pandas(partitions=partition)
    output = DeltaTable(str(root / "translations")).to_pandas(partitions=partition)
    rejects = DeltaTable(rejects_table).to_pandas(partitions=partition)
    failures = []
    if len(output) + len(rejects) != len(sentences):
        failures.append(f"{len(output)} translated + {len(rejects)} rejected != {len(sentences)} sentences")
    counts = RunReport.from_dict(report)
    if (counts.rows_scored, counts.rows_rejected) != (len(output), len(rejects)):
        failures.append(f"report counts {counts.rows_scored}/{counts.rows_rejected} differ from tables")
    joined = output.merge(sentences[["id", "sentence"]], on="id").sort_values("id")
    reference = t5_reference(model_dir, joined["sentence"].tolist(), **options)
    differ = [
        (i, s, r) for i, s, r in zip(joined["id"], joined["translation"], reference, strict=True) if s != r
    ]
    print(f"translations equal to transformers' own generation: {len(joined) - len(differ)}/{len(joined)}")
    for sentence, translation in zip(joined["sentence"][:3], joined["translation"][:3], strict=True):
        print(f"  {sentence!r} -> {translation!r}")
    if differ:
        failures.append(f"{len(differ)} translations differ from transformers' own, e.g. {differ[0]}")
    print(f"output: {root / 'translations'} (partition date={day}); rejects: {rejects_table}")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--date", default=(dt.date.today() - dt.timedelta(days=1)).isoformat())
    parser.add_argument("--docs-per-day", type=int, default=3000)
    parser.add_argument("--sentences-per-day", type=int, default=200)
    parser.add_argument("--check-sample", type=int, default=256)
    parser.add_argument("--dags", default="nightly_embeddings,nightly_translations", help="comma-separated")
    parser.add_argument("--dags-folder", default=str(Path(__file__).resolve().parents[2] / "dags"))
    args = parser.parse_args(argv)
    day = dt.date.fromisoformat(args.date)
    root = _data_root()
    dags = [d.strip() for d in args.dags.split(",") if d.strip()]
    failures = embed(root, day, args) if "nightly_embeddings" in dags else []
    if "nightly_translations" in dags:
        failures += translate(root, day, args)
    for failure in failures:
        print(f"CHECK FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
