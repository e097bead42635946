"""SQLite connection arguments of the deployed test stack (``[database] sql_alchemy_connect_args``).

SQLite has one writer. With Python's default 5 s busy timeout, a CLI write that meets the
scheduler's fails with "database is locked", and ``airflow backfill create`` can fail that way
half-way: CI saw a reprocess backfill created with 2 of its 3 dates, whose retry then met
AlreadyRunningBackfill. Waiting up to 60 s for the lock makes writers queue instead.
"""

CONNECT_ARGS = {"timeout": 60}
