"""Models the job can serve, named by a ``module:attribute`` reference to a :class:`ServedModel`."""

from spark_jobs.models.base import ServedModel, TensorSpec, resolve_model

__all__ = ["ServedModel", "TensorSpec", "resolve_model"]
