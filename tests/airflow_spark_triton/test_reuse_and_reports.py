"""Fast checks of the task-group factory, assets, lineage, progress formatting and the report summary."""

from __future__ import annotations

import datetime as dt

from airflow_spark_triton.assets import delta_table_asset, table_uri
from airflow_spark_triton.lineage import dataset_name
from airflow_spark_triton.operators.inference import TritonInferenceOperator, format_progress
from airflow_spark_triton.task_group import gpu_batch_inference
from spark_jobs.contract import RunReport, progress_path, summary_path
from spark_jobs.progress import summary_markdown


def test_task_group_wires_setup_infer_teardown():
    from airflow.sdk import DAG

    with DAG("factory_test", schedule=None, start_date=dt.datetime(2026, 1, 1)) as dag:
        group = gpu_batch_inference(
            "score",
            cluster_spec={"num_workers": 1},
            conn_id="my_conn",
            input_table="/in",
            output_table="/out",
            model="spark_jobs.models.digits_classifier:MODEL",
            input_columns=("pixels",),
        )
    ids = sorted(t.task_id for t in dag.tasks)
    assert ids == ["score.create_cluster", "score.delete_cluster", "score.infer"]
    create, infer, delete = (
        dag.get_task(f"score.{t}") for t in ("create_cluster", "infer", "delete_cluster")
    )
    assert create.is_setup and delete.is_teardown
    assert {t.conn_id for t in (create, infer, delete)} == {"my_conn"}
    assert infer.upstream_task_ids == {"score.create_cluster"}
    assert "score.infer" in delete.upstream_task_ids
    assert group.group_id == "score"
    assert create.tags == {"pipeline": "score"}


def test_asset_uris_are_stable_and_absolute():
    assert table_uri("/data/t/") == "file:///data/t"
    assert table_uri("s3://bucket/t") == "s3://bucket/t"
    asset = delta_table_asset("/data/emb", name="document_embeddings")
    assert (asset.name, asset.uri) == ("document_embeddings", "file:///data/emb")
    assert delta_table_asset("/data/emb", name="document_embeddings") == asset


def test_lineage_names_input_and_both_outputs():
    op = TritonInferenceOperator(
        task_id="t",
        cluster_id="c",
        input_table="/data/docs",
        output_table="s3://bucket/emb",
        model="m:M",
        logical_date="2026-01-01",
    )
    lineage = op.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("file", "/data/docs")]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [
        ("s3://bucket", "emb"),
        ("s3://bucket", "emb_rejects"),
    ]
    assert dataset_name("dbfs:/Volumes/x") == ("dbfs", "/Volumes/x")
    assert lineage.run_facets["spark_triton_model"] == {"model": "m:M", "model_version": None}
    op._model_version = "3"  # a models:/ reference's pinned version (set at execute)
    facet = op.get_openlineage_facets_on_complete(None).run_facets["spark_triton_model"]
    assert facet == {"model": "m:M", "model_version": "3"}


def test_progress_and_summary_formats():
    text = format_progress({"rows_done": 50, "rows_total": 200, "rows_per_s": 12.5, "tasks_done": 1,
                            "tasks_total": 4, "phase": "inference"})  # fmt: skip
    assert text == "50/200 rows (25%), 12.5 rows/s, tasks 1/4 [inference]"
    assert format_progress({"phase": "starting"}) == "no rows yet [starting]"
    assert summary_path("/r/report.json").as_posix() == "/r/report.md"
    assert progress_path("dbfs:/Volumes/a/reports/x.json").as_posix() == "/Volumes/a/reports/x.progress.json"
    md = summary_markdown(RunReport("r1", "2026-01-01", "m:M", "in", "out", "out_rejects", status="SUCCESS",
                                    rows_read=3, rows_scored=2, rows_rejected=1,
                                    reject_reasons={"text is null": 1}, timings_s={"total": 1.5}))  # fmt: skip
    assert "# Inference run `r1`" in md and "| text is null | 1 |" in md and "| total | 1.5 |" in md
