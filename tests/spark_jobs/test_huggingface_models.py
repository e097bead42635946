"""``hf:<task>:<source>`` references: resolved from the task alone (no transformers, no download),
options checked against the task's list, never code from the model's repository; and each task's
loader, in process, answers like transformers' own pipeline (the served runs: tests/e2e)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from airflow_spark_triton.demo import tiny_models
from spark_jobs.models.huggingface import (
    IMAGE_REQUIREMENTS,
    REQUIREMENTS,
    TASKS,
    check_options,
    check_source,
    hf_model,
    local_reader,
)
from spark_jobs.models.references import resolve_model
from tests.conftest import REPO

TEXTS = ["the cat sat on the mat", "a dog runs to the river", "my old book", "we like this city"]


@pytest.mark.parametrize(
    ("reference", "inputs", "outputs"),
    [
        ("hf:text2text-generation:/m/t5", ["text"], ["generated_text"]),
        ("hf:text-generation:gpt2", ["text"], ["generated_text"]),
        ("hf:text-classification:owner/sst2", ["text"], ["label", "score"]),
        ("hf:feature-extraction:/m/bert", ["text"], ["embedding"]),
        ("hf:image-classification:google/vit-base", ["image"], ["label", "score"]),
    ],
)
def test_each_task_has_its_signature(reference, inputs, outputs):
    model = resolve_model(reference)
    assert [t.name for t in model.inputs] == inputs
    assert [t.name for t in model.outputs] == outputs
    expected = (*REQUIREMENTS, *IMAGE_REQUIREMENTS) if "image" in reference else REQUIREMENTS
    assert model.requirements == expected


def test_references_resolve_without_transformers_or_torch():
    """The Airflow side resolves hf: references; it has neither package."""
    code = textwrap.dedent(
        """
        import sys
        for name in ("torch", "transformers", "tokenizers", "PIL", "pyspark", "numpy"):
            sys.modules[name] = None  # any import of these raises ImportError
        from airflow_spark_triton.backends.model_dependencies import model_dependencies
        from spark_jobs.models.references import resolve_model
        model = resolve_model("hf:image-classification:/models/vit")
        print(model.name, model_dependencies("hf:text2text-generation:google-t5/t5-small").requirements)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "hf_image_classification_vit ('transformers>=4.41,<6', 'tokenizers>=0.19')" in out.stdout


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("hf:text2text-generation", "must look like 'hf:<task>:<directory or hub id>'"),
        ("hf:translation:/m/t5", "unknown task 'translation'; tasks: text2text-generation"),
        ("hf:text-generation:not a hub id!", "neither an absolute directory nor a Hub id"),
    ],
)
def test_bad_references_fail_saying_what_a_reference_looks_like(reference, message):
    with pytest.raises(ValueError, match=message):
        resolve_model(reference)


def test_options_are_the_tasks_own_and_of_their_types():
    check_options(
        "text2text-generation", {"max_new_tokens": 32, "num_beams": 1, "do_sample": False, "prefix": "x"}
    )
    check_options("text-classification", {"function_to_apply": "sigmoid", "dtype": "float16"})
    with pytest.raises(ValueError, match="takes no option 'num_beams'; it takes: device, dtype"):
        check_options("text-classification", {"num_beams": 2})
    with pytest.raises(ValueError, match="'max_new_tokens' of task 'text-generation' must be int, got '32'"):
        check_options("text-generation", {"max_new_tokens": "32"})
    with pytest.raises(ValueError, match=r"'do_sample' .* must be bool, got 1"):
        check_options("text-generation", {"do_sample": 1})
    with pytest.raises(ValueError, match="'pooling' must be one of mean, cls"):
        check_options("feature-extraction", {"pooling": "max"})


@pytest.mark.parametrize("where", ["model_options", "loader"])
def test_trust_remote_code_never_comes_from_options(where):
    model = resolve_model("hf:text-generation:/m/gpt2")
    with pytest.raises(
        ValueError,
        match=r"'trust_remote_code' is not accepted .* hf_model\(task, source, trust_remote_code=True\)",
    ):
        if where == "model_options":
            model.check_options({"trust_remote_code": True})
        else:
            model.load({"trust_remote_code": True})


def test_only_python_code_can_trust_a_models_own_code(tmp_path):
    assert (
        hf_model(
            "text-generation", "/m/gpt2", trust_remote_code=True, requirements=("einops>=0.7",)
        ).requirements[-1]
        == "einops>=0.7"
    )
    (tmp_path / "config.json").write_text(json.dumps({"auto_map": {"AutoModel": "modeling_x.XModel"}}))
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ValueError, match=r"needs code from its own repository .* never runs"):
        check_source("text-generation", str(tmp_path), local_reader(str(tmp_path)))


def test_a_directory_is_checked_as_files(tmp_path):
    read = local_reader(str(tmp_path))
    with pytest.raises(ValueError, match=r"has no config\.json"):
        check_source("text-classification", str(tmp_path), read)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json is not JSON"):
        check_source("text-classification", str(tmp_path), read)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"has none of tokenizer\.json"):
        check_source("text-classification", str(tmp_path), read)
    with pytest.raises(ValueError, match=r"has none of preprocessor_config\.json"):
        check_source("image-classification", str(tmp_path), read)
    (tmp_path / "tokenizer.json").write_text("{}")
    check_source("text-classification", str(tmp_path), read)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-models")
    return {
        "t5": tiny_models.build_tiny_t5(root / "t5"),
        "gpt2": tiny_models.build_tiny_gpt2(root / "gpt2"),
        "bert": tiny_models.build_tiny_bert_classifier(root / "bert"),
        "vit": tiny_models.build_tiny_vit_classifier(root / "vit"),
    }


def _text(texts: list[str]) -> np.ndarray:
    return np.array([t.encode() for t in texts], dtype=object).reshape(-1, 1)


def test_the_tiny_models_choices_are_far_from_ties(tiny):
    """Batching moves a logit by ~1e-6; the tiny models' greedy choices are 1e-2 apart or more."""
    t5 = tiny_models.min_greedy_margin(
        tiny["t5"], TEXTS, True, prefix=tiny_models.T5_PREFIX, max_new_tokens=8
    )
    gpt2 = tiny_models.min_greedy_margin(tiny["gpt2"], TEXTS, False, max_new_tokens=8)
    assert min(t5, gpt2) > 1e-2, (t5, gpt2)


def test_each_tasks_loader_answers_like_transformers_on_each_row_alone(tiny):
    from transformers import pipeline

    options = {"max_new_tokens": 8, "do_sample": False, "device": "cpu"}
    t5 = resolve_model(f"hf:text2text-generation:{tiny['t5']}").load(
        {**options, "prefix": tiny_models.T5_PREFIX}
    )
    assert t5(text=_text(TEXTS))["generated_text"] == tiny_models.t5_reference(
        tiny["t5"], TEXTS, prefix=tiny_models.T5_PREFIX, max_new_tokens=8
    )
    generated = resolve_model(f"hf:text-generation:{tiny['gpt2']}").load(options)(text=_text(TEXTS))
    gpt2 = pipeline("text-generation", model=str(tiny["gpt2"]), device="cpu")
    alone = [
        gpt2(t, max_new_tokens=8, do_sample=False, return_full_text=False)[0]["generated_text"] for t in TEXTS
    ]
    assert generated["generated_text"] == alone
    assert len(set(alone)) > 1, "the tiny model's output depends on its input"

    classified = resolve_model(f"hf:text-classification:{tiny['bert']}").load({"device": "cpu"})(
        text=_text(TEXTS)
    )
    reference = [pipeline("text-classification", model=str(tiny["bert"]), device="cpu")(t)[0] for t in TEXTS]
    assert classified["label"] == [r["label"] for r in reference]
    np.testing.assert_allclose(classified["score"], [r["score"] for r in reference], atol=1e-4)

    embedded = resolve_model(f"hf:feature-extraction:{tiny['bert']}").load({"device": "cpu"})(
        text=_text(TEXTS)
    )
    features = pipeline("feature-extraction", model=str(tiny["bert"]), device="cpu")
    means = [np.asarray(features(t))[0].mean(axis=0) for t in TEXTS]
    np.testing.assert_allclose(embedded["embedding"], np.stack(means), atol=1e-4)


def test_the_image_classifier_decodes_each_images_bytes(tiny):
    import io

    from PIL import Image
    from transformers import pipeline

    images = tiny_models.sample_images(5)
    served = resolve_model(f"hf:image-classification:{tiny['vit']}").load({"device": "cpu"})
    answer = served(image=np.array(images, dtype=object).reshape(-1, 1))
    classify = pipeline("image-classification", model=str(tiny["vit"]), device="cpu")
    reference = [classify(Image.open(io.BytesIO(b)).convert("RGB"), top_k=1)[0] for b in images]
    assert answer["label"] == [r["label"] for r in reference]
    np.testing.assert_allclose(answer["score"], [r["score"] for r in reference], atol=1e-4)


def test_every_task_is_listed_with_its_files():
    assert set(TASKS) == {
        "text2text-generation",
        "text-generation",
        "text-classification",
        "feature-extraction",
        "image-classification",
    }


def test_served_names_fit_pytritons_socket_paths():
    from spark_jobs.models.huggingface import MAX_MODEL_NAME, model_name

    assert model_name("text2text-generation", "/models/tiny-t5/") == "hf_text2text_generation_tiny_t5"
    long_a = model_name("text2text-generation", "/models/t5-small-random-794e8c161293")
    long_b = model_name("text2text-generation", "/models/t5-small-random-000000000000")
    assert len(long_a) == len(long_b) == MAX_MODEL_NAME
    assert long_a.startswith("hf_text2text_generation_t5_") and long_a != long_b
    # the instance socket PyTriton binds under root's default workspace stays within 107 bytes
    socket = f"/root/.cache/pytriton/workspace_4c2io175/{long_a}_0_1-server.sock"
    assert len(socket) <= 107
