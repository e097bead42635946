"""The errors this package raises on purpose: a leaf that hooks, backends and operators all import.

Every one is a :class:`BackendError`, an ``AirflowException``, so a task fails with the backend's own
reason and a DAG author can catch one type for all backends. They live apart from the backend
contract (:mod:`~airflow_spark_triton.backends.base`, which re-exports them as its public names) so
that a hook, which sits below the backends, raises them without importing the backends.
"""

from __future__ import annotations

from airflow.exceptions import AirflowException


class BackendError(AirflowException):
    """Base of every error a backend raises on purpose; the message carries the backend's reason."""


class BackendConfigError(BackendError, ValueError):
    """A connection or setting the backend cannot use; the message names the setting."""


class ClusterError(BackendError):
    """The cluster could not be created or became unusable; the message carries the backend's reason."""


class RunError(BackendError):
    """The inference run failed, was canceled or left no report; the message carries the job's own error."""
