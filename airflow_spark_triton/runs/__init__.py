"""Runs and processes on this machine, shared by the local and spark-submit backends. No Airflow here.

- :mod:`.records`: JSON records under one file lock, with guarded state transitions; ``now_iso``;
  where the state home is.
- :mod:`.processes`: process identity (pid + create time) and stopping process groups safely.
- :mod:`.env`: the allow-listed environment of every process a backend starts.
- :mod:`.supervisor`: the detached supervisor of one run (``python -m airflow_spark_triton.runs.supervisor``).
- :mod:`.supervised`: :class:`~.supervised.SupervisedRuns`, the component a backend holds to start,
  watch, cancel and read supervised runs.

Nothing in this package imports Airflow: the supervisor and the local cluster's reaper run it in a
bare interpreter, and a backend turns its plain results and errors into the backend contract's.
"""
