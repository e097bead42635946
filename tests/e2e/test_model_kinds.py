"""The model kinds teams serve, through the real local backend: a Spark standalone cluster, one Triton
server per node, Delta in and out through delta-rs. One cluster serves the whole module, one run per
model: text generation, classification (label + score), an image classifier over a binary column,
and a Python model with several inputs and outputs of every kind (variable-length ones included)
read from a TIMESTAMP date column. Each output is compared with transformers' own answer for each
row alone (the T5 conditional generation of the seed is the nightly DAG's: test_nightly_translations)."""

from __future__ import annotations

import datetime as dt
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from airflow_spark_triton.backends.local.backend import LocalSparkBackend
from airflow_spark_triton.cluster_spec import GpuClusterSpec
from airflow_spark_triton.demo import tiny_models
from airflow_spark_triton.preflight import preflight
from spark_jobs.contract import InferenceJobConfig, RunReport
from spark_jobs.models import record_stats

pytestmark = pytest.mark.slow

DAY = "2026-11-24"
RUN_TIMEOUT_S = 420
TEXTS = [
    "the cat sat on the mat", "a dog runs to the river", "my old book", "we like this city",
    "they read a letter today", "the big blue house", "a small bird sleeps in the garden", "you see",
    "the red book is new", "this morning we walk to the city", "le chat est petit", "dog",
]  # fmt: skip


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    backend = LocalSparkBackend(spark_triton_conn_id=None, home=str(tmp_path_factory.mktemp("kinds-home")))
    cluster_id = backend.create_cluster(GpuClusterSpec(num_workers=2, executor_cores=1), {"dag_id": "kinds"})
    try:
        backend.wait_for_cluster(cluster_id, 240)
        yield backend, cluster_id
    finally:
        backend.delete_cluster(cluster_id)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {
        "gpt2": tiny_models.build_tiny_gpt2(root / "gpt2"),
        "bert": tiny_models.build_tiny_bert_classifier(root / "bert"),
        "vit": tiny_models.build_tiny_vit_classifier(root / "vit"),
    }


def score(cluster: tuple[LocalSparkBackend, str], job: InferenceJobConfig) -> RunReport:
    """Pre-flight (as the operators do), submit, wait; the run's report."""
    backend, cluster_id = cluster
    preflight(job, backend)
    started = time.monotonic()
    run_id = backend.submit_job(cluster_id, job, f"kinds-{Path(job.output_table).name}")
    while not (status := backend.get_run_status(run_id)).state.is_terminal:
        assert time.monotonic() - started < RUN_TIMEOUT_S, backend.driver_log_tail(run_id)
        time.sleep(1)
    assert status.state.value == "SUCCESS", f"{status.message}\n{backend.driver_log_tail(run_id, 80)}"
    report = backend.get_run_report(run_id)
    print(f"{job.model}: {report.rows_scored} rows in {time.monotonic() - started:.1f} s")
    return report


def text_table(path: Path) -> str:
    """TEXTS on DAY with ids 1.., one null text (rejected), two rows on other days (not read)."""
    frame = pd.DataFrame(
        {
            "id": list(range(1, len(TEXTS) + 4)),
            "body": [*TEXTS, None, "another day", "and another"],
            "date": [DAY] * (len(TEXTS) + 1) + ["2026-11-23", "2026-11-25"],
        }
    )
    write_deltalake(str(path), frame, partition_by=["date"])
    return str(path)


def job(table: str, out: Path, model: str, **settings: Any) -> InferenceJobConfig:
    return InferenceJobConfig(
        input_table=table, output_table=str(out), model=model, logical_date=DAY, batch_size=4, **settings
    )


def output(table: Path, key: str = "id") -> pd.DataFrame:
    return DeltaTable(str(table)).to_pandas(partitions=[("date", "=", DAY)]).sort_values(key)


def test_text_generation_equals_the_pipeline_on_each_row_alone(cluster, models, tmp_path):
    from transformers import pipeline

    options = {"max_new_tokens": 8, "num_beams": 1, "do_sample": False}
    run = job(text_table(tmp_path / "in"), tmp_path / "generated", f"hf:text-generation:{models['gpt2']}",
              input_columns={"text": "body"}, output_columns={"generated_text": "continuation"},
              model_options=options)  # fmt: skip
    report = score(cluster, run)
    assert (report.rows_read, report.rows_scored, report.rows_rejected) == (
        len(TEXTS) + 1,
        len(TEXTS),
        1,
    )

    out = output(tmp_path / "generated")
    generate = pipeline("text-generation", model=str(models["gpt2"]), device="cpu")
    alone = [generate(t, return_full_text=False, **options)[0]["generated_text"] for t in TEXTS]
    assert out["continuation"].tolist() == alone
    assert len(set(alone)) > 3, "the tiny model's continuations depend on the text"
    assert set(out.columns) == {"id", "continuation", "model", "run_id", "scored_at", "date"}


def test_classification_labels_equal_and_scores_within_1e_4(cluster, models, tmp_path):
    from transformers import pipeline

    run = job(text_table(tmp_path / "in"), tmp_path / "classified", f"hf:text-classification:{models['bert']}",
              input_columns=("body",))  # fmt: skip
    score(cluster, run)
    out = output(tmp_path / "classified")
    classify = pipeline("text-classification", model=str(models["bert"]), device="cpu")
    alone = [classify(t)[0] for t in TEXTS]
    assert out["label"].tolist() == [r["label"] for r in alone]
    np.testing.assert_allclose(out["score"].to_numpy(), [r["score"] for r in alone], atol=1e-4)
    assert len(set(out["label"])) > 1
    schema = {f.name: f.type for f in DeltaTable(str(tmp_path / "classified")).schema().fields}
    assert (str(schema["label"]), str(schema["score"])) == (
        'PrimitiveType("string")',
        'PrimitiveType("float")',
    )


def test_the_image_classifier_over_a_binary_column_agrees_with_the_pipeline(cluster, models, tmp_path):
    from PIL import Image
    from transformers import pipeline

    images = tiny_models.sample_images(10, seed=1)
    rows = pa.table(
        {
            "id": pa.array(range(1, 14), pa.int64()),
            "photo": pa.array([*images, None, b"", b"<html>not an image</html>"], pa.binary()),
            "date": [DAY] * 13,
        }
    )
    write_deltalake(str(tmp_path / "photos"), rows, partition_by=["date"])
    run = job(str(tmp_path / "photos"), tmp_path / "labels", f"hf:image-classification:{models['vit']}",
              input_columns={"image": "photo"})  # fmt: skip
    report = score(cluster, run)
    assert report.reject_reasons == {
        "photo is null": 1,
        "photo is empty": 1,
        "photo is not a PNG, JPEG, GIF, BMP, WEBP or TIFF image": 1,  # it would fail its whole batch
    }

    out = output(tmp_path / "labels")
    classify = pipeline("image-classification", model=str(models["vit"]), device="cpu")
    alone = [classify(Image.open(io.BytesIO(b)).convert("RGB"), top_k=1)[0] for b in images]
    assert out["label"].tolist() == [r["label"] for r in alone]
    np.testing.assert_allclose(out["score"].to_numpy(), [r["score"] for r in alone], atol=1e-4)
    rejects = DeltaTable(str(tmp_path / "labels_rejects")).to_pandas()
    assert sorted(rejects["input_preview"]) == ['{"photo":"<0 bytes>"}', '{"photo":"<25 bytes>"}', "{}"]


def test_several_outputs_of_every_kind_round_trip_exactly_from_a_timestamp_date(cluster, tmp_path):
    """The day of a TIMESTAMP date column is its UTC day: 00:00 and 23:59 are in, the minutes around not."""
    utc = dt.UTC
    stamps = [
        dt.datetime(2026, 11, 24, h, m, tzinfo=utc) for h, m in [(0, 0), (6, 30), (12, 0), (23, 59)]
    ] * 3
    attachments = [bytes([i, 0, 255, 0]) * (i + 1) + b"\x00" for i in range(len(TEXTS))]  # trailing NUL kept
    weights = [[float(i), -0.5, 1e-3 * i] for i in range(len(TEXTS))]
    outside = [dt.datetime(2026, 11, 23, 23, 59, tzinfo=utc), dt.datetime(2026, 11, 25, 0, 0, tzinfo=utc)]
    table = pa.table(
        {
            "key": pa.array([f"k{i:02d}" for i in range(len(TEXTS) + 2)]),
            "body": [*TEXTS, "outside", "outside"],
            "file": pa.array([*attachments, b"x", b"y"], pa.binary()),
            "w": pa.array([*weights, [0.0] * 3, [0.0] * 3], pa.list_(pa.float32())),
            "event_time": pa.array([*stamps, *outside], pa.timestamp("us", tz="UTC")),
        }
    )
    write_deltalake(str(tmp_path / "records"), table)
    run = job(
        str(tmp_path / "records"), tmp_path / "stats", "spark_jobs.models.record_stats:MODEL",
        key_column="key", date_column="event_time",
        input_columns={"attachment": "file", "weights": "w", "text": "body"},
        output_columns={"upper": "shout", "half_words": "half"},
    )  # fmt: skip
    report = score(cluster, run)
    assert (report.rows_read, report.rows_scored) == (len(TEXTS), len(TEXTS))

    out = DeltaTable(str(tmp_path / "stats")).to_pandas().sort_values("key")
    assert out["event_time"].unique().tolist() == [DAY]  # the outputs' date column, as a YYYY-MM-DD string
    for i, row in enumerate(out.itertuples()):
        want = record_stats.expected(TEXTS[i], attachments[i], list(np.float32(weights[i])))
        assert row.shout == want["upper"]
        assert list(row.words) == want["words"] and list(row.word_ids) == want["word_ids"]
        assert (row.n_words, row.attachment_bytes, row.first_byte) == (
            want["n_words"], want["attachment_bytes"], want["first_byte"]
        )  # fmt: skip
        assert row.is_long == want["is_long"]
        assert list(row.scaled) == [float(v) for v in want["scaled"]]
        assert row.half == float(np.float16(want["half_words"]))
    schema = json.loads(DeltaTable(str(tmp_path / "stats")).schema().to_json())
    types = {f["name"]: f["type"] if isinstance(f["type"], str) else f"array<{f['type']['elementType']}>"
             for f in schema["fields"]}  # fmt: skip
    assert types == {
        "key": "string", "shout": "string", "words": "array<string>", "word_ids": "array<long>",
        "n_words": "integer", "attachment_bytes": "long", "first_byte": "short", "is_long": "boolean",
        "scaled": "array<double>", "half": "float", "model": "string", "run_id": "string",
        "scored_at": "timestamp", "event_time": "string",
    }  # fmt: skip
