"""Provider metadata Airflow reads through the ``apache_airflow_provider`` entry point.

Kept free of Airflow, Spark and torch imports: Airflow calls it while discovering providers.
"""

from __future__ import annotations

from typing import Any

from airflow_spark_triton.config_section import CONFIG_SECTION, SECRETS_KEY_OPTION

PACKAGE = "airflow-spark-triton"
LOCAL_CONN_TYPE = "spark_triton_local"
DEFAULT_RETENTION_DAYS = 30


def provider_info(version: str) -> dict[str, Any]:
    """The provider's metadata at ``version``: the package's ``__version__``, passed in by the package
    so that this module, which the package imports, never imports the package back (no cycle)."""
    from airflow_spark_triton.trigger_policy import DEFAULTS, DESCRIPTIONS

    return {
        "package-name": PACKAGE,
        "name": "Spark + Triton GPU batch inference",
        "description": (
            "Create a GPU Spark cluster, run batch inference with one Triton Inference Server per node "
            "over Delta tables, and always delete the cluster: on Databricks or a local Spark cluster."
        ),
        "versions": [version],
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
                    "airflow_spark_triton.operators.retention",
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
        "config": {
            CONFIG_SECTION: {
                "description": "Settings of the airflow-spark-triton provider (GPU batch inference).",
                "options": {
                    # What a DAG run's conf may set (airflow_spark_triton.trigger_policy).
                    **{
                        name: {
                            "description": DESCRIPTIONS[name],
                            "version_added": "0.1.0",
                            "type": "string",
                            "example": None,
                            "default": DEFAULTS[name],
                        }
                        for name in DEFAULTS
                    },
                    "retention_days": {
                        "description": (
                            "Days after which RemoveExpiredOperator (the spark_triton_retention DAG) removes "
                            "what finished clusters and runs left behind: local and spark-submit state "
                            "directories with their logs and reports, and the reports, job cluster "
                            "definitions and code versions under a Databricks connection's artifact_root. "
                            "Never anything of a live cluster or an unfinished run. At least 1."
                        ),
                        "version_added": "0.1.0",
                        "type": "integer",
                        "example": "14",
                        "default": str(DEFAULT_RETENTION_DAYS),
                    },
                    SECRETS_KEY_OPTION: {
                        "description": (
                            "Fernet key(s) that seal the secret values of a cluster spec's spark_env_vars in "
                            "the local and spark-submit backends' state records (comma-separated, newest "
                            "first, while rotating). Every worker needs the same value. Unset: Airflow's "
                            "[core] fernet_key; neither: secret spark_env_vars are refused there."
                        ),
                        "version_added": "0.1.0",
                        "type": "string",
                        "sensitive": True,
                        "example": None,
                        "default": "",
                    },
                },
            },
        },
    }
