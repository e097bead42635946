"""Nightly sentence embeddings: GPU cluster up, one Triton server per node, Delta in and out, cluster down.

Dates: the run that fires at 00:00 UTC on day D scores day D-1, the last complete day (the schedule
is a ``CronDataIntervalTimetable``; the operator scores the start of the data interval). A backfill
``--from-date A --to-date B`` scores exactly the days A..B; a manual trigger scores yesterday. An
empty date succeeds with a warning unless the ``min_rows`` param sets a floor.

The teardown deletes the cluster on success, failure or skip of the inference task; the create task
deletes a cluster that never became usable itself. Each run replaces its own date's partition of the
output table, so reruns and backfills never duplicate rows.

Backend: the ``spark_triton_default`` connection (type ``databricks`` in production); without it,
a local Spark standalone cluster is used.

Compute (the ``compute`` param): ``job`` (default) runs on Databricks jobs compute, a cluster that
Databricks creates for the inference run and terminates after it; ``all_purpose`` creates one cluster
in ``create_cluster`` and deletes it in ``delete_cluster``. On the local backend both create the
local cluster in ``create_cluster`` and stop it in ``delete_cluster``. The ``cluster_settings`` param
adds any other cluster setting (``policy_id``, ``instance_pool_id``, ``aws_attributes`` ...; see
``docs/databricks.md``).

Asset: the inference task updates ``EMBEDDINGS`` (name ``document_embeddings``, URI of the
``output_table`` param's default); ``dags/embeddings_consumer.py`` is scheduled on it. The event's
``extra`` names the table and date the run actually wrote, so an overridden ``output_table`` still
reaches consumers correctly.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, Param

from airflow_spark_triton.assets import delta_table_asset
from airflow_spark_triton.operators.cluster import CreateGpuClusterOperator, DeleteClusterOperator
from airflow_spark_triton.operators.inference import TritonInferenceOperator
from airflow_spark_triton.schedules import nightly

DATA_ROOT = os.environ.get("SPARK_TRITON_DATA_DIR", str(Path.home() / "spark_triton_data"))
EMBEDDINGS = delta_table_asset(f"{DATA_ROOT}/document_embeddings", name="document_embeddings")

with DAG(
    dag_id="nightly_embeddings",
    description="Embed the day's documents with all-MiniLM-L6-v2 on a GPU Spark cluster with Triton",
    schedule=nightly(),  # each run scores the day that has just ended
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    tags=["inference", "triton", "spark", "gpu"],
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2), "owner": "data-platform"},
    params={
        "input_table": Param(f"{DATA_ROOT}/documents", type="string", description="Delta table of documents"),
        "output_table": Param(f"{DATA_ROOT}/document_embeddings", type="string"),
        "model": Param("spark_jobs.models.minilm:MODEL", type="string"),
        "model_options": Param({}, type="object", description="passed to the model loader on each node"),
        "num_workers": Param(2, type="integer", minimum=1),
        "executor_cores": Param(1, type="integer", minimum=1),
        "spark_conf": Param(
            {},
            type="object",
            description="extra Spark settings of the cluster, e.g. spark.sql.shuffle.partitions",
        ),
        "batch_size": Param(64, type="integer", minimum=1),
        "min_rows": Param(
            0, type="integer", minimum=0, description="fail when the date has fewer input rows"
        ),
        "conn_id": Param("spark_triton_default", type="string"),
        "compute": Param(
            "job",
            enum=["job", "all_purpose"],
            description="job: a cluster per run, created and terminated by Databricks (jobs compute); "
            "all_purpose: created by create_cluster, deleted by delete_cluster",
        ),
        "cluster_settings": Param(
            {},
            type="object",
            description="more GpuClusterSpec settings, e.g. policy_id, instance_pool_id, aws_attributes",
        ),
    },
    doc_md=__doc__,
) as dag:
    create_cluster = CreateGpuClusterOperator(
        task_id="create_cluster",
        conn_id="{{ params.conn_id }}",
        # One dict: the named params win over the same keys in cluster_settings. ``model``: the
        # create task checks (all-purpose Databricks: installs) the served model's requirements.
        cluster_spec=(
            "{{ dict(params.cluster_settings, num_workers=params.num_workers, "
            "executor_cores=params.executor_cores, spark_conf=params.spark_conf, "
            "compute=params.compute, model=params.model, autotermination_minutes=60) }}"
        ),
        tags={"pipeline": "nightly_embeddings"},
        execution_timeout=timedelta(minutes=30),
    )
    embed = TritonInferenceOperator(
        task_id="embed_documents",
        conn_id="{{ params.conn_id }}",
        cluster_id=create_cluster.output,
        input_table="{{ params.input_table }}",
        output_table="{{ params.output_table }}",
        outlets=[EMBEDDINGS],
        model="{{ params.model }}",
        model_options="{{ params.model_options }}",
        batch_size="{{ params.batch_size }}",
        min_rows="{{ params.min_rows }}",
        execution_timeout=timedelta(hours=3),
    )
    delete_cluster = DeleteClusterOperator(
        task_id="delete_cluster",
        conn_id="{{ params.conn_id }}",
        cluster_id=create_cluster.output,
        retries=3,
    )
    create_cluster >> embed >> delete_cluster.as_teardown(setups=create_cluster)
