"""How a model's outputs travel through Triton and come back as one value per row and output.

Pure numpy, used on both ends: the node's server encodes what a loader's infer function returned
(:func:`encode_outputs`), the Spark worker's client decodes Triton's answer (:func:`decode_outputs`).

- Text goes as UTF-8 bytes (Triton's BYTES) and comes back as ``str``.
- A fixed shape goes as ``(rows, *shape)`` and comes back as one flat array per row (or one value
  for a scalar).
- A variable-length output (leading ``-1``) goes padded to the longest row of its batch, with each
  row's length in a second output ``<name>__length``; the client cuts each row back to its length,
  so a row's array is exactly what the model returned for it, however Triton batched the rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from spark_jobs.models.base import LENGTH_SUFFIX, ServedModel, TensorSpec

if TYPE_CHECKING:
    import numpy as np


def triton_outputs(model: ServedModel) -> list[TensorSpec]:
    """The tensors the server declares: every output, and a length for each variable-length one."""
    tensors = []
    for spec in model.outputs:
        tensors.append(spec)
        if spec.is_variable:
            tensors.append(TensorSpec(spec.name + LENGTH_SUFFIX, "int64", (1,)))
    return tensors


def _text_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return str(value).encode("utf-8")


def _as_array(value: Any, spec: TensorSpec, model: ServedModel) -> np.ndarray:
    import numpy as np

    if spec.is_text:
        flat = np.asarray(value, dtype=object).reshape(-1)
        return np.array([_text_bytes(v) for v in flat], dtype=object)
    try:
        return np.asarray(value).astype(spec.numpy_dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model {model.name}: output {spec.name!r} is not {spec.dtype}: {exc}") from exc


def encode_outputs(model: ServedModel, result: Mapping[str, Any], rows: int) -> dict[str, np.ndarray]:
    """What the server returns to Triton for one batch of ``rows`` rows; errors name the output."""
    import numpy as np

    missing = [spec.name for spec in model.outputs if spec.name not in result]
    if missing:
        raise ValueError(f"model {model.name} returned no output {missing} (it returned {sorted(result)})")
    wire: dict[str, np.ndarray] = {}
    for spec in model.outputs:
        value = result[spec.name]
        inner = spec.shape[1:]
        if spec.is_variable:
            per_row = [_as_array(row, spec, model).reshape(-1, *inner) for row in value]
            if len(per_row) != rows:
                raise ValueError(
                    f"model {model.name}: output {spec.name!r} has {len(per_row)} rows for {rows}"
                )
            lengths = np.array([len(a) for a in per_row], dtype=np.int64).reshape(rows, 1)
            longest = max(1, int(lengths.max(initial=0)))  # Triton wants a non-empty dimension
            fill = b"" if spec.is_text else 0
            padded = np.full(
                (rows, longest, *inner), fill, dtype=object if spec.is_text else spec.numpy_dtype
            )
            for i, array in enumerate(per_row):
                padded[i, : len(array)] = array
            wire[spec.name], wire[spec.name + LENGTH_SUFFIX] = padded, lengths
            continue
        array = _as_array(value, spec, model)
        if array.size != rows * (spec.values_per_row or 0):
            raise ValueError(
                f"model {model.name}: output {spec.name!r} has {array.size} values for {rows} rows of "
                f"shape {list(spec.shape)}"
            )
        wire[spec.name] = array.reshape(rows, *spec.shape)
    return wire


def _decode_text(values: np.ndarray) -> np.ndarray:
    import numpy as np

    flat = values.reshape(-1)
    decoded = [v.decode("utf-8") if isinstance(v, bytes | bytearray) else str(v) for v in flat]
    return np.array(decoded, dtype=object).reshape(values.shape)


def decode_outputs(model: ServedModel, wire: Mapping[str, np.ndarray]) -> dict[str, Sequence[Any]]:
    """One entry per output: a 1-D array (scalar outputs), a 2-D array (one flat row each, fixed
    shapes) or a list of 1-D arrays (variable length); text as ``str``."""
    import numpy as np

    columns: dict[str, Sequence[Any]] = {}
    for spec in model.outputs:
        values = np.asarray(wire[spec.name])
        if spec.is_text:
            values = _decode_text(values)
        rows = len(values)
        if spec.is_variable:
            lengths = np.asarray(wire[spec.name + LENGTH_SUFFIX]).reshape(-1)
            columns[spec.name] = [values[i, : lengths[i]].reshape(-1) for i in range(rows)]
        elif spec.is_scalar:
            columns[spec.name] = values.reshape(rows)
        else:
            columns[spec.name] = values.reshape(rows, -1)
    return columns
