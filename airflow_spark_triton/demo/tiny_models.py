"""Tiny randomly initialised transformers models with offline tokenizers, for the demo and the tests.

No pretrained T5, GPT-2 or classifier is reachable offline, so these stand in for them: real
transformers architectures (``T5ForConditionalGeneration``, ``GPT2LMHeadModel``,
``BertForSequenceClassification``, ``ViTForImageClassification``) at a few thousand parameters,
with a ``tokenizers`` WordLevel tokenizer over :data:`WORDS` wrapped in ``PreTrainedTokenizerFast``,
saved with ``save_pretrained`` like any Hub model, so ``hf:<task>:<directory>`` serves them exactly
as it would serve the real ones.

Their weights are redrawn from a seeded generator at a scale where the greedy choices are decisive
(:func:`min_greedy_margin` measures it): batching and padding change a logit by ~1e-6, far below
the margins, so a batched server and a one-row-at-a-time reference choose the same tokens. What
they generate is nonsense, deterministically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The vocabulary: English and French words, the T5 task prefix, punctuation.
_VOCABULARY = """the a an cat dog bird sat on mat house garden is was big small old new red blue green white runs
    walks sleeps eats and or to of in by with my your this that today night morning we you they see
    like read write book letter river city le la les un une chat chien oiseau maison jardin est grand
    petit rouge bleu vert blanc et ou dans avec livre ville rivière nous vous ils translate English
    French German : . , ?"""
WORDS = tuple(_VOCABULARY.split())
T5_PREFIX = "translate English to French: "
T5_SEED = 7
GPT2_SEED = 11
BERT_SEED = 5
VIT_SEED = 5
CLASS_LABELS = ("negative", "neutral", "positive")
IMAGE_LABELS = ("cat", "dog", "bird")
IMAGE_SIZE = 16


def word_level_tokenizer(specials: list[str], template: str | None = None, **tokens: str):
    """A ``PreTrainedTokenizerFast`` over :data:`WORDS` (whitespace and punctuation split), its
    ``specials`` first (ids 0..); ``template`` (e.g. ``"$A </s>"``) adds special tokens around a
    text, and ``tokens`` names the roles (``pad_token="<pad>"``)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(specials)}
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=tokens.get("unk_token", specials[0])))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    if template:
        used = [t for t in specials if t in template.split()]
        tokenizer.post_processor = processors.TemplateProcessing(
            single=template, special_tokens=[(t, vocab[t]) for t in used]
        )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **tokens)


def _redraw(model: Any, seed: int, scale: float = 1.0) -> Any:
    """Every weight from N(0, scale) (norms near 1) with a seeded generator: the same model on every
    machine, and logits far apart enough for decisive greedy choices."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if "norm" in name and parameter.dim() == 1:
                parameter.copy_(1.0 + 0.1 * noise if name.endswith("weight") else 0.1 * noise)
            else:
                parameter.copy_(scale * noise)
    return model.eval()


def _scale(parameter: Any, factor: float) -> None:
    import torch

    with torch.no_grad():
        parameter.mul_(factor)


def build_tiny_t5(directory: str | Path, seed: int = T5_SEED) -> Path:
    """A 2-layer T5 for ``hf:text2text-generation`` (pad 0, eos 1 appended to every input, like T5)."""
    from transformers import T5Config, T5ForConditionalGeneration

    tokenizer = word_level_tokenizer(
        ["<pad>", "</s>", "<unk>"], "$A </s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    config = T5Config(
        vocab_size=len(tokenizer), d_model=32, d_ff=64, d_kv=16, num_layers=2, num_decoder_layers=2,
        num_heads=2, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )  # fmt: skip
    return _save(_redraw(T5ForConditionalGeneration(config), seed), tokenizer, directory)


def build_tiny_gpt2(directory: str | Path, seed: int = GPT2_SEED) -> Path:
    """A 2-layer GPT-2 for ``hf:text-generation`` (no pad token, like GPT-2: the server pads with eos)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = word_level_tokenizer(
        ["<|endoftext|>", "<unk>"], unk_token="<unk>", eos_token="<|endoftext|>", bos_token="<|endoftext|>"
    )
    config = GPT2Config(
        vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=128, bos_token_id=0,
        eos_token_id=0,
    )  # fmt: skip
    model = _redraw(GPT2LMHeadModel(config), seed, 0.15)
    _scale(model.transformer.wte.weight, 1 / 0.15)  # token embeddings (tied to the output) at N(0, 1)
    return _save(model, tokenizer, directory)


def _bert_tokenizer():
    return word_level_tokenizer(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]"], "[CLS] $A [SEP]",
        pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
    )  # fmt: skip


def build_tiny_bert_classifier(directory: str | Path, seed: int = BERT_SEED) -> Path:
    """A 2-layer BERT with three labels (``id2label``) for ``hf:text-classification``; its encoder
    serves ``hf:feature-extraction`` too."""
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = _bert_tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, pad_token_id=0,
        id2label=dict(enumerate(CLASS_LABELS)), label2id={label: i for i, label in enumerate(CLASS_LABELS)},
    )  # fmt: skip
    model = _redraw(BertForSequenceClassification(config), seed, 0.5)
    # A steeper head without biases: labels that differ between texts, not one label for every text.
    _scale(model.classifier.weight, 5.0)
    _scale(model.classifier.bias, 0.0)
    _scale(model.bert.pooler.dense.bias, 0.0)
    return _save(model, tokenizer, directory)


def build_tiny_vit_classifier(directory: str | Path, seed: int = VIT_SEED) -> Path:
    """A 2-layer ViT over 16x16 RGB images with three labels, for ``hf:image-classification``."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(
        image_size=IMAGE_SIZE, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64,
        id2label=dict(enumerate(IMAGE_LABELS)), label2id={label: i for i, label in enumerate(IMAGE_LABELS)},
    )  # fmt: skip
    processor = ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return _save(_redraw(ViTForImageClassification(config), seed, 0.5), processor, directory)


def _save(model: Any, preprocessor: Any, directory: str | Path) -> Path:
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    preprocessor.save_pretrained(path)
    return path


def sample_images(count: int, seed: int = 0, size: int = 20) -> list[bytes]:
    """``count`` random RGB images as PNG bytes (the encoded images a binary column holds)."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray((rng.random((size, size, 3)) * 255).astype("uint8")).save(buffer, format="PNG")
        images.append(buffer.getvalue())
    return images


def t5_reference(directory: str | Path, texts: list[str], **generate: Any) -> list[str]:
    """What transformers itself generates for each text alone (``generate`` + ``decode``, the way
    transformers 4's ``text2text-generation`` pipeline did): the reference a served run must equal."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForSeq2SeqLM.from_pretrained(directory).eval()
    prefix = generate.pop("prefix", "")
    out = []
    with torch.inference_mode():
        for text in texts:
            encoded = tokenizer([prefix + text], return_tensors="pt")
            encoded.pop("token_type_ids", None)
            ids = model.generate(**encoded, **generate)
            out.append(tokenizer.decode(ids[0], skip_special_tokens=True))
    return out


def min_greedy_margin(directory: str | Path, texts: list[str], seq2seq: bool, **generate: Any) -> float:
    """The smallest gap between the best and second-best logit over every greedy step of every text,
    each generated alone: how far the model's choices are from a tie that batching could flip."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    loader = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    model = loader.from_pretrained(directory).eval()
    prefix = generate.pop("prefix", "")
    margin = float("inf")
    with torch.inference_mode():
        for text in texts:
            encoded = tokenizer([prefix + text], return_tensors="pt")
            encoded.pop("token_type_ids", None)
            out = model.generate(
                **encoded,
                **{**generate, "do_sample": False},
                output_logits=True,
                return_dict_in_generate=True,
            )
            for logits in out.logits:
                top = logits[0].float().topk(2).values
                margin = min(margin, float(top[0] - top[1]))
    return margin
