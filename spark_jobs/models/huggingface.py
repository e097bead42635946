"""Hugging Face transformers models by reference: ``hf:<task>:<directory or hub id>``, no Python written.

A reference names a task and where the model is: a directory on the nodes (``/Volumes/ml/models/t5``,
a local path for the local backend) or a Hub id (``google-t5/t5-small``, downloaded on each node
unless ``HF_HUB_OFFLINE`` is set). Each task has a fixed signature, so resolving a reference
imports nothing and reads nothing: the Airflow side and the driver get the model's inputs, outputs
and requirements from the task alone, and the weights are loaded once per node, in the Triton
server, by the task's loader.

========================  =========================  ===============================================
task                      inputs                     outputs
========================  =========================  ===============================================
text2text-generation      ``text`` (text)            ``generated_text`` (text)
text-generation           ``text`` (text)            ``generated_text`` (text, the new text only)
text-classification       ``text`` (text)            ``label`` (text), ``score`` (float32)
feature-extraction        ``text`` (text)            ``embedding`` (float32 array, pooled)
image-classification      ``image`` (binary)         ``label`` (text), ``score`` (float32)
========================  =========================  ===============================================

``text2text-generation`` is implemented here as transformers 4's pipeline did it (transformers 5
removed that pipeline): the config's ``prefix`` (or the ``prefix`` option) before each text, the
seq2seq model's ``generate``, then ``decode(..., skip_special_tokens=True)``. The other tasks run
transformers' own pipeline (``feature-extraction`` pools the token features itself, by the mask).

Options come from ``model_options`` and are checked against each task's list before anything
starts (:func:`check_options`): generation options (``max_new_tokens``, ``num_beams``,
``do_sample`` ...), ``dtype``, ``revision``, ``max_input_length``. **Never code from the model's
repository**: a reference and its options always load with ``trust_remote_code=False``, and the
option is refused; a model that needs its own code is served from a Python module the DAG's author
deploys (``MODEL = hf_model(task, source, trust_remote_code=True)``, named ``my_models:MODEL``),
because "may trigger a DAG with a conf" must not mean "may run code from any Hub repository".
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spark_jobs.models.base import (
    BINARY,
    DEVICE_OPTION,
    IMAGE,
    INSTANCE_OPTION,
    TEXT,
    InferFn,
    ServedModel,
    TensorSpec,
)

if TYPE_CHECKING:
    import numpy as np

# The reference form this module serves: ``hf:<task>:<source>``.
HF_SCHEME = "hf:"
# What every node needs beyond a Databricks ML runtime's torch: the [models] extra's specifiers.
REQUIREMENTS = ("transformers>=4.41,<6", "tokenizers>=0.19")
IMAGE_REQUIREMENTS = ("Pillow>=10",)
TRUST_REMOTE_CODE = "trust_remote_code"
# A Hub id: ``name`` or ``owner/name``.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_TEXT_MAX_BYTES = 64 * 1024
_IMAGE_MAX_BYTES = 32 * 1024 * 1024

# Options every task takes, and the type each must have.
COMMON_OPTIONS: dict[str, type | tuple[type, ...]] = {
    DEVICE_OPTION: str,  # set per instance by the server; "cpu" keeps a model off the GPU
    INSTANCE_OPTION: int,
    "dtype": str,  # "auto", "float32", "float16", "bfloat16"
    "revision": str,  # a Hub branch, tag or commit
    "torch_threads": int,
}
TEXT_OPTIONS: dict[str, type | tuple[type, ...]] = {"max_input_length": int}  # truncate longer inputs
GENERATION_OPTIONS: dict[str, type | tuple[type, ...]] = {
    "max_new_tokens": int,
    "min_new_tokens": int,
    "max_length": int,
    "min_length": int,
    "num_beams": int,
    "do_sample": bool,
    "temperature": (int, float),
    "top_k": int,
    "top_p": (int, float),
    "typical_p": (int, float),
    "repetition_penalty": (int, float),
    "no_repeat_ngram_size": int,
    "length_penalty": (int, float),
    "early_stopping": bool,
    "seed": int,  # torch's seed before each batch's generate, for do_sample
    "clean_up_tokenization_spaces": bool,
}
_DTYPES = ("auto", "float32", "float16", "bfloat16")
_CHOICES = {
    "dtype": _DTYPES,
    "function_to_apply": ("softmax", "sigmoid", "none"),
    "pooling": ("mean", "cls"),
}


@dataclass(frozen=True)
class HfTask:
    """One task's fixed signature, its options and how a node loads it."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    options: Mapping[str, type | tuple[type, ...]]
    load: Callable[[HfSource, Mapping[str, Any]], InferFn]
    max_batch_size: int
    requirements: tuple[str, ...] = REQUIREMENTS
    files: tuple[tuple[str, ...], ...] = ()  # besides config.json: one of each group must exist


@dataclass(frozen=True)
class HfSource:
    """Where the model is and how it may be loaded; ``trust_remote_code`` only from Python code."""

    location: str
    trust_remote_code: bool = False

    @property
    def is_directory(self) -> bool:
        return is_local_path(self.location)

    def load_kwargs(self, options: Mapping[str, Any]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {TRUST_REMOTE_CODE: self.trust_remote_code}
        if options.get("revision"):
            kwargs["revision"] = options["revision"]
        return kwargs


def is_local_path(location: str) -> bool:
    return location.startswith(("/", "./", "../", "~"))


def parse_reference(reference: str) -> tuple[str, str]:
    """``hf:<task>:<source>`` -> ``(task, source)``; errors say what a reference looks like."""
    task, _, source = reference.removeprefix(HF_SCHEME).partition(":")
    if not reference.startswith(HF_SCHEME) or not task or not source:
        raise ValueError(
            f"model reference {reference!r} must look like 'hf:<task>:<directory or hub id>', e.g. "
            "'hf:text2text-generation:/Volumes/ml/models/t5-small' or 'hf:text-classification:owner/name'"
        )
    if task not in TASKS:
        raise ValueError(f"model reference {reference!r}: unknown task {task!r}; tasks: {', '.join(TASKS)}")
    if not is_local_path(source) and not _HUB_ID.match(source):
        raise ValueError(
            f"model reference {reference!r}: {source!r} is neither an absolute directory nor a Hub id "
            "('name' or 'owner/name')"
        )
    return task, source


def hf_model_from_reference(reference: str) -> ServedModel:
    """The :class:`ServedModel` of an ``hf:`` reference: always without the model repository's code."""
    task, source = parse_reference(reference)
    return hf_model(task, source)


def hf_model(
    task: str,
    source: str,
    *,
    trust_remote_code: bool = False,
    name: str | None = None,
    max_batch_size: int | None = None,
    requirements: tuple[str, ...] = (),
) -> ServedModel:
    """A transformers model served through ``task``. For Python modules the DAG's author deploys:
    only here can ``trust_remote_code`` be set, and ``requirements`` add what the model's own code
    or tokenizer needs (e.g. ``"sentencepiece>=0.2"``)."""
    if task not in TASKS:
        raise ValueError(f"unknown Hugging Face task {task!r}; tasks: {', '.join(TASKS)}")
    spec = TASKS[task]
    hf_source = HfSource(source, trust_remote_code)

    def load(options: Mapping[str, Any]) -> InferFn:
        check_options(task, options)
        return spec.load(hf_source, options)

    return ServedModel(
        name=name or model_name(task, source),
        inputs=spec.inputs,
        outputs=spec.outputs,
        loader=load,
        max_batch_size=max_batch_size or spec.max_batch_size,
        requirements=(*spec.requirements, *requirements),
        check_options=lambda options: check_options(task, options),
    )


# PyTriton binds one Unix socket per model instance, ``<workspace>/<name>_<i>_<j>-server.sock``, and
# a socket path holds at most 107 bytes: under the default workspace (``~/.cache/pytriton/
# workspace_XXXXXXXX/``, 41 bytes for root) a name of 52 characters already fails to serve
# ("File name too long"). Names stay within this length.
MAX_MODEL_NAME = 40


def model_name(task: str, source: str) -> str:
    """A Triton model name (letters, digits, ``_``) saying the task and the model's last path part;
    a longer one keeps its start and ends with a hash of the whole, so it stays distinct."""
    last = source.rstrip("/").rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9_]+", "_", f"hf_{task}_{last}")
    if len(name) <= MAX_MODEL_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: MAX_MODEL_NAME - len(digest) - 1]}_{digest}"


def check_options(task: str, options: Mapping[str, Any]) -> None:
    """Each option is one the task takes, of its type; ``trust_remote_code`` is refused with why."""
    allowed = TASKS[task].options
    if TRUST_REMOTE_CODE in options:
        raise ValueError(
            f"option {TRUST_REMOTE_CODE!r} is not accepted from model_options or an hf: reference: it "
            "would run code from the model's repository on every node. Serve such a model from a "
            "Python module you deploy: MODEL = hf_model(task, source, trust_remote_code=True)"
        )
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"task {task!r} takes no option {', '.join(map(repr, unknown))}; it takes: {', '.join(sorted(allowed))}"
        )
    for key, value in options.items():
        kind = allowed[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if value is None or (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise ValueError(f"option {key!r} of task {task!r} must be {names}, got {value!r}")
        if key in _CHOICES and value not in _CHOICES[key]:
            raise ValueError(f"option {key!r} must be one of {', '.join(_CHOICES[key])}, got {value!r}")


def check_source(task: str, source: str, read: Callable[[str], bytes | None]) -> None:
    """What can be checked of a model directory without transformers, through ``read(name)`` (the
    file's bytes, or None when it does not exist): its ``config.json`` parses, it declares no code
    of its own (``auto_map``), and the task's other files (tokenizer, image processor) are there."""
    raw = read("config.json")
    if raw is None:
        raise ValueError(f"{source} has no config.json: point the reference at a saved transformers model")
    try:
        config = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{source}/config.json is not JSON: {exc}") from exc
    if isinstance(config, dict) and config.get("auto_map"):
        raise ValueError(
            f"{source} needs code from its own repository (config.json 'auto_map'), which an hf: "
            "reference never runs; serve it from a Python module you deploy with "
            "hf_model(task, source, trust_remote_code=True)"
        )
    for group in TASKS[task].files:
        if not any(read(name) is not None for name in group):
            raise ValueError(f"{source} has none of {', '.join(group)}, which task {task!r} needs")


# -- loading, on the node (inside the Triton server) -------------------------------------------


def _setup(options: Mapping[str, Any]) -> tuple[Any, str, dict[str, Any]]:
    """torch, the device string, and ``from_pretrained``'s dtype argument (named as the installed
    transformers names it: ``dtype`` from 4.56, ``torch_dtype`` before)."""
    import torch
    import transformers
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # it would redraw into the server's log for every load
    hf_logging.set_verbosity_error()
    if options.get("torch_threads"):
        torch.set_num_threads(int(options["torch_threads"]))
    device = str(options.get(DEVICE_OPTION) or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype_name = options.get("dtype")
    kwargs: dict[str, Any] = {}
    if dtype_name:
        major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
        key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
        kwargs[key] = dtype_name if dtype_name == "auto" else getattr(torch, dtype_name)
    return torch, device, kwargs


def _texts(text: np.ndarray) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in text.reshape(-1)]


def _generation_kwargs(options: Mapping[str, Any]) -> dict[str, Any]:
    skip = {"seed", "clean_up_tokenization_spaces"}
    return {k: v for k, v in options.items() if k in GENERATION_OPTIONS and k not in skip}


def _truncation(options: Mapping[str, Any]) -> dict[str, Any]:
    limit = options.get("max_input_length")
    return {"truncation": True, "max_length": int(limit)} if limit else {}


def _seeded(torch: Any, options: Mapping[str, Any]) -> None:
    if options.get("seed") is not None:
        torch.manual_seed(int(options["seed"]))


def _load_text2text(source: HfSource, options: Mapping[str, Any]) -> InferFn:
    """transformers 4's ``text2text-generation`` pipeline, batched: prefix, tokenize with padding,
    ``generate``, ``decode(skip_special_tokens=True)``."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    torch, device, dtype = _setup(options)
    kwargs = source.load_kwargs(options)
    tokenizer = AutoTokenizer.from_pretrained(source.location, **kwargs)
    model = AutoModelForSeq2SeqLM.from_pretrained(source.location, **kwargs, **dtype).to(device).eval()
    prefix = options.get("prefix", getattr(model.config, "prefix", None) or "")
    generate = _generation_kwargs(options)
    clean_up = bool(options.get("clean_up_tokenization_spaces", False))

    def infer(text: np.ndarray) -> dict[str, Any]:
        texts = [prefix + t for t in _texts(text)]
        encoded = tokenizer(texts, padding=True, return_tensors="pt", **_truncation(options))
        encoded.pop("token_type_ids", None)  # tokenizers produce it; generate() does not take it
        with torch.inference_mode():
            _seeded(torch, options)
            ids = model.generate(**encoded.to(device), **generate)
        decoded = tokenizer.batch_decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=clean_up)
        return {"generated_text": decoded}

    return infer


def _pipeline(task: str, source: HfSource, options: Mapping[str, Any], **parts: Any) -> tuple[Any, Any]:
    from transformers import pipeline

    torch, device, dtype = _setup(options)
    kwargs = source.load_kwargs(options)
    return torch, pipeline(task, model=source.location, device=device, model_kwargs=dtype, **kwargs, **parts)


def _load_text_generation(source: HfSource, options: Mapping[str, Any]) -> InferFn:
    """The ``text-generation`` pipeline with ``return_full_text=False``: the new text only."""
    torch, pipe = _pipeline("text-generation", source, options)
    if pipe.tokenizer.pad_token_id is None:  # a batch needs padding; GPT-2's tokenizer has no pad token
        pipe.tokenizer.pad_token = pipe.tokenizer.eos_token
    generate = _generation_kwargs(options)
    clean_up = options.get("clean_up_tokenization_spaces")
    extra = {} if clean_up is None else {"clean_up_tokenization_spaces": clean_up}

    def infer(text: np.ndarray) -> dict[str, Any]:
        texts = _texts(text)
        _seeded(torch, options)
        results = pipe(texts, batch_size=len(texts), return_full_text=False, **generate, **extra)
        return {"generated_text": [r[0]["generated_text"] for r in results]}

    return infer


def _labels_and_scores(results: list[Any]) -> dict[str, Any]:
    import numpy as np

    top = [r[0] if isinstance(r, list) else r for r in results]
    return {"label": [t["label"] for t in top], "score": np.array([t["score"] for t in top], np.float32)}


def _load_text_classification(source: HfSource, options: Mapping[str, Any]) -> InferFn:
    """The ``text-classification`` pipeline's top label and its score."""
    _, pipe = _pipeline("text-classification", source, options)
    extra = {"function_to_apply": options["function_to_apply"]} if "function_to_apply" in options else {}

    def infer(text: np.ndarray) -> dict[str, Any]:
        texts = _texts(text)
        return _labels_and_scores(pipe(texts, batch_size=len(texts), **extra, **_truncation(options)))

    return infer


def _load_feature_extraction(source: HfSource, options: Mapping[str, Any]) -> InferFn:
    """The model's last hidden states pooled into one vector per text: the mean over the text's tokens
    (the mask's, so padding counts for nothing) or the first token's; ``normalize`` scales to length 1."""
    from transformers import AutoModel, AutoTokenizer

    torch, device, dtype = _setup(options)
    kwargs = source.load_kwargs(options)
    tokenizer = AutoTokenizer.from_pretrained(source.location, **kwargs)
    model = AutoModel.from_pretrained(source.location, **kwargs, **dtype).to(device).eval()
    pooling, normalize = options.get("pooling", "mean"), bool(options.get("normalize", False))

    def infer(text: np.ndarray) -> dict[str, Any]:
        encoded = tokenizer(_texts(text), padding=True, return_tensors="pt", **_truncation(options)).to(
            device
        )
        with torch.inference_mode():
            hidden = model(**encoded).last_hidden_state
            if pooling == "cls":
                vectors = hidden[:, 0]
            else:
                mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                vectors = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
            if normalize:
                vectors = torch.nn.functional.normalize(vectors, dim=-1)
        return {"embedding": vectors.float().cpu().numpy()}

    return infer


def _load_image_classification(source: HfSource, options: Mapping[str, Any]) -> InferFn:
    """The ``image-classification`` pipeline's top label and score for each encoded image."""
    import io

    from PIL import Image

    _, pipe = _pipeline("image-classification", source, options)
    extra = {"function_to_apply": options["function_to_apply"]} if "function_to_apply" in options else {}

    def infer(image: np.ndarray) -> dict[str, Any]:
        images = [Image.open(io.BytesIO(bytes(b))).convert("RGB") for b in image.reshape(-1)]
        return _labels_and_scores(pipe(images, batch_size=len(images), top_k=1, **extra))

    return infer


_TEXT_IN = (TensorSpec("text", TEXT, (1,), max_bytes=_TEXT_MAX_BYTES),)
_LABEL_SCORE = (TensorSpec("label", TEXT), TensorSpec("score", "float32"))
_TOKENIZER_FILES = (("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model"),)
TASKS: dict[str, HfTask] = {
    "text2text-generation": HfTask(
        "text2text-generation",
        _TEXT_IN,
        (TensorSpec("generated_text", TEXT),),
        {**COMMON_OPTIONS, **TEXT_OPTIONS, **GENERATION_OPTIONS, "prefix": str},
        _load_text2text,
        max_batch_size=64,
        files=_TOKENIZER_FILES,
    ),
    "text-generation": HfTask(
        "text-generation",
        _TEXT_IN,
        (TensorSpec("generated_text", TEXT),),
        {**COMMON_OPTIONS, **GENERATION_OPTIONS},
        _load_text_generation,
        max_batch_size=64,
        files=_TOKENIZER_FILES,
    ),
    "text-classification": HfTask(
        "text-classification",
        _TEXT_IN,
        _LABEL_SCORE,
        {**COMMON_OPTIONS, **TEXT_OPTIONS, "function_to_apply": str},
        _load_text_classification,
        max_batch_size=256,
        files=_TOKENIZER_FILES,
    ),
    "feature-extraction": HfTask(
        "feature-extraction",
        _TEXT_IN,
        (TensorSpec("embedding", "float32", (-1,)),),
        {**COMMON_OPTIONS, **TEXT_OPTIONS, "pooling": str, "normalize": bool},
        _load_feature_extraction,
        max_batch_size=256,
        files=_TOKENIZER_FILES,
    ),
    "image-classification": HfTask(
        "image-classification",
        (TensorSpec("image", BINARY, (1,), max_bytes=_IMAGE_MAX_BYTES, content=IMAGE),),
        _LABEL_SCORE,
        {**COMMON_OPTIONS, "function_to_apply": str},
        _load_image_classification,
        max_batch_size=64,
        requirements=(*REQUIREMENTS, *IMAGE_REQUIREMENTS),
        files=(("preprocessor_config.json",),),
    ),
}


def local_reader(directory: str) -> Callable[[str], bytes | None]:
    """``read`` for :func:`check_source` over a directory of this machine."""
    root = Path(directory).expanduser()

    def read(name: str) -> bytes | None:
        path = root / name
        return path.read_bytes() if path.is_file() else None

    return read
