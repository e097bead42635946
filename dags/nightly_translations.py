"""Nightly translation with T5: the seed's conditional-generation example as a scheduled pipeline.

NVIDIA's "Spark DL Inference on Databricks" notebook ``conditional_generation.ipynb`` translates
English sentences with T5 through one Triton server per node; here the same work runs every night,
on a cluster that exists only for the run: the day's rows of a Delta table of English sentences
(``id``, ``sentence``, ``date``) are translated by ``hf:text2text-generation:<model>`` and the
date's partition of the output table (``id``, ``translation``, ``model``, ``run_id``, ``scored_at``)
is replaced, rows that cannot be scored going to ``<output>_rejects`` with their reason.

Model: the ``model`` param, an ``hf:`` reference: ``hf:text2text-generation:google-t5/t5-small``
(the default, downloaded from the Hub on each node) or a saved model's directory on the nodes,
``hf:text2text-generation:/Volumes/ml/models/t5-small`` on Databricks. ``model_options`` holds T5's
task prefix and the generation options. ``SPARK_TRITON_TRANSLATION_MODEL`` replaces the default
reference (``make demo`` points it at a tiny offline T5 under ``var/``). A ``model`` set by a run's
conf must match the deployment's ``[spark_triton] allowed_models`` (no ``hf:`` reference by default;
docs/deploying.md, "Trigger params"). The create task checks the
reference, the options, the columns and the batch size before any cluster exists.

Dates, teardown and compute as in ``nightly_embeddings``: the run fired at 00:00 UTC on day D
translates day D-1; the delete task always runs; ``compute="job"`` gives the run its own Databricks
jobs compute cluster.
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
MODEL = os.environ.get("SPARK_TRITON_TRANSLATION_MODEL", "hf:text2text-generation:google-t5/t5-small")
TRANSLATIONS = delta_table_asset(f"{DATA_ROOT}/translations", name="translations")

with DAG(
    dag_id="nightly_translations",
    description="Translate the day's English sentences with T5 on a GPU Spark cluster with Triton",
    schedule=nightly(),  # each run translates the day that has just ended
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    tags=["inference", "triton", "spark", "gpu", "text-generation"],
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2), "owner": "data-platform"},
    params={
        "input_table": Param(f"{DATA_ROOT}/sentences", type="string", description="Delta table of sentences"),
        "output_table": Param(f"{DATA_ROOT}/translations", type="string"),
        "model": Param(MODEL, type="string", description="hf:text2text-generation:<directory or hub id>"),
        "model_options": Param(
            {
                "prefix": "translate English to French: ",
                "max_new_tokens": 48,
                "num_beams": 1,
                "do_sample": False,
            },
            type="object",
            description="T5's task prefix and generation options",
        ),
        "num_workers": Param(2, type="integer", minimum=1),
        "batch_size": Param(32, type="integer", minimum=1),
        "min_rows": Param(0, type="integer", minimum=0, description="fail when the date has fewer rows"),
        "conn_id": Param("spark_triton_default", type="string"),
        "compute": Param("job", enum=["job", "all_purpose"]),
    },
    doc_md=__doc__,
) as dag:
    gpu_batch_inference(
        "translate",
        conn_id="{{ params.conn_id }}",
        cluster_spec={
            "num_workers": "{{ params.num_workers }}",
            "executor_cores": 1,
            "compute": "{{ params.compute }}",
            "autotermination_minutes": 60,
        },
        create_kwargs={"execution_timeout": timedelta(minutes=30)},
        input_table="{{ params.input_table }}",
        output_table="{{ params.output_table }}",
        model="{{ params.model }}",
        model_options="{{ params.model_options }}",
        input_columns={"text": "sentence"},
        output_columns={"generated_text": "translation"},
        batch_size="{{ params.batch_size }}",
        min_rows="{{ params.min_rows }}",
        outlets=[TRANSLATIONS],
        execution_timeout=timedelta(hours=3),
    )
