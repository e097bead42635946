"""What a served model declares it needs on the cluster's nodes, read and checked on the Airflow side.

A :class:`~spark_jobs.models.base.ServedModel` declares ``requirements`` (PEP 508 strings) and
``wheels``. Every backend reads the declaration here, so an invalid one fails the same way, naming
the model and the requirement, before anything starts: the Databricks backend turns it into cluster
and run ``libraries``, the local backend's init script checks it is installed on every node.

The declaration is read by importing the model module, which imports its heavy dependencies inside
its loader (see ``spark_jobs.models.base``), so the Airflow worker never needs torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement

from airflow_spark_triton.errors import BackendConfigError


@dataclass(frozen=True)
class ModelDependencies:
    """A model's declaration as read on the Airflow side: ``reference`` is ``module:attribute``."""

    reference: str
    requirements: tuple[str, ...]
    wheels: tuple[str, ...]


def model_dependencies(reference: str, setting: str = "job setting 'model'") -> ModelDependencies:
    """Read a model's ``requirements`` and ``wheels``; every requirement must be valid PEP 508.

    Errors name ``setting`` (the operator or cluster setting that named the model), the model
    reference and the requirement, and say why an import failed.
    """
    from spark_jobs.models.references import resolve_model

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
