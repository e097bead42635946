"""The benchmark's generation model: built offline, cached by its recipe, every row the same work."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import workloads
from spark_jobs.models.references import resolve_model


def test_the_vocabulary_has_t5s_specials_the_documents_words_and_t5s_size():
    vocab = workloads.t5_vocabulary()
    assert len(vocab) == workloads.T5_SMALL_DIMENSIONS["vocab_size"] == 32128
    assert [vocab[t] for t in workloads.T5_SPECIALS] == [0, 1, 2]
    assert {"espresso", "refund", "?"} <= set(vocab)
    assert sorted(vocab.values()) == list(range(len(vocab))), "every id the model can emit decodes"


@pytest.fixture
def small_t5(monkeypatch, tmp_path):
    """The same recipe at a size a unit test builds in a moment."""
    dims = {"d_model": 16, "d_ff": 32, "d_kv": 8, "num_layers": 1, "num_decoder_layers": 1, "num_heads": 2,
            "vocab_size": 300}  # fmt: skip
    monkeypatch.setattr(workloads, "T5_SMALL_DIMENSIONS", dims)
    return tmp_path


def test_prepare_builds_once_and_serves_it_as_an_hf_reference(small_t5):
    workload = workloads.prepare("t5-small", small_t5)
    directory = workload.reference.removeprefix("hf:text2text-generation:")
    assert workload.reference.startswith("hf:text2text-generation:/"), "an absolute directory"
    stamp = (small_t5 / directory.rsplit("/", 1)[-1] / "model.safetensors").stat().st_mtime_ns
    again = workloads.prepare("t5-small", small_t5)
    assert again.reference == workload.reference
    assert (small_t5 / directory.rsplit("/", 1)[-1] / "model.safetensors").stat().st_mtime_ns == stamp
    assert not list(small_t5.glob("*.partial")), "no half-built model left"
    with pytest.raises(ValueError, match="unknown model"):
        workloads.prepare("gpt-4", small_t5)


def test_every_row_generates_the_same_number_of_tokens_whatever_the_weights(small_t5):
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    workload = workloads.prepare("t5-small", small_t5)
    directory = workload.reference.removeprefix("hf:text2text-generation:")
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForSeq2SeqLM.from_pretrained(directory).eval()
    texts = [
        "Can I get a refund?",
        "The espresso machine arrived yesterday and it works exactly as described.",
    ]
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    encoded.pop("token_type_ids", None)
    with torch.inference_mode():
        ids = model.generate(**encoded, **workload.options)
    assert ids.shape == (2, workloads.GENERATED_TOKENS + 1), "decoder start + exactly the fixed tokens"
    # the package's own text2text loader serves it, one text out per text in
    infer = resolve_model(workload.reference).load(workload.options)
    out = infer(np.array([[t.encode()] for t in texts], dtype=np.object_))["generated_text"]
    assert len(out) == 2 and all(isinstance(t, str) for t in out)


def test_minilm_keeps_the_reference_of_the_runs_before():
    assert workloads.prepare("minilm", workloads.Path("/nonexistent")) is workloads.MINILM
    assert workloads.MINILM.reference == "spark_jobs.models.minilm:MODEL"
    assert (workloads.MINILM.output, workloads.T5_SMALL.output) == ("embedding", "generated_text")
    assert (workloads.MINILM.spark_result_type, workloads.T5_SMALL.spark_result_type) == (
        "array<float>",
        "string",
    )
