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

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

InferFn = Callable[..., dict[str, "np.ndarray"]]
# Model options the server sets per instance (see ServedModel.load).
DEVICE_OPTION = "device"
INSTANCE_OPTION = "instance"


# TensorSpec dtypes. Text is UTF-8 (a string column in, through Triton as bytes, a string column
# out); binary is raw bytes such as an encoded image (a binary column in; not an output type).
TEXT = "bytes"
BINARY = "binary"
NUMERIC_DTYPES = (
    "float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "bool",
)  # fmt: skip
DTYPES = (TEXT, BINARY, *NUMERIC_DTYPES)
# What a binary input holds, where the job can tell a row that cannot be one before inference.
IMAGE = "image"  # an encoded image: PNG, JPEG, GIF, BMP, WEBP or TIFF, told by its first bytes
# A variable-length output travels padded to its batch's longest row, with each row's length in a
# second Triton output of this suffix; the client cuts every row back to its length.
LENGTH_SUFFIX = "__length"


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the model's signature, per row (the batch axis is implicit).

    ``shape`` ``(1,)`` is a scalar (one value per row, a scalar column); any other shape lands as an
    array column, flattened row-major. A leading ``-1`` makes an output variable-length (token ids,
    a list of tags): each row's array has its own length. ``dtype``: :data:`TEXT` (``"bytes"``),
    :data:`BINARY` or one of :data:`NUMERIC_DTYPES`.
    """

    name: str
    dtype: str  # "bytes" for text, "binary" for raw bytes, else a numpy dtype name: "float32", "int64", ...
    shape: tuple[int, ...] = (1,)
    max_bytes: int | None = None  # text or binary inputs longer than this are rejected, not truncated
    content: str | None = None  # a binary input's kind (IMAGE): rows that are not one are rejected

    def __post_init__(self) -> None:
        shape = tuple(int(d) for d in self.shape) or (1,)
        object.__setattr__(self, "shape", shape)
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"tensor name {self.name!r} must be letters, digits, '_' or '-'")
        if self.dtype not in DTYPES:
            raise ValueError(f"tensor {self.name!r}: dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if any(d == 0 or d < -1 for d in shape) or -1 in shape[1:]:
            raise ValueError(
                f"tensor {self.name!r}: shape {list(shape)} must hold sizes >= 1, with -1 (variable "
                "length) only as its first dimension"
            )
        if self.max_bytes is not None and self.max_bytes < 1:
            raise ValueError(f"tensor {self.name!r}: max_bytes must be >= 1, got {self.max_bytes}")
        if self.content is not None and (self.content != IMAGE or self.dtype != BINARY):
            raise ValueError(
                f"tensor {self.name!r}: content {self.content!r} needs dtype {BINARY!r} and is {IMAGE!r}"
            )

    @property
    def numpy_dtype(self) -> np.dtype:
        import numpy as np

        return np.dtype(np.bytes_) if self.is_bytes else np.dtype(self.dtype)

    @property
    def is_text(self) -> bool:
        return self.dtype == TEXT

    @property
    def is_binary(self) -> bool:
        return self.dtype == BINARY

    @property
    def is_bytes(self) -> bool:
        """Text or binary: what Triton carries as BYTES."""
        return self.dtype in (TEXT, BINARY)

    @property
    def is_variable(self) -> bool:
        return self.shape[0] == -1

    @property
    def is_scalar(self) -> bool:
        return self.shape == (1,)

    @property
    def values_per_row(self) -> int | None:
        """How many values one row holds (the product of the shape); None for a variable length."""
        if self.is_variable:
            return None
        count = 1
        for dim in self.shape:
            count *= dim
        return count


@dataclass(frozen=True)
class ServedModel:
    """A model that can be served by PyTriton and called from ``predict_batch_udf``.

    ``loader(options)`` is called in the server process and returns a batched infer function taking
    one numpy array per input (named as in ``inputs``) and returning ``{output name: array}`` for
    every output: a text output as ``str`` or UTF-8 ``bytes`` values, a variable-length output as a
    sequence of one array (or list) per row.

    Outputs: ``output`` names the one output of a single-output model; ``outputs`` names any
    number (give one of the two). Each output becomes its own column of the output table.

    Several instances of one model can serve side by side (one per GPU of a multi-GPU node): the
    server then calls ``loader`` once per instance, through :meth:`load` with ``device`` (a torch
    device string such as ``"cuda:1"``) and ``instance`` (0-based) set in the options, and a
    loader that places weights puts them on ``options["device"]``. A loader that ignores both (a
    CPU-only model) is served the same way, as copies that share nothing but the process.

    ``requirements``: PEP 508 strings of what the loader imports that a Databricks ML GPU runtime
    does not ship (e.g. ``"sentence-transformers>=3"``); the Databricks backend installs them on
    every node of the run's cluster. ``wheels``: wheel files to install the same way, each a local
    path (uploaded to the volume under its content digest) or a ``/Volumes/...`` path.

    ``inputs_by_name``: the inputs are the model's own column names (an MLflow signature's), so a
    dict ``input_columns`` renames some and every other input reads the column of its name.

    ``check_options``: called with the run's ``model_options`` on the Airflow side before anything
    starts (and by a loader that wants to); raises ``ValueError`` naming a bad option, so a typo or
    a forbidden option fails the task at once instead of a server on the cluster.
    """

    name: str
    inputs: tuple[TensorSpec, ...]
    output: TensorSpec | None = None
    loader: Callable[[Mapping[str, Any]], InferFn] | None = None
    max_batch_size: int = 256
    requirements: tuple[str, ...] = ()
    wheels: tuple[str, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    check_options: Callable[[Mapping[str, Any]], None] | None = None
    # The inputs are named columns (an MLflow signature): ``input_columns`` may rename only some.
    inputs_by_name: bool = False

    def __post_init__(self) -> None:
        for name in ("requirements", "wheels"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) and v.strip() for v in value):
                raise ValueError(
                    f"model {self.name!r}: {name} must be a tuple of non-empty strings, got {value!r}"
                )
            object.__setattr__(self, name, tuple(v.strip() for v in value))
        if self.loader is None:
            raise ValueError(f"model {self.name!r}: a loader is required")
        if self.max_batch_size < 1:
            raise ValueError(f"model {self.name!r}: max_batch_size must be >= 1, got {self.max_batch_size}")
        inputs, outputs = tuple(self.inputs), tuple(self.outputs)
        if self.output is not None and outputs and outputs != (self.output,):
            raise ValueError(f"model {self.name!r}: give 'output' (one) or 'outputs' (several), not both")
        outputs = outputs or ((self.output,) if self.output is not None else ())
        object.__setattr__(self, "inputs", inputs)
        object.__setattr__(self, "outputs", outputs)
        object.__setattr__(self, "output", outputs[0] if len(outputs) == 1 else None)
        if not inputs or not outputs:
            raise ValueError(f"model {self.name!r}: needs at least one input and one output")
        names = [t.name for t in (*inputs, *outputs)]
        if len(set(names)) != len(names):
            raise ValueError(f"model {self.name!r}: input and output names must be unique, got {names}")
        for tensor in inputs:
            if tensor.is_variable:
                raise ValueError(
                    f"model {self.name!r}: input {tensor.name!r} has a variable shape {list(tensor.shape)}; "
                    "inputs have fixed shapes (text and binary inputs are variable-length already)"
                )
        for tensor in outputs:
            if tensor.is_binary:
                raise ValueError(
                    f"model {self.name!r}: output {tensor.name!r} is binary; outputs are text or numbers"
                )
            if tensor.name.endswith(LENGTH_SUFFIX):
                raise ValueError(f"model {self.name!r}: output names must not end with {LENGTH_SUFFIX!r}")

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
        assert self.loader is not None  # __post_init__ requires it
        return self.loader(merged)
