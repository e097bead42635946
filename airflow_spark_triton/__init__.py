"""Apache Airflow provider for GPU batch inference on Spark with one Triton server per node."""

from __future__ import annotations

__version__ = "0.1.0"


def get_provider_info() -> dict:
    from airflow_spark_triton.provider_info import provider_info

    return provider_info()
