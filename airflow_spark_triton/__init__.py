"""Apache Airflow provider for GPU batch inference on Spark with one Triton server per node."""

from __future__ import annotations

# The one place of the version: pyproject.toml reads it (setuptools dynamic, a literal, no import) and so
# does the provider info. Keep this module free of imports: Airflow loads it to discover providers.
__version__ = "0.1.0"


def get_provider_info() -> dict:
    from airflow_spark_triton.provider_info import provider_info

    return provider_info(__version__)
