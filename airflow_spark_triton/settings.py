"""Operator settings as the Python types they declare, whatever a template rendered.

Airflow renders a templated field to text unless the DAG sets ``render_template_as_native_obj=True``:
``batch_size="{{ params.batch_size }}"`` reaches the operator as ``"64"``, a templated dict as its
Python repr. A reused operator must work in any DAG, so every setting passes through here, in one
place, before it builds a :class:`~airflow_spark_triton.cluster_spec.GpuClusterSpec` or an
:class:`~spark_jobs.contract.InferenceJobConfig`: pydantic (which Airflow ships) coerces in lax mode
(``"64"`` -> 64, ``"1.5"`` -> 1.5, ``"true"`` -> True, ``"None"`` -> None where None is allowed), text
that holds a dict or list is parsed as JSON or a Python literal, and a value that cannot be coerced
fails with the setting's name, the expected type and the value.

The dataclasses keep their own checks (ranges, consistency): this module only fixes types, so the job
side (``spark_jobs``, no pydantic) and the Airflow side validate the same way.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import typing
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any, TypeVar

from pydantic import ConfigDict, TypeAdapter, ValidationError

T = TypeVar("T")

# Numbers are fine where text is expected (a spark conf value, a date column name): str() them.
_CONFIG = ConfigDict(coerce_numbers_to_str=True)


@cache
def _adapter(annotation: Any) -> TypeAdapter[Any]:
    return TypeAdapter(annotation, config=_CONFIG)


@cache
def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _literal(text: str) -> Any:
    """``text`` as JSON or a Python literal (how Jinja renders a dict, list or None), else unchanged."""
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    return text


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def coerce_setting(
    name: str,
    value: Any,
    annotation: Any,
    *,
    label: str = "setting",
    error: Callable[[str], Exception] = ValueError,
) -> Any:
    """``value`` as ``annotation``; raises ``error`` naming ``label`` ``name`` when it cannot be."""
    adapter = _adapter(annotation)
    try:
        return adapter.validate_python(value)
    except ValidationError as first:
        if isinstance(value, str):
            parsed = _literal(value.strip())
            if parsed is not value:
                try:
                    return adapter.validate_python(parsed)
                except ValidationError:
                    pass
        reason = first.errors()[0].get("msg", "invalid")
        raise error(f"{label} {name!r} must be {_type_name(annotation)}, got {value!r} ({reason})") from None


def coerce_mapping(
    name: str, value: Any, *, label: str = "setting", error: Callable[[str], Exception] = ValueError
) -> dict[str, Any]:
    """A dict setting that may have been rendered to text as a whole."""
    return dict(
        coerce_setting(name, {} if value is None else value, dict[str, Any], label=label, error=error)
    )


def coerce_fields(
    cls: type[T],
    data: Mapping[str, Any],
    *,
    label: str,
    error: Callable[[str], Exception] = ValueError,
) -> dict[str, Any]:
    """``data`` with each value coerced to the type ``cls`` (a dataclass) declares for it.

    Unknown names fail here, listed, rather than as a ``TypeError`` from the constructor.
    """
    types = _field_types(cls)
    unknown = sorted(set(data) - set(types))
    if unknown:
        raise error(f"unknown {label}(s): {', '.join(unknown)}; known: {', '.join(sorted(types))}")
    return {
        name: coerce_setting(name, value, types[name], label=label, error=error)
        for name, value in data.items()
    }
