"""The ``predict_batch_udf`` whose predict function is a Triton client bound to its own node's server.

Each Spark Python worker builds one client, once, pointing at 127.0.0.1 and the port recorded by
the server on that host: the model lives in the server (one copy per node), the workers only move
Arrow batches to it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pyspark.ml.functions import predict_batch_udf
from pyspark.sql import types as T

from spark_jobs.models.base import ServedModel, TensorSpec
from spark_jobs.progress_channel import ProgressSender
from spark_jobs.triton_node import ServerRequest, ensure_local_server, server_healthy

_SPARK_TYPES = {
    "float32": T.FloatType(),
    "float64": T.DoubleType(),
    "int64": T.LongType(),
    "int32": T.IntegerType(),
}


def _to_tensor(values: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if spec.is_text:
        encoded = [
            v if isinstance(v, bytes | bytearray) else str(v).encode("utf-8") for v in values.reshape(-1)
        ]
        return np.array(encoded, dtype=np.object_).reshape(-1, *spec.shape)
    return np.asarray(values, dtype=spec.numpy_dtype).reshape(-1, *spec.shape)


def return_type(model: ServedModel) -> T.DataType:
    element = _SPARK_TYPES.get(model.output.dtype)
    if element is None:
        raise ValueError(f"model {model.name}: unsupported output dtype {model.output.dtype!r}")
    return T.ArrayType(element) if model.output.shape != (1,) else element


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

        def infer(inputs: dict[str, np.ndarray]) -> np.ndarray:
            nonlocal record, client
            try:
                return client.infer_batch(**inputs)[model.output.name]
            except (PyTritonClientError, OSError):
                if server_healthy(record):
                    raise  # the model itself failed on this batch: retrying cannot help
                # The server died or hung: one retry against a restarted server; if that fails too,
                # the error propagates and Spark retries the task (bounded by spark.task.maxFailures).
                client.close()
                record, client = connect()
                return client.infer_batch(**inputs)[model.output.name]

        def predict(*columns: np.ndarray) -> np.ndarray:
            inputs = {
                spec.name: _to_tensor(col, spec) for col, spec in zip(columns, model.inputs, strict=True)
            }
            result = infer(inputs)
            if rows_counter is not None:
                _count_rows(rows_counter, len(result))
            if progress_sender is not None:
                progress_sender.add(len(result))
            return result

        return predict

    shapes = [None if spec.is_text else list(spec.shape) for spec in model.inputs]
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
