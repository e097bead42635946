"""A small image classifier: scikit-learn's 8x8 handwritten digits, multinomial logistic regression.

A second model family next to the text embedders: float32 feature vectors in (64 pixel values,
0..16), class probabilities out. It is trained when loaded (well under a second, deterministic:
lbfgs on the full 1797-image set), so it needs no weights file, and :func:`predict_proba` is the
in-process reference the tests compare the served predictions with.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from spark_jobs.models.base import InferFn, ServedModel, TensorSpec

if TYPE_CHECKING:
    import numpy as np

PIXELS = 64
CLASSES = 10
# The [models] extra's specifier; ML runtimes ship scikit-learn (and its threadpoolctl), so on
# Databricks this installs nothing unless the runtime's copy is older.
REQUIREMENTS = ("scikit-learn>=1.3",)


@functools.lru_cache(maxsize=4)
def _classifier(c: float = 1.0):
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    digits = load_digits()
    model = LogisticRegression(C=c, max_iter=2000, random_state=0)
    # One BLAS thread: the same weights in every process, whatever its thread settings (a Spark
    # executor's Triton server and the test's own process would otherwise sum in different orders).
    with threadpool_limits(limits=1):
        model.fit(digits.data.astype(np.float64) / 16.0, digits.target)
    return model


def predict_proba(pixels: np.ndarray, c: float = 1.0) -> np.ndarray:
    """Class probabilities, shape (n, 10) float32, for pixel rows of shape (n, 64) in 0..16."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    x = np.asarray(pixels, dtype=np.float64).reshape(-1, PIXELS) / 16.0
    with threadpool_limits(limits=1):
        return _classifier(float(c)).predict_proba(x).astype(np.float32)


def _load(options: Mapping[str, Any]) -> InferFn:
    # A CPU model: the ``device`` option is ignored, and the instances of a multi-GPU node share
    # the one cached classifier (its predict_proba is read-only, safe from several threads).
    c = float(options.get("C", 1.0))
    _classifier(c)  # train once, when the server starts, not on the first request

    def infer(pixels: np.ndarray) -> dict[str, np.ndarray]:
        return {"probabilities": predict_proba(pixels, c)}

    return infer


MODEL = ServedModel(
    name="digits_classifier",
    inputs=(TensorSpec("pixels", "float32", (PIXELS,)),),
    output=TensorSpec("probabilities", "float32", (CLASSES,)),
    loader=_load,
    max_batch_size=256,
    requirements=REQUIREMENTS,
)
