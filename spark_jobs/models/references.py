"""What a ``model`` setting names: the one place a reference becomes a :class:`ServedModel`.

Three forms, each resolved the same way on the Airflow side (pre-flight, model requirements), on the
driver and in each node's Triton server: ``hf:<task>:<directory or hub id>``
(:mod:`spark_jobs.models.huggingface`, which imports nothing heavy to resolve one), an MLflow model
(``models:/...``, ``runs:/...`` or a model directory: :mod:`spark_jobs.models.mlflow_pyfunc`, whose
signature and requirements are read from the model's files through a
:class:`~spark_jobs.models.mlflow_registry.ModelRegistry`) and ``package.module:attribute``
(imported). Its own module because it needs the base classes and every kind of reference, which
themselves build on the base classes.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from spark_jobs.models.base import ServedModel
from spark_jobs.models.huggingface import HF_SCHEME, hf_model_from_reference
from spark_jobs.models.mlflow_pyfunc import is_mlflow_reference, mlflow_model, parse_reference

if TYPE_CHECKING:
    from spark_jobs.models.mlflow_registry import ModelRegistry


class ModelNotReadable(ValueError):
    """An MLflow model's files cannot be read from here (before a cluster): its checks are the job's."""


def resolve_model(
    reference: str,
    *,
    version: str | None = None,
    options: Mapping[str, Any] | None = None,
    input_columns: Sequence[str] | Mapping[str, str] | None = None,
    column_types: Mapping[str, Any] | None = None,
    registry: ModelRegistry | None = None,
) -> ServedModel:
    """The model a reference names; errors name the reference.

    ``hf:<task>:<directory or hub id>``: a Hugging Face transformers model served through its task
    (:mod:`spark_jobs.models.huggingface`; nothing is imported or downloaded to resolve it).
    ``models:/``, ``runs:/`` or a directory: an MLflow model, its files read through ``registry``
    (default: the MLflow client, ``MLFLOW_TRACKING_URI``), ``version`` pinning a ``models:/`` one;
    ``options``, ``input_columns`` and ``column_types`` type a model without a signature.
    ``package.module:attribute``: import it and check it is a :class:`ServedModel` (or a callable
    returning one).
    """
    if reference.startswith(HF_SCHEME):
        return hf_model_from_reference(reference)
    if is_mlflow_reference(reference):
        return _mlflow(reference, version, options, input_columns, column_types, registry)
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ValueError(
            f"model reference {reference!r} must look like 'package.module:attribute' or "
            "'hf:<task>:<directory or hub id>'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"model reference {reference!r}: cannot import module {module_name!r}: {exc}"
        ) from exc
    try:
        model = getattr(module, attribute)
    except AttributeError as exc:
        raise ValueError(
            f"model reference {reference!r}: module {module_name!r} has no attribute {attribute!r}"
        ) from exc
    if callable(model) and not isinstance(model, ServedModel):
        model = model()
    if not isinstance(model, ServedModel):
        raise ValueError(f"model reference {reference!r} is a {type(model).__name__}, not a ServedModel")
    return model


def _mlflow(
    reference: str,
    version: str | None,
    options: Mapping[str, Any] | None,
    input_columns: Sequence[str] | Mapping[str, str] | None,
    column_types: Mapping[str, Any] | None,
    registry: ModelRegistry | None,
) -> ServedModel:
    from spark_jobs.models.mlflow_registry import MlflowClientRegistry

    parsed = parse_reference(reference)
    registry = registry or MlflowClientRegistry()
    parsed = parsed.pinned(version) if version else registry.pin(parsed)
    read = registry.reader(parsed)
    if read is None:
        raise ModelNotReadable(f"model {parsed.uri}: its files cannot be read before the run")
    return mlflow_model(
        parsed.uri,
        read,
        location=parsed.directory,
        options=options,
        input_columns=input_columns,
        column_types=column_types,
    )
