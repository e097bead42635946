"""The run pages in the Airflow UI: an Airflow plugin (a FastAPI app in the API server) that shows an
inference run of a task instance (progress, throughput, rejects, servers, report, driver log).

:mod:`.urls` is all the task side needs (the extra links' targets); the app itself is imported
only by the API server (:mod:`.plugin`).
"""
