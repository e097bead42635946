"""MLflow references and signatures as the job reads them: from the model's files, without MLflow.

The MLmodel texts are the ones MLflow 3 writes (column-based and tensor-based signatures, a model
without one); a real model logged to a real store is prepared in tests/spark_jobs/test_model_files.py
and served in tests/e2e/test_mlflow_models.py.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from spark_jobs.columns import input_mapping, output_names
from spark_jobs.contract import InferenceJobConfig, JobConfigError
from spark_jobs.models.mlflow_pyfunc import (
    DEFAULT_OUTPUT,
    MlflowReference,
    _result_columns,
    is_mlflow_reference,
    mlflow_model,
    model_info,
    parse_reference,
    read_requirements,
)


def mlmodel(
    inputs: list | None = None, outputs: list | None = None, flavor: str = "python_function"
) -> bytes:
    signature = ""
    if inputs is not None:
        signature = "signature:\n  inputs: '" + json.dumps(inputs) + "'\n"
        if outputs is not None:
            signature += "  outputs: '" + json.dumps(outputs) + "'\n"
        signature += "  params: null\n"
    return (
        f"artifact_path: model\nflavors:\n  {flavor}:\n    loader_module: mlflow.pyfunc.model\n"
        f"    python_version: 3.11.9\nmlflow_version: 3.18.0\n{signature}"
    ).encode()


def files(**found: bytes):
    return lambda name: found.get(name.replace(".", "_"))


TEXT_WEIGHT = [{"type": "string", "name": "text", "required": True}, {"type": "double", "name": "weight"}]
THREE_OUT = [
    {"type": "long", "name": "length"},
    {"type": "double", "name": "score"},
    {"type": "string", "name": "label"},
]


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        (
            "models:/scorer@champion",
            MlflowReference("models:/scorer@champion", name="scorer", alias="champion"),
        ),
        (
            "models:/main.ml.scorer/12",
            MlflowReference("models:/main.ml.scorer/12", name="main.ml.scorer", version="12"),
        ),
        ("models:/scorer/latest", MlflowReference("models:/scorer/latest", name="scorer", alias="latest")),
        ("runs:/0a1b/model", MlflowReference("runs:/0a1b/model", run_id="0a1b", path="model")),
        (
            "/Volumes/ml/models/scorer/",
            MlflowReference("/Volumes/ml/models/scorer/", directory="/Volumes/ml/models/scorer"),
        ),
    ],
)
def test_every_reference_form_parses(reference, expected):
    assert is_mlflow_reference(reference)
    assert parse_reference(reference) == expected


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("models:/scorer/Production", "stages are deprecated"),
        ("models:/scorer@", "must look like"),
        ("models:/a/b/3", "must look like"),
        ("runs:/0a1b", "must look like"),
        ("runs:/0a1b/../x", "must look like"),
    ],
)
def test_a_malformed_reference_says_the_forms(reference, message):
    with pytest.raises(ValueError, match=message):
        parse_reference(reference)


def test_module_and_hf_references_are_not_mlflow_ones():
    assert not is_mlflow_reference("spark_jobs.models.minilm:MODEL")
    assert not is_mlflow_reference("hf:text-classification:/m")


def test_a_pinned_reference_names_the_version_everywhere():
    pinned = parse_reference("models:/main.ml.scorer@champion").pinned("3")
    assert (pinned.uri, pinned.alias, pinned.triton_name) == (
        "models:/main.ml.scorer/3",
        None,
        "mlflow_main_ml_scorer_v3",
    )


def test_the_signature_gives_inputs_outputs_and_requirements():
    read = files(
        MLmodel=mlmodel(TEXT_WEIGHT, THREE_OUT),
        requirements_txt=b"mlflow==3.18.0\n# a comment\npandas==2.2.3  # pinned\n-r other.txt\n\ncloudpickle==3.1.1\n",
        python_env_yaml=b"python: 3.11.9\nbuild_dependencies:\n- pip\ndependencies:\n- -r requirements.txt\n",
    )
    model = mlflow_model("models:/scorer/2", read)
    assert [(t.name, t.dtype, t.shape) for t in model.inputs] == [
        ("text", "bytes", (1,)),
        ("weight", "float64", (1,)),
    ]
    assert [(t.name, t.dtype) for t in model.outputs] == [
        ("length", "int64"),
        ("score", "float64"),
        ("label", "bytes"),
    ]
    assert model.requirements == ("mlflow==3.18.0", "pandas==2.2.3", "cloudpickle==3.1.1")
    assert model.name == "mlflow_scorer_v2" and model.inputs_by_name
    assert model_info("m", read).python == "3.11.9"


def test_an_unnamed_output_is_prediction_and_an_array_output_is_variable_length():
    read = files(MLmodel=mlmodel([{"type": "string", "name": "text"}], [{"type": "double"}]))
    assert [t.name for t in mlflow_model("/m", read).outputs] == [DEFAULT_OUTPUT]
    read = files(
        MLmodel=mlmodel(
            [{"type": "string", "name": "text"}],
            [{"type": "array", "items": {"type": "float"}, "name": "vec"}],
        )
    )
    (vec,) = mlflow_model("/m", read).outputs
    assert (vec.name, vec.dtype, vec.shape) == ("vec", "float32", (-1,))


def test_a_tensor_signature_keeps_its_shapes():
    tensors = [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 64]}}]
    out = [{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 10]}}]
    model = mlflow_model("/m", files(MLmodel=mlmodel(tensors, out)))
    assert [(t.name, t.dtype, t.shape) for t in (*model.inputs, *model.outputs)] == [
        ("input", "float32", (64,)),
        (DEFAULT_OUTPUT, "float64", (10,)),
    ]


def test_column_names_that_triton_cannot_carry_are_renamed_for_the_wire_only():
    read = files(MLmodel=mlmodel([{"type": "double", "name": "sepal length (cm)"}], [{"type": "long"}]))
    (spec,) = mlflow_model("/m", read).inputs
    assert spec.name == "sepal_length_cm"


@pytest.mark.parametrize(
    ("read", "message"),
    [
        (files(), "has no MLmodel file"),
        (files(MLmodel=mlmodel(TEXT_WEIGHT, THREE_OUT, flavor="sklearn")), "no python_function flavor"),
        (
            files(MLmodel=mlmodel([{"type": "datetime", "name": "at"}], THREE_OUT)),
            "signature input 'at' has type 'datetime'",
        ),
        (files(MLmodel=mlmodel(TEXT_WEIGHT, [{"type": "binary", "name": "png"}])), "output 'png' is binary"),
    ],
)
def test_what_cannot_be_served_is_named(read, message):
    with pytest.raises(ValueError, match=message):
        mlflow_model("models:/m/1", read)


def test_a_model_without_signature_needs_input_columns_and_an_output_type():
    read = files(MLmodel=mlmodel())
    with pytest.raises(
        ValueError, match=r"needs job setting 'input_columns' .* model_options\['output_type'\]"
    ):
        mlflow_model("models:/m/1", read)
    with pytest.raises(ValueError, match="input 'x' no type"):
        mlflow_model("models:/m/1", read, options={"output_type": "double"}, input_columns=["x"])
    model = mlflow_model(
        "models:/m/1", read, options={"output_type": "double"}, input_columns={"x": "col_x"},
        column_types={"col_x": "long"},
    )  # fmt: skip
    assert [(t.name, t.dtype) for t in (*model.inputs, *model.outputs)] == [
        ("x", "int64"),
        (DEFAULT_OUTPUT, "float64"),
    ]


def test_options_are_checked():
    read = files(MLmodel=mlmodel(TEXT_WEIGHT, THREE_OUT))
    with pytest.raises(ValueError, match="takes no option 'num_beams'"):
        mlflow_model("/m", read, options={"num_beams": 2})
    with pytest.raises(ValueError, match="'output_type' must be one of"):
        mlflow_model("/m", read, options={"output_type": "datetime"})


def test_requirements_drop_what_is_not_a_requirement():
    assert read_requirements(b"# c\n\n--index-url x\nnumpy<2\n") == ("numpy<2",)
    assert read_requirements(None) == ()


def test_signature_columns_default_to_their_names_and_input_columns_renames_some():
    model = mlflow_model("/m", files(MLmodel=mlmodel(TEXT_WEIGHT, THREE_OUT)))
    job = InferenceJobConfig(input_table="/i", output_table="/o", model="/m", logical_date="2026-11-24")
    assert [c for _, c in input_mapping(job, model)] == ["text", "weight"]
    renamed = job.replace(input_columns={"text": "body"})
    assert [c for _, c in input_mapping(renamed, model)] == ["body", "weight"]
    assert output_names(job.replace(output_columns={"label": "tag"}), model) == {
        "length": "length", "score": "score", "label": "tag",
    }  # fmt: skip
    with pytest.raises(JobConfigError, match="maps model inputs"):
        input_mapping(job.replace(input_columns={"txt": "body"}), model)


def test_a_pinned_version_travels_only_with_a_registry_reference():
    base = {"input_table": "/i", "output_table": "/o", "logical_date": "2026-11-24"}
    assert InferenceJobConfig(model="models:/m@champion", model_version="4", **base).model_version == "4"
    with pytest.raises(JobConfigError, match="model_version"):
        InferenceJobConfig(model="spark_jobs.models.minilm:MODEL", model_version="4", **base)
    assert InferenceJobConfig(model="/Volumes/ml/models/m", **base).model == "/Volumes/ml/models/m"


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (pd.Series([1.5, 2.5]), {"prediction": [1.5, 2.5]}),
        (pd.DataFrame({"whatever": [1.5, 2.5]}), {"prediction": [1.5, 2.5]}),
        (np.array([1.5, 2.5]), {"prediction": [1.5, 2.5]}),
        ([1.5, 2.5], {"prediction": [1.5, 2.5]}),
    ],
)
def test_a_one_column_result_is_the_one_output(result, expected):
    model = mlflow_model(
        "/m", files(MLmodel=mlmodel([{"type": "string", "name": "t"}], [{"type": "double"}]))
    )
    from spark_jobs.models.mlflow_pyfunc import Column

    outputs = [Column(None, model.outputs[0])]
    got = _result_columns(result, outputs)
    assert {k: list(v) for k, v in got.items()} == expected


def test_a_dataframe_result_gives_one_output_per_signature_column():
    from spark_jobs.models.mlflow_pyfunc import Column, _schema

    outputs: list[Column] = _schema(THREE_OUT, "output", "m")
    frame = pd.DataFrame({"label": ["a", "b"], "score": [0.5, 1.0], "length": [3, 4], "extra": [0, 0]})
    got = _result_columns(frame, outputs)
    assert {k: list(v) for k, v in got.items()} == {
        "length": [3, 4],
        "score": [0.5, 1.0],
        "label": ["a", "b"],
    }
    with pytest.raises(ValueError, match="without the signature's output 'length'"):
        _result_columns(frame.drop(columns="length"), outputs)
