"""How a model is described to the job: a cheap signature plus a loader that runs inside Triton.

The driver needs only the tensor signature (to validate rows and shape the UDF's return type); the
weights are loaded once per node, inside the PyTriton server process, by ``loader``. Keeping the two
apart is what lets one model copy per node serve every Spark task on that node.

A model also declares what it needs installed on the cluster (``requirements``, ``wheels``). The
Airflow side reads that declaration by importing the model module, so a model module imports its
heavy dependencies (torch, numpy, the model's own packages) inside its loader, never at module top:
this module and the example models import nothing beyond the standard library when imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

InferFn = Callable[..., dict[str, "np.ndarray"]]
# Model options the server sets per instance (see ServedModel.load).
DEVICE_OPTION = "device"
INSTANCE_OPTION = "instance"


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the model's signature, per row (the batch axis is implicit)."""

    name: str
    dtype: str  # numpy dtype name: "bytes" for text, "float32", "int64", ...
    shape: tuple[int, ...] = (1,)
    max_bytes: int | None = None  # text inputs longer than this are rejected, not truncated

    @property
    def numpy_dtype(self) -> np.dtype:
        import numpy as np

        return np.dtype(np.bytes_) if self.dtype == "bytes" else np.dtype(self.dtype)

    @property
    def is_text(self) -> bool:
        return self.dtype == "bytes"


@dataclass(frozen=True)
class ServedModel:
    """A model that can be served by PyTriton and called from ``predict_batch_udf``.

    ``loader(options)`` is called in the server process and returns a batched infer function taking
    one numpy array per input (named as in ``inputs``) and returning ``{output.name: array}``.

    Several instances of one model can serve side by side (one per GPU of a multi-GPU node): the
    server then calls ``loader`` once per instance, through :meth:`load` with ``device`` (a torch
    device string such as ``"cuda:1"``) and ``instance`` (0-based) set in the options, and a
    loader that places weights puts them on ``options["device"]``. A loader that ignores both (a
    CPU-only model) is served the same way, as copies that share nothing but the process.

    ``requirements``: PEP 508 strings of what the loader imports that a Databricks ML GPU runtime
    does not ship (e.g. ``"sentence-transformers>=3"``); the Databricks backend installs them on
    every node of the run's cluster. ``wheels``: wheel files to install the same way, each a local
    path (uploaded to the volume under its content digest) or a ``/Volumes/...`` path.
    """

    name: str
    inputs: tuple[TensorSpec, ...]
    output: TensorSpec
    loader: Callable[[Mapping[str, Any]], InferFn]
    max_batch_size: int = 256
    requirements: tuple[str, ...] = ()
    wheels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("requirements", "wheels"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) and v.strip() for v in value):
                raise ValueError(
                    f"model {self.name!r}: {name} must be a tuple of non-empty strings, got {value!r}"
                )
            object.__setattr__(self, name, tuple(v.strip() for v in value))

    def load(
        self,
        options: Mapping[str, Any] | None = None,
        *,
        device: str | None = None,
        instance: int | None = None,
    ) -> InferFn:
        """The infer function of one instance; without ``device``/``instance``, options pass as given.

        ``device`` replaces a ``device`` model option that is unset or a bare ``"cuda"`` (which would
        put every instance on GPU 0); an explicit one (``"cpu"``, ``"cuda:2"``) is the user's choice
        and is kept for every instance.
        """
        merged = dict(options or {})
        if device is not None and merged.get(DEVICE_OPTION) in (None, "", "cuda"):
            merged[DEVICE_OPTION] = device
        if instance is not None:
            merged[INSTANCE_OPTION] = instance
        return self.loader(merged)


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
