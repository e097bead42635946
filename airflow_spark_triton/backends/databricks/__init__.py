"""The Databricks backend: all-purpose GPU clusters and one-time ``runs/submit`` runs.

:mod:`.backend` holds the lifecycle, :mod:`.cluster_spec` the ``clusters/create`` body and
:mod:`.artifacts` what is shipped to the workspace; the connection, auth and retries are
:class:`~airflow_spark_triton.hooks.databricks_gpu.DatabricksGpuHook`'s.
"""
