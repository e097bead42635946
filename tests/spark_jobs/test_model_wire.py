"""Model signatures and how outputs travel: every common dtype, several outputs, text, variable length."""

from __future__ import annotations

import numpy as np
import pytest

from spark_jobs.models.base import ServedModel, TensorSpec
from spark_jobs.models.wire import decode_outputs, encode_outputs, triton_outputs

MANY = ServedModel(
    "many",
    (TensorSpec("text", "bytes"),),
    outputs=(
        TensorSpec("label", "bytes"),
        TensorSpec("score", "float16"),
        TensorSpec("flag", "bool"),
        TensorSpec("small", "uint8"),
        TensorSpec("vector", "float64", (2, 2)),
        TensorSpec("ids", "int64", (-1,)),
        TensorSpec("tags", "bytes", (-1,)),
    ),
    loader=lambda options: None,
)


def test_each_output_round_trips_exactly_through_the_wire():
    result = {
        "label": ["café", b"dog"],
        "score": np.array([0.5, 0.25]),
        "flag": [True, False],
        "small": [255, 0],
        "vector": np.arange(8, dtype=np.float64).reshape(2, 2, 2),
        "ids": [[7, 8, 9], []],
        "tags": [["a", "ünï"], ["b"]],
    }
    wire = encode_outputs(MANY, result, rows=2)
    assert wire["ids"].shape == (2, 3) and wire["ids__length"].tolist() == [[3], [0]]
    assert wire["label"].dtype == object and wire["label"][0, 0] == "café".encode()
    decoded = decode_outputs(MANY, wire)
    assert decoded["label"].tolist() == ["café", "dog"]
    assert decoded["score"].dtype == np.float16 and decoded["score"].tolist() == [0.5, 0.25]
    assert decoded["flag"].tolist() == [True, False]
    assert decoded["small"].tolist() == [255, 0]
    assert decoded["vector"].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]  # flattened row-major
    assert [row.tolist() for row in decoded["ids"]] == [[7, 8, 9], []]
    assert [row.tolist() for row in decoded["tags"]] == [["a", "ünï"], ["b"]]


def test_the_server_declares_a_length_tensor_for_each_variable_output():
    names = [(t.name, t.dtype, t.shape) for t in triton_outputs(MANY)]
    assert ("ids__length", "int64", (1,)) in names and ("tags__length", "int64", (1,)) in names
    assert len(names) == len(MANY.outputs) + 2


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ({"label": ["a"]}, r"returned no output \['score'"),
        (
            {**{key: [1] for key in ("label", "score", "flag", "small", "ids", "tags")}, "vector": [1.0]},
            "'vector' has 1 values",
        ),
    ],
)
def test_a_model_answering_the_wrong_outputs_fails_naming_them(result, message):
    with pytest.raises(ValueError, match=message):
        encode_outputs(MANY, result, rows=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"outputs": (TensorSpec("x", "binary"),)}, "output 'x' is binary"),
        ({"inputs": (TensorSpec("v", "float32", (-1,)),)}, "input 'v' has a variable shape"),
        ({"outputs": (TensorSpec("text", "bytes"),)}, "names must be unique"),
        ({"outputs": (TensorSpec("a__length", "int64"),)}, "must not end with '__length'"),
        ({"output": TensorSpec("a", "bytes"), "outputs": (TensorSpec("b", "bytes"),)}, "not both"),
        ({"max_batch_size": 0}, "max_batch_size must be >= 1"),
    ],
)
def test_signatures_that_cannot_be_served_fail_at_declaration(kwargs, message):
    values = {"name": "m", "inputs": (TensorSpec("text", "bytes"),), "loader": lambda o: None, **kwargs}
    if "output" not in values and "outputs" not in values:
        values["outputs"] = (TensorSpec("y", "float32"),)
    with pytest.raises(ValueError, match=message):
        ServedModel(**values)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("t", "complex64"), "dtype 'complex64' is not one of"),
        (("t", "float32", (2, -1)), r"-1 \(variable length\) only as its first dimension"),
        (("t", "float32", (0,)), "sizes >= 1"),
        (("a b", "float32"), "must be letters, digits"),
    ],
)
def test_tensor_specs_are_checked(args, message):
    with pytest.raises(ValueError, match=message):
        TensorSpec(*args)


def test_a_single_output_model_keeps_output_and_outputs_in_step():
    model = ServedModel(
        "e", (TensorSpec("text", "bytes"),), TensorSpec("embedding", "float32", (4,)), lambda o: None
    )
    assert model.outputs == (model.output,)
    assert MANY.output is None
