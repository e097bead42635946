"""Request validation against the databricks-sdk: the SDK's method signatures and dataclasses are the schema.

The SDK is generated from Databricks' OpenAPI spec, so checking a body against the SDK method that
issues the same call (its parameters, then every nested dataclass field, enum and primitive type)
catches the mistakes a real workspace rejects: unknown or misplaced fields, wrong types, missing
required fields. ``from_dict(...).as_dict()`` round trips confirm the SDK itself accepts the body.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import typing
from collections.abc import Callable
from typing import Any


class InvalidRequest(ValueError):
    """Maps to HTTP 400 ``INVALID_PARAMETER_VALUE``; the message names the offending field."""


def _unwrap_optional(hint: Any) -> Any:
    if typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else Any
    return hint


def _json_names(cls: type) -> dict[str, dataclasses.Field]:
    # The SDK suffixes fields named like Python keywords (``global_``); the JSON key has no suffix.
    return {f.name.rstrip("_"): f for f in dataclasses.fields(cls)}


def _required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def check_value(value: Any, hint: Any, path: str) -> None:
    hint = _unwrap_optional(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or value is None:
        return
    if origin is list:
        if not isinstance(value, list):
            raise InvalidRequest(f"field '{path}' must be an array, got {type(value).__name__}")
        for i, item in enumerate(value):
            check_value(item, args[0] if args else Any, f"{path}[{i}]")
    elif origin is dict:
        if not isinstance(value, dict):
            raise InvalidRequest(f"field '{path}' must be an object, got {type(value).__name__}")
        for key, item in value.items():
            check_value(item, args[1] if args else Any, f"{path}.{key}")
    elif dataclasses.is_dataclass(hint):
        check_object(value, hint, path)
    elif isinstance(hint, type) and issubclass(hint, enum.Enum):
        allowed = {m.value for m in hint}
        if value not in allowed:
            raise InvalidRequest(f"field '{path}' has invalid value {value!r} for {hint.__name__}")
    elif hint is bool:
        if not isinstance(value, bool):
            raise InvalidRequest(f"field '{path}' must be a boolean, got {value!r}")
    elif hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidRequest(f"field '{path}' must be an integer, got {value!r}")
    elif hint is float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise InvalidRequest(f"field '{path}' must be a number, got {value!r}")
    elif hint is str and not isinstance(value, str):
        raise InvalidRequest(f"field '{path}' must be a string, got {value!r}")


def check_object(value: Any, cls: type, path: str) -> None:
    if not isinstance(value, dict):
        raise InvalidRequest(f"field '{path}' must be an object, got {type(value).__name__}")
    fields = _json_names(cls)
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise InvalidRequest(f"unknown field '{path}.{unknown[0]}' ({cls.__name__} has no such field)")
    for name, field in fields.items():
        if _required(field) and name not in value:
            raise InvalidRequest(f"missing required field '{path}.{name}'")
    hints = typing.get_type_hints(cls)
    for key, item in value.items():
        check_value(item, hints[fields[key].name], f"{path}.{key}")
    roundtrip = cls.from_dict(value).as_dict()
    dropped = [k for k, v in value.items() if v not in (None, [], {}) and k not in roundtrip]
    if dropped:
        raise InvalidRequest(f"field '{path}.{dropped[0]}' is not accepted by {cls.__name__}")


def check_call(fn: Callable[..., Any], body: dict[str, Any], path: str = "body") -> None:
    """``body`` must be a valid set of keyword arguments for the SDK method ``fn``."""
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    params = {n.rstrip("_"): p for n, p in inspect.signature(fn).parameters.items() if n != "self"}
    unknown = sorted(set(body) - set(params))
    if unknown:
        raise InvalidRequest(f"unknown field '{unknown[0]}' in {path} of {fn.__qualname__}")
    for name, param in params.items():
        if param.default is inspect.Parameter.empty and name not in body:
            raise InvalidRequest(f"missing required field '{name}' in {path} of {fn.__qualname__}")
    hints = typing.get_type_hints(fn)
    for key, value in body.items():
        check_value(value, hints[params[key].name], key)


def _coerce(raw: list[str], hint: Any, path: str) -> Any:
    hint = _unwrap_optional(hint)
    if typing.get_origin(hint) is list:
        return [_coerce([v], typing.get_args(hint)[0], path) for v in raw]
    value = raw[-1]
    if hint is int:
        try:
            return int(value)
        except ValueError:
            raise InvalidRequest(f"query parameter '{path}' must be an integer, got {value!r}") from None
    if hint is bool:
        if value not in ("true", "false"):
            raise InvalidRequest(f"query parameter '{path}' must be true or false, got {value!r}")
        return value == "true"
    return value


def query_to_body(fn: Callable[..., Any], query: dict[str, list[str]]) -> dict[str, Any]:
    """Typed body from a query string the way the SDK flattens it (``filter_by.cluster_states=...``)."""
    hints = typing.get_type_hints(fn)
    params = {n.rstrip("_"): n for n in inspect.signature(fn).parameters if n != "self"}
    body: dict[str, Any] = {}
    for key, raw in query.items():
        head, _, rest = key.partition(".")
        if head not in params:
            raise InvalidRequest(f"unknown query parameter '{key}' of {fn.__qualname__}")
        hint = _unwrap_optional(hints[params[head]])
        if rest:
            if not dataclasses.is_dataclass(hint):
                raise InvalidRequest(f"query parameter '{key}': '{head}' has no fields")
            fields = _json_names(hint)
            if rest not in fields:
                raise InvalidRequest(
                    f"unknown query parameter '{key}' ({hint.__name__} has no field '{rest}')"
                )
            nested_hint = typing.get_type_hints(hint)[fields[rest].name]
            body.setdefault(head, {})[rest] = _coerce(raw, nested_hint, key)
        else:
            body[head] = _coerce(raw, hints[params[head]], key)
    return body
