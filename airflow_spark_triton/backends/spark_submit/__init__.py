"""The spark-submit backend: runs on a Spark cluster this package does not own (:mod:`.backend`),
through the Spark provider's ``SparkSubmitHook`` in a detached runner (:mod:`.runner`).

Imports nothing, so ``python -m airflow_spark_triton.backends.spark_submit.runner`` starts light.
"""
