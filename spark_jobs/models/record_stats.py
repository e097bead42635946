"""A Python model with several inputs and one output of each kind: statistics of a record.

It shows what a :class:`ServedModel` can declare (and the tests check that each kind lands exactly):
three inputs (text, raw bytes, a float vector) and outputs of text, a variable-length list of words
and of ids, scalars of several dtypes, a boolean and a fixed-size vector. Everything it computes is
plain Python on the row, so :func:`expected` is the exact answer for any row, however Triton
batched it. Serve it with ``model="spark_jobs.models.record_stats:MODEL"`` and, e.g.,
``input_columns={"text": "body", "attachment": "file", "weights": "w"}``.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from spark_jobs.models.base import BINARY, TEXT, InferFn, ServedModel, TensorSpec

if TYPE_CHECKING:
    import numpy as np

WEIGHTS = 3


def expected(text: str, attachment: bytes, weights: list[float]) -> dict[str, Any]:
    """The outputs of one record."""
    words = text.split()
    return {
        "upper": text.upper(),
        "words": words,
        "word_ids": [zlib.crc32(word.encode("utf-8")) for word in words],
        "n_words": len(words),
        "attachment_bytes": len(attachment),
        "first_byte": attachment[0] if attachment else 0,
        "is_long": len(words) > 3,
        "scaled": [w * len(words) for w in weights],
        "half_words": len(words) / 2,
    }


def _load(options: Mapping[str, Any]) -> InferFn:

    def infer(text: np.ndarray, attachment: np.ndarray, weights: np.ndarray) -> dict[str, Any]:
        rows = [
            expected(t.decode("utf-8"), bytes(a), list(w))
            for t, a, w in zip(
                text.reshape(-1), attachment.reshape(-1), weights.reshape(-1, WEIGHTS), strict=True
            )
        ]
        return {name: [row[name] for row in rows] for name in rows[0]} if rows else {}

    return infer


MODEL = ServedModel(
    name="record_stats",
    inputs=(
        TensorSpec("text", TEXT, max_bytes=4096),
        TensorSpec("attachment", BINARY, max_bytes=1 << 20),
        TensorSpec("weights", "float32", (WEIGHTS,)),
    ),
    outputs=(
        TensorSpec("upper", TEXT),
        TensorSpec("words", TEXT, (-1,)),
        TensorSpec("word_ids", "int64", (-1,)),
        TensorSpec("n_words", "int32"),
        TensorSpec("attachment_bytes", "int64"),
        TensorSpec("first_byte", "uint8"),
        TensorSpec("is_long", "bool"),
        TensorSpec("scaled", "float64", (WEIGHTS,)),
        TensorSpec("half_words", "float16"),
    ),
    loader=_load,
    max_batch_size=64,
)
