"""How a model is described to the job: a cheap signature plus a loader that runs inside Triton.

The driver needs only the tensor signature (to validate rows and shape the UDF's return type); the
weights are loaded once per node, inside the PyTriton server process, by ``loader``. Keeping the two
apart is what lets one model copy per node serve every Spark task on that node.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

InferFn = Callable[..., dict[str, np.ndarray]]


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the model's signature, per row (the batch axis is implicit)."""

    name: str
    dtype: str  # numpy dtype name: "bytes" for text, "float32", "int64", ...
    shape: tuple[int, ...] = (1,)
    max_bytes: int | None = None  # text inputs longer than this are rejected, not truncated

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(np.bytes_) if self.dtype == "bytes" else np.dtype(self.dtype)

    @property
    def is_text(self) -> bool:
        return self.dtype == "bytes"


@dataclass(frozen=True)
class ServedModel:
    """A model that can be served by PyTriton and called from ``predict_batch_udf``.

    ``loader(options)`` is called in the server process and returns a batched infer function taking
    one numpy array per input (named as in ``inputs``) and returning ``{output.name: array}``.
    """

    name: str
    inputs: tuple[TensorSpec, ...]
    output: TensorSpec
    loader: Callable[[Mapping[str, Any]], InferFn]
    max_batch_size: int = 256

    def load(self, options: Mapping[str, Any] | None = None) -> InferFn:
        return self.loader(dict(options or {}))


def resolve_model(reference: str) -> ServedModel:
    """Import ``module:attribute`` and check it is a :class:`ServedModel`; errors name the reference."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"model reference {reference!r} must look like 'package.module:attribute'")
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
