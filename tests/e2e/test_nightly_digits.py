"""The second DAG (digits classifier, built with the task-group factory) end to end on the local backend."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from deltalake import DeltaTable

from airflow_spark_triton.demo.sample_digits import BROKEN_PER_DAY, write_digits_table
from spark_jobs.models.digits_classifier import predict_proba
from tests.e2e.group_runs import run_group_dag

pytestmark = pytest.mark.slow

DAY = dt.date(2026, 11, 25)
PER_DAY = 120


def test_nightly_digits_classifies_the_date_like_the_model_in_process(airflow_db, tmp_path):
    digits, predictions = tmp_path / "digits", tmp_path / "predictions"
    write_digits_table(str(digits), [DAY - dt.timedelta(days=1), DAY], PER_DAY)
    conf = {"input_table": str(digits), "output_table": str(predictions), "batch_size": 32}

    report = run_group_dag("nightly_digits", "classify_digits", DAY, conf)

    assert (report["rows_read"], report["rows_scored"]) == (PER_DAY + BROKEN_PER_DAY, PER_DAY)
    assert report["rows_rejected"] == BROKEN_PER_DAY

    day = [("date", "=", DAY.isoformat())]
    images = DeltaTable(str(digits)).to_pandas(partitions=day)
    out = DeltaTable(str(predictions)).to_pandas(partitions=day).merge(images, on="id")
    assert len(out) == PER_DAY and out["id"].is_unique
    served = np.stack(out["probabilities"].to_numpy()).astype(np.float32)
    reference = predict_proba(np.stack(out["pixels"].to_numpy()))
    np.testing.assert_allclose(served, reference, rtol=1e-5, atol=1e-6)
    accuracy = float((served.argmax(axis=1) == out["label"].to_numpy()).mean())
    assert accuracy > 0.9, accuracy

    rejects = DeltaTable(f"{predictions}_rejects").to_pandas(partitions=day)
    assert sorted(rejects["reason"]) == [
        "pixels has NaN or infinite values",
        "pixels has the wrong shape (expected 64 values)",
        "pixels is null",
    ]
