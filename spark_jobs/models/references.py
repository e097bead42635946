"""What a ``model`` setting names: the one place a reference becomes a :class:`ServedModel`.

Two forms, both resolved the same way on the Airflow side (pre-flight, model requirements), on the
driver and in each node's Triton server: ``hf:<task>:<directory or hub id>``
(:mod:`spark_jobs.models.huggingface`, which imports nothing heavy to resolve one) and
``package.module:attribute`` (imported). Its own module because it needs both the base classes and
the Hugging Face references, which themselves build on the base classes.
"""

from __future__ import annotations

import importlib

from spark_jobs.models.base import ServedModel
from spark_jobs.models.huggingface import HF_SCHEME, hf_model_from_reference


def resolve_model(reference: str) -> ServedModel:
    """The model a reference names; errors name the reference.

    ``hf:<task>:<directory or hub id>``: a Hugging Face transformers model served through its task
    (:mod:`spark_jobs.models.huggingface`; nothing is imported or downloaded to resolve it).
    ``package.module:attribute``: import it and check it is a :class:`ServedModel` (or a callable
    returning one).
    """
    if reference.startswith(HF_SCHEME):
        return hf_model_from_reference(reference)
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
