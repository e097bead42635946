"""What a served model declares it needs on the cluster's nodes, read and checked on the Airflow side.

A :class:`~spark_jobs.models.base.ServedModel` declares ``requirements`` (PEP 508 strings) and
``wheels``. Every backend reads the declaration here, so an invalid one fails the same way, naming
the model and the requirement, before anything starts: the Databricks backend turns it into cluster
and run ``libraries``, the local backend's init script checks it is installed on every node.

The declaration is read by importing the model module, which imports its heavy dependencies inside
its loader (see ``spark_jobs.models.base``), so the Airflow worker never needs torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from packaging.requirements import InvalidRequirement, Requirement

from airflow_spark_triton.errors import BackendConfigError
from spark_jobs.models.mlflow_pyfunc import is_mlflow_reference

if TYPE_CHECKING:
    from spark_jobs.models.mlflow_registry import ModelRegistry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelDependencies:
    """A model's declaration as read on the Airflow side: ``reference`` is ``module:attribute``."""

    reference: str
    requirements: tuple[str, ...]
    wheels: tuple[str, ...]
    python: str | None = None  # an MLflow model's python_env.yaml: the Python it was logged with


def model_dependencies(
    reference: str,
    setting: str = "job setting 'model'",
    *,
    registry: ModelRegistry | None = None,
    version: str | None = None,
) -> ModelDependencies:
    """Read a model's ``requirements`` and ``wheels``; every requirement must be valid PEP 508.

    An MLflow model's are its ``requirements.txt`` (the versions it was logged with), read through
    ``registry`` (default: the MLflow client) at ``version`` (default: what an alias names now).
    Errors name ``setting`` (the operator or cluster setting that named the model), the model
    reference and the requirement, and say why an import failed.
    """
    from spark_jobs.models.references import resolve_model

    if is_mlflow_reference(reference):
        return _mlflow_dependencies(reference, setting, registry, version)

    try:
        model = resolve_model(reference)
    except ValueError as exc:
        raise BackendConfigError(
            f"{setting}: {exc}. The Airflow worker imports the model module to read its "
            "declared requirements, so the module must import its heavy dependencies (torch, the "
            "model's packages) inside its loader, not at module top"
        ) from exc
    for requirement in model.requirements:
        check_requirement(requirement, reference)
    return ModelDependencies(reference, model.requirements, model.wheels)


def _mlflow_dependencies(
    reference: str, setting: str, registry: ModelRegistry | None, version: str | None
) -> ModelDependencies:
    from spark_jobs.models.mlflow_pyfunc import model_info, parse_reference
    from spark_jobs.models.mlflow_registry import MlflowClientRegistry

    registry = registry or MlflowClientRegistry()
    try:
        parsed = parse_reference(reference)
        parsed = parsed.pinned(version) if version else registry.pin(parsed)
        read = registry.reader(parsed)
        if read is None:
            log.warning(
                "Model %s: its requirements.txt cannot be read before the run; the nodes need what it "
                "imports installed already",
                reference,
            )
            return ModelDependencies(reference, (), ())
        info = model_info(parsed.uri, read)
    except ValueError as exc:
        raise BackendConfigError(f"{setting}: {exc}") from exc
    for requirement in info.requirements:
        check_requirement(requirement, reference)
    return ModelDependencies(reference, info.requirements, (), info.python)


def check_requirement(requirement: str, reference: str) -> Requirement:
    """A PEP 508 requirement without a URL (a wheel is declared in the model's ``wheels``)."""
    try:
        parsed = Requirement(requirement)
    except InvalidRequirement as exc:
        raise BackendConfigError(
            f"model {reference!r} declares requirement {requirement!r}, which is not a valid PEP 508 "
            f"requirement: {exc}"
        ) from exc
    if parsed.url:
        raise BackendConfigError(
            f"model {reference!r} declares requirement {requirement!r} with a URL; declare a wheel in "
            "the model's 'wheels' instead (uploaded to the volume and installed as a whl library)"
        )
    return parsed
