"""The embedded local backend: a Spark standalone cluster on this machine (:mod:`.backend`, its
lifecycle), its record (:mod:`.cluster_state`), its daemons (:mod:`.daemons`: master, workers, reaper),
their command lines (:mod:`.commands`) and its reaper (:mod:`.reaper`).

Imports nothing: the reaper runs as ``python -m airflow_spark_triton.backends.local.reaper`` and must
not import Airflow while it watches.
"""
