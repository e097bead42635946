"""Provider metadata Airflow reads through the ``apache_airflow_provider`` entry point.

Kept free of Airflow, Spark and torch imports: Airflow calls it while discovering providers.
"""

from __future__ import annotations

from typing import Any

PACKAGE = "airflow-spark-triton"
LOCAL_CONN_TYPE = "spark_triton_local"


def provider_info() -> dict[str, Any]:
    from airflow_spark_triton import __version__

    return {
        "package-name": PACKAGE,
        "name": "Spark + Triton GPU batch inference",
        "description": (
            "Create a GPU Spark cluster, run batch inference with one Triton Inference Server per node "
            "over Delta tables, and always delete the cluster: on Databricks or a local Spark cluster."
        ),
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Spark + Triton batch inference",
                "external-doc-url": "https://github.com/triton-inference-server/pytriton",
                "tags": ["service"],
            }
        ],
        "operators": [
            {
                "integration-name": "Spark + Triton batch inference",
                "python-modules": [
                    "airflow_spark_triton.operators.cluster",
                    "airflow_spark_triton.operators.inference",
                ],
            }
        ],
        "hooks": [
            {
                "integration-name": "Spark + Triton batch inference",
                "python-modules": [
                    "airflow_spark_triton.hooks.local_spark",
                    "airflow_spark_triton.hooks.databricks_gpu",
                    "airflow_spark_triton.hooks.spark_submit",
                ],
            }
        ],
        "triggers": [
            {
                "integration-name": "Spark + Triton batch inference",
                "python-modules": ["airflow_spark_triton.triggers.run_status"],
            }
        ],
        "connection-types": [
            {
                "hook-class-name": "airflow_spark_triton.hooks.local_spark.LocalSparkHook",
                "connection-type": LOCAL_CONN_TYPE,
                "hook-name": "Spark + Triton (local standalone)",
                # Declarative UI metadata (Airflow >= 3.2); the hook's get_ui_field_behaviour() is the
                # fallback for older UIs. Extras land in the connection's extra JSON under these names.
                "ui-field-behaviour": {
                    "hidden-fields": ["host", "schema", "login", "password", "port"],
                    "relabeling": {},
                    "placeholders": {},
                },
                "conn-fields": {
                    "home": {
                        "label": "State directory (clusters, runs, logs)",
                        "description": "Default: $AIRFLOW_SPARK_TRITON_HOME or ~/.airflow_spark_triton",
                        "schema": {"type": ["string", "null"]},
                    },
                    "python": {
                        "label": "Python of drivers and executors",
                        "description": "Needs pyspark, pytriton, deltalake and spark_jobs; default: Airflow's",
                        "schema": {"type": ["string", "null"]},
                    },
                    "worker_memory": {
                        "label": "Worker memory (e.g. 2g)",
                        "description": "Overrides the cluster spec's worker_memory",
                        "schema": {"type": ["string", "null"], "pattern": "^$|^[0-9]+[kKmMgGtT][bB]?$"},
                    },
                },
            }
        ],
        "extra-links": [
            "airflow_spark_triton.links.InferenceRunLink",
            "airflow_spark_triton.links.InferenceReportLink",
        ],
        # The run pages; the package's `airflow.plugins` entry point loads the same class.
        "plugins": [
            {
                "name": "spark_triton_runs",
                "plugin-class": "airflow_spark_triton.ui.plugin.SparkTritonRunsPlugin",
            }
        ],
    }
