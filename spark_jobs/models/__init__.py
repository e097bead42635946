"""Models the job can serve, named by a reference (``module:attribute`` or ``hf:<task>:<model>``)."""

from spark_jobs.models.base import ServedModel, TensorSpec
from spark_jobs.models.references import resolve_model

__all__ = ["ServedModel", "TensorSpec", "resolve_model"]
