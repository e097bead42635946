"""The ``predict_batch_udf`` whose predict function is a Triton client bound to its own node's server.

Each Spark Python worker builds one client, once, pointing at 127.0.0.1 and the port recorded by
the server on that host: the model lives in the server (one copy per node), the workers only move
Arrow batches to it.

Outputs: a model with one plain output (a number, text or a fixed-size array) gets a UDF returning
that value; any other model (several outputs, a variable-length or a boolean output) a UDF
returning a struct with one field per output. :func:`prediction_columns` turns either into one
column per output, so the job writes each output as its own column.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from pyspark.ml.functions import predict_batch_udf
from pyspark.sql import Column
from pyspark.sql import types as T

from spark_jobs.models.base import ServedModel, TensorSpec
from spark_jobs.models.wire import decode_outputs
from spark_jobs.progress_channel import ProgressSender
from spark_jobs.triton_node import ServerRequest, ensure_local_server, server_healthy

# Per output dtype: the numpy dtype and Spark type predict_batch_udf carries it as (its return types
# have no boolean or unsigned types: bool travels as tinyint and is cast back, unsigned widens).
_CARRIED = {
    "float16": ("float32", T.FloatType()),
    "float32": ("float32", T.FloatType()),
    "float64": ("float64", T.DoubleType()),
    "int8": ("int8", T.ByteType()),
    "int16": ("int16", T.ShortType()),
    "int32": ("int32", T.IntegerType()),
    "int64": ("int64", T.LongType()),
    "uint8": ("int16", T.ShortType()),
    "uint16": ("int32", T.IntegerType()),
    "uint32": ("int64", T.LongType()),
    "bool": ("int8", T.ByteType()),
    "bytes": (None, T.StringType()),
}


def _carried_type(spec: TensorSpec) -> T.DataType:
    element = _CARRIED[spec.dtype][1]
    return element if spec.is_scalar else T.ArrayType(element)


def output_type(spec: TensorSpec) -> T.DataType:
    """The output table's type of one output: ``string``, ``float``, ``array<bigint>``, ``boolean`` ..."""
    element = T.BooleanType() if spec.dtype == "bool" else _CARRIED[spec.dtype][1]
    return element if spec.is_scalar else T.ArrayType(element)


def _plain(model: ServedModel) -> bool:
    """One output that predict_batch_udf can return as it is: the UDF returns the value, no struct."""
    spec = model.output
    return spec is not None and not spec.is_variable and output_type(spec) == _carried_type(spec)


def return_type(model: ServedModel) -> T.DataType:
    if _plain(model):
        assert model.output is not None
        return _carried_type(model.output)
    return T.StructType([T.StructField(spec.name, _carried_type(spec)) for spec in model.outputs])


def prediction_columns(model: ServedModel, prediction: Column, names: Mapping[str, str]) -> list[Column]:
    """One column per output, named ``names[output name]``, of the UDF's result ``prediction``."""
    if _plain(model):
        assert model.output is not None
        return [prediction.alias(names[model.output.name])]
    columns = []
    for spec in model.outputs:
        column = prediction.getField(spec.name)
        if output_type(spec) != _carried_type(spec):
            column = column.cast(output_type(spec))
        columns.append(column.alias(names[spec.name]))
    return columns


def _carried(spec: TensorSpec, values: Any) -> Any:
    dtype = _CARRIED[spec.dtype][0]
    if dtype is None:
        return values
    if isinstance(values, np.ndarray):
        return values.astype(dtype, copy=False)
    return [np.asarray(v).astype(dtype, copy=False) for v in values]


def to_udf_result(model: ServedModel, decoded: Mapping[str, Sequence[Any]]) -> Any:
    """What predict_batch_udf accepts for :func:`return_type`: the value column of a plain model,
    columns by name, or (with a variable-length output, whose rows differ in length) rows by name."""
    carried = {spec.name: _carried(spec, decoded[spec.name]) for spec in model.outputs}
    if _plain(model):
        assert model.output is not None
        return carried[model.output.name]
    if not any(spec.is_variable for spec in model.outputs):
        return carried
    rows = len(next(iter(carried.values())))
    return [{name: values[i] for name, values in carried.items()} for i in range(rows)]


def _to_tensor(values: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if spec.is_bytes:
        encoded = [
            bytes(v) if isinstance(v, bytes | bytearray) else str(v).encode("utf-8")
            for v in values.reshape(-1)
        ]
        return np.array(encoded, dtype=np.object_).reshape(-1, *spec.shape)
    return np.asarray(values, dtype=spec.numpy_dtype).reshape(-1, *spec.shape)


def _with_arity(fn: Callable[..., Any], count: int) -> Callable[..., Any]:
    """predict_batch_udf passes one array per column only to a function declaring that many parameters."""
    parameters = [inspect.Parameter(f"x{i}", inspect.Parameter.POSITIONAL_ONLY) for i in range(count)]
    fn.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    return fn


def triton_predict_udf(
    model: ServedModel,
    request: ServerRequest,
    batch_size: int,
    timeout_s: float,
    rows_counter=None,
    progress_sender: ProgressSender | None = None,
):
    """``timeout_s`` bounds each batch, so a hung server fails the batch instead of hanging the job.

    ``rows_counter``: an optional Spark accumulator that gets each batch's row count when its task
    ends; ``progress_sender``: the driver's progress listener, told each batch's rows at once.
    """

    def make_predict_fn() -> Callable[..., np.ndarray]:
        from pytriton.client import ModelClient
        from pytriton.client.exceptions import PyTritonClientError

        def connect() -> tuple[dict, ModelClient]:
            record = ensure_local_server(request)  # restarts a dead or hung server on this node
            protocol = request.client_protocol  # "http" or "grpc": PyTriton picks the client by scheme
            client = ModelClient(
                f"{protocol}://127.0.0.1:{record[protocol + '_port']}",
                model.name,
                init_timeout_s=timeout_s,
                inference_timeout_s=timeout_s,
            )
            return record, client

        record, client = connect()

        def infer(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            nonlocal record, client
            try:
                return client.infer_batch(**inputs)
            except (PyTritonClientError, OSError):
                if server_healthy(record):
                    raise  # the model itself failed on this batch: retrying cannot help
                # The server died or hung: one retry against a restarted server; if that fails too,
                # the error propagates and Spark retries the task (bounded by spark.task.maxFailures).
                client.close()
                record, client = connect()
                return client.infer_batch(**inputs)

        def predict(*columns: np.ndarray) -> Any:
            inputs = {
                spec.name: _to_tensor(col, spec) for col, spec in zip(columns, model.inputs, strict=True)
            }
            result = to_udf_result(model, decode_outputs(model, infer(inputs)))
            rows = len(columns[0])  # the result may be a struct of columns: count the batch's inputs
            if rows_counter is not None:
                _count_rows(rows_counter, rows)
            if progress_sender is not None:
                progress_sender.add(rows)
            return result

        return _with_arity(predict, len(model.inputs))

    shapes = [None if spec.is_bytes else list(spec.shape) for spec in model.inputs]
    return predict_batch_udf(
        make_predict_fn,
        return_type=return_type(model),
        batch_size=batch_size,
        input_tensor_shapes=shapes if any(s is not None for s in shapes) else None,
    )


def _count_rows(counter, rows: int) -> None:
    """Add to the progress accumulator *of the current task*.

    predict_batch_udf caches the predict function per Python worker, so ``counter`` is the copy the
    worker's first task deserialized; later tasks register their own copy (the registry is cleared
    per task) and only those copies' values reach the driver. Look the current one up by id.
    """
    try:
        from pyspark.accumulators import _accumulatorRegistry

        current = _accumulatorRegistry.get(counter.aid, counter)
    except Exception:
        current = counter
    current.add(rows)
