"""Where clusters and runs live: one contract (:mod:`.base`), one subpackage per backend.

Operators and the trigger call :class:`~airflow_spark_triton.backends.base.GpuSparkBackend` only;
:mod:`.registry` picks the implementation from the Airflow connection's type. Importing this package
imports nothing heavy: each backend is imported when a connection asks for it.
"""
