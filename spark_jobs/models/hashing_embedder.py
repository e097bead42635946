"""A tiny deterministic text embedder for fast tests: hashed tokens into a seeded torch EmbeddingBag.

It is a real torch model served through Triton like MiniLM, but loads in milliseconds, so tests
exercise the whole path (Spark -> Triton client -> server -> torch) without the 90 MB weights.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from spark_jobs.models.base import InferFn, ServedModel, TensorSpec

DIM = 16
BUCKETS = 4096
SEED = 1234


def _token_ids(text: str) -> list[int]:
    return [zlib.crc32(token.encode("utf-8")) % BUCKETS for token in text.lower().split()] or [0]


def embed(texts: list[str]) -> np.ndarray:
    """Reference implementation, also what the server runs: mean of token vectors, L2-normalised."""
    import torch

    generator = torch.Generator().manual_seed(SEED)
    weights = torch.randn(BUCKETS, DIM, generator=generator)
    bag = torch.nn.EmbeddingBag.from_pretrained(weights, mode="mean")
    ids = [_token_ids(t) for t in texts]
    flat = torch.tensor([i for row in ids for i in row], dtype=torch.long)
    offsets = torch.tensor(np.cumsum([0] + [len(r) for r in ids[:-1]]), dtype=torch.long)
    with torch.no_grad():
        vectors = torch.nn.functional.normalize(bag(flat, offsets), dim=1)
    return vectors.numpy().astype(np.float32)


def _load(options: Mapping[str, Any]) -> InferFn:
    fail = options.get("fail_on_text")

    def infer(text: np.ndarray) -> dict[str, np.ndarray]:
        sentences = [value.decode("utf-8") for value in text.reshape(-1)]
        if fail is not None and fail in sentences:
            raise RuntimeError(f"hashing_embedder asked to fail on text {fail!r}")
        return {"embedding": embed(sentences)}

    return infer


MODEL = ServedModel(
    name="hashing_embedder",
    inputs=(TensorSpec("text", "bytes", (1,), max_bytes=4096),),
    output=TensorSpec("embedding", "float32", (DIM,)),
    loader=_load,
    max_batch_size=128,
)
