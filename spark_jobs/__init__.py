"""Code that runs on the Spark cluster: plain PySpark, PyTriton and Delta I/O, no Airflow imports."""
