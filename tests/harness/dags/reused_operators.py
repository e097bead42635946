"""A user's own DAGs built from the provider's task group, deployed next to the project's DAGs.

The harness scenarios need what the nightly DAG does not offer as params: a create task without
retries (a kill -9 on its last try), a short retry delay, deferrable waits and a short timeout.
Tables and the model come from the run's conf, as a user's DAG would take them.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param

from airflow_spark_triton.task_group import gpu_batch_inference

VARIANTS = {
    # dag_id: (deferrable, execution_timeout and retries of the inference task)
    "reused_sync": (False, timedelta(minutes=10), 1),
    "reused_deferrable": (True, timedelta(minutes=10), 1),
    "reused_deferrable_timeout": (True, timedelta(seconds=45), 0),
}

for dag_id, (deferrable, timeout, retries) in VARIANTS.items():
    with DAG(
        dag_id=dag_id,
        schedule=None,  # triggered by the tests, with tables in the conf
        start_date=datetime(2026, 1, 1),
        catchup=False,
        render_template_as_native_obj=True,
        params={
            "input_table": Param("", type="string"),
            "output_table": Param("", type="string"),
            "model": Param("spark_jobs.models.hashing_embedder:MODEL", type="string"),
            "model_options": Param({}, type="object"),
        },
    ):
        gpu_batch_inference(
            "embed",
            cluster_spec={
                "num_workers": 1,
                "executor_cores": 1,
                "worker_memory": "1g",
                "spark_conf": {"spark.sql.shuffle.partitions": "4"},
            },
            create_kwargs={"retries": 0},
            input_table="{{ params.input_table }}",
            output_table="{{ params.output_table }}",
            model="{{ params.model }}",
            model_options="{{ params.model_options }}",
            batch_size=4,
            poll_interval_s=1.0,
            deferrable=deferrable,
            execution_timeout=timeout,
            retries=retries,
            retry_delay=timedelta(seconds=5),
        )
