"""Nightly digit classification: a second model family through the same create → infer → delete path.

8x8 handwritten digits (``array<float>`` of 64 pixels per row, by date) are classified by a small
logistic regression (``spark_jobs.models.digits_classifier``) served by Triton on every node; the
output holds the 10 class probabilities per image. Built with the reusable
``gpu_batch_inference`` task group. Sample input: ``python -m airflow_spark_triton.demo.sample_digits``.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, Param

from airflow_spark_triton.assets import delta_table_asset
from airflow_spark_triton.schedules import nightly
from airflow_spark_triton.task_group import gpu_batch_inference

DATA_ROOT = os.environ.get("SPARK_TRITON_DATA_DIR", str(Path.home() / "spark_triton_data"))
PREDICTIONS = delta_table_asset(f"{DATA_ROOT}/digit_predictions", name="digit_predictions")

with DAG(
    dag_id="nightly_digits",
    description="Classify the day's 8x8 digit images on a GPU Spark cluster with Triton",
    schedule=nightly(),  # each run scores the day that has just ended
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    tags=["inference", "triton", "spark", "gpu"],
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2), "owner": "data-platform"},
    params={
        "input_table": Param(f"{DATA_ROOT}/digits", type="string", description="Delta table of images"),
        "output_table": Param(f"{DATA_ROOT}/digit_predictions", type="string"),
        "num_workers": Param(2, type="integer", minimum=1),
        "batch_size": Param(128, type="integer", minimum=1),
        "conn_id": Param("spark_triton_default", type="string"),
    },
    doc_md=__doc__,
) as dag:
    gpu_batch_inference(
        "classify_digits",
        conn_id="{{ params.conn_id }}",
        cluster_spec={
            "num_workers": "{{ params.num_workers }}",
            "executor_cores": 1,
            "autotermination_minutes": 60,
        },
        create_kwargs={"execution_timeout": timedelta(minutes=30)},
        input_table="{{ params.input_table }}",
        output_table="{{ params.output_table }}",
        model="spark_jobs.models.digits_classifier:MODEL",
        input_columns=("pixels",),
        output_column="probabilities",
        batch_size="{{ params.batch_size }}",
        outlets=[PREDICTIONS],
        execution_timeout=timedelta(hours=1),
    )
