"""The seed's own example, T5 conditional generation, as the shipped nightly DAG on the local backend:
its output table equals transformers' own generation for each sentence alone, row for row."""

from __future__ import annotations

import datetime as dt

import pytest
from deltalake import DeltaTable

from airflow_spark_triton.demo.sample_sentences import BROKEN_SENTENCES, sample_sentences
from airflow_spark_triton.demo.tiny_models import T5_PREFIX, build_tiny_t5, min_greedy_margin, t5_reference
from spark_jobs.delta_io import write_pandas_table
from tests.e2e.group_runs import run_group_dag

pytestmark = pytest.mark.slow

DAY = dt.date(2026, 11, 25)
PER_DAY = 40
OPTIONS = {"prefix": T5_PREFIX, "max_new_tokens": 12, "num_beams": 1, "do_sample": False}


def test_nightly_translations_equals_transformers_generation_row_for_row(airflow_db, tmp_path, monkeypatch):
    model_dir = build_tiny_t5(tmp_path / "tiny-t5")
    # The conf names the model: a deployment that lets triggers pick hf: models from a directory.
    monkeypatch.setenv("AIRFLOW__SPARK_TRITON__ALLOWED_MODELS", f"hf:text2text-generation:{tmp_path}/*")
    sentences, translations = tmp_path / "sentences", tmp_path / "translations"
    write_pandas_table(str(sentences), sample_sentences([DAY - dt.timedelta(days=1), DAY], PER_DAY), ["date"])
    conf = {
        "input_table": str(sentences),
        "output_table": str(translations),
        "model": f"hf:text2text-generation:{model_dir}",
        "model_options": OPTIONS,
        "batch_size": 8,
    }

    report = run_group_dag("nightly_translations", "translate", DAY, conf)

    scorable = PER_DAY - len(BROKEN_SENTENCES)
    assert (report["rows_read"], report["rows_scored"], report["rows_rejected"]) == (
        PER_DAY, scorable, len(BROKEN_SENTENCES)
    )  # fmt: skip

    day = [("date", "=", DAY.isoformat())]
    inputs = DeltaTable(str(sentences)).to_pandas(partitions=day)
    out = DeltaTable(str(translations)).to_pandas(partitions=day).merge(inputs, on=["id", "date"])
    out = out.sort_values("id")
    texts = out["sentence"].tolist()
    assert min_greedy_margin(model_dir, texts, True, **OPTIONS) > 1e-3  # batching cannot flip a choice
    assert out["translation"].tolist() == t5_reference(model_dir, texts, **OPTIONS)
    assert out["translation"].nunique() > 1
    assert set(out["model"]) == {"hf_text2text_generation_tiny_t5"}
