"""A tiny deterministic text embedder for fast tests: hashed tokens into a seeded torch EmbeddingBag.

It is a real torch model served through Triton like MiniLM, but loads in milliseconds, so tests
exercise the whole path (Spark -> Triton client -> server -> torch) without the 90 MB weights.

Options (``model_options``): ``fail_on_text`` makes a batch containing that exact text fail, as a
model that raises on an input would; ``seconds_per_batch`` makes every batch take at least that
long, as a large model on a busy GPU would, so a test can act while inference is under way.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from spark_jobs.models.base import InferFn, ServedModel, TensorSpec

if TYPE_CHECKING:
    import numpy as np

DIM = 16
BUCKETS = 4096
SEED = 1234


def _token_ids(text: str) -> list[int]:
    return [zlib.crc32(token.encode("utf-8")) % BUCKETS for token in text.lower().split()] or [0]


def embed(texts: list[str], device: str = "cpu") -> np.ndarray:
    """Reference implementation, also what the server runs: mean of token vectors, L2-normalised.

    The weights are drawn on the CPU (the same numbers everywhere) and moved to ``device``.
    """
    import numpy as np
    import torch

    generator = torch.Generator().manual_seed(SEED)
    weights = torch.randn(BUCKETS, DIM, generator=generator).to(device)
    bag = torch.nn.EmbeddingBag.from_pretrained(weights, mode="mean")
    ids = [_token_ids(t) for t in texts]
    flat = torch.tensor([i for row in ids for i in row], dtype=torch.long, device=device)
    offsets = torch.tensor(np.cumsum([0] + [len(r) for r in ids[:-1]]), dtype=torch.long, device=device)
    with torch.no_grad():
        vectors = torch.nn.functional.normalize(bag(flat, offsets), dim=1)
    return vectors.cpu().numpy().astype(np.float32)


def _load(options: Mapping[str, Any]) -> InferFn:
    device = str(options.get("device") or "cpu")  # one instance per GPU gets "cuda:<i>" (ServedModel.load)
    fail = options.get("fail_on_text")
    seconds_per_batch = float(options.get("seconds_per_batch") or 0)
    if seconds_per_batch < 0:
        raise ValueError(f"hashing_embedder option 'seconds_per_batch' must be >= 0, got {seconds_per_batch}")

    def infer(text: np.ndarray) -> dict[str, np.ndarray]:
        started = time.monotonic()
        sentences = [value.decode("utf-8") for value in text.reshape(-1)]
        if fail is not None and fail in sentences:
            raise RuntimeError(f"hashing_embedder asked to fail on text {fail!r}")
        vectors = embed(sentences, device)
        time.sleep(max(0.0, seconds_per_batch - (time.monotonic() - started)))
        return {"embedding": vectors}

    return infer


MODEL = ServedModel(
    name="hashing_embedder",
    inputs=(TensorSpec("text", "bytes", (1,), max_bytes=4096),),
    output=TensorSpec("embedding", "float32", (DIM,)),
    loader=_load,
    max_batch_size=128,
    requirements=(),  # torch only, which every ML GPU runtime ships
)
