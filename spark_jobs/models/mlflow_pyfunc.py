"""MLflow models by URI, served as a pyfunc inside each node's Triton server: no Python written.

References (the ``model`` setting):

=================================  =========================================================
``models:/<name>@<alias>``         a registered model's version that the alias names; the
                                   Airflow side resolves the alias once per DAG run and every
                                   node loads that version (``InferenceJobConfig.model_version``)
``models:/<name>/<version>``       a registered model's version
``runs:/<run id>/<path>``          a model logged in a run
``/path/to/model`` (a directory)   a saved MLflow model (``mlflow.pyfunc.save_model``); on
                                   Databricks a ``/Volumes/...`` directory
=================================  =========================================================

The model's ``MLmodel`` file says everything the job needs before any weights load, read as YAML
with no MLflow import: its signature gives the inputs (column names and types) and the outputs, its
``requirements.txt`` and ``python_env.yaml`` what the nodes need installed. Only the node's Triton
server imports MLflow, to ``mlflow.pyfunc.load_model`` the model's directory (which the job's driver
downloaded once and shipped to every node) and call ``predict`` on batches.

Signature-driven: each signature input is a model input named after its column (an input table
column of that name unless ``input_columns`` renames it); each output a column of the output
table. A ``predict`` result that is a Series, a 1-D array or a 1-column DataFrame is the one output,
named after the signature's output column, or ``prediction`` when unnamed; a DataFrame of several
columns gives one output per column. A model saved without a signature states its output type in
``model_options`` (``output_type``, and ``output_name``); its inputs are the ``input_columns``,
typed by ``input_types`` or, where not given, by the input table's columns.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spark_jobs.models.base import BINARY, TEXT, InferFn, ServedModel, TensorSpec

if TYPE_CHECKING:
    import numpy as np

MODELS_SCHEME = "models:/"
RUNS_SCHEME = "runs:/"
# What a directory reference starts with (a module reference has no "/", an hf: one its scheme).
DIRECTORY_PREFIXES = ("/", "./", "../", "~", "file:", "dbfs:")
MLMODEL = "MLmodel"
REQUIREMENTS_FILE = "requirements.txt"
PYTHON_ENV_FILE = "python_env.yaml"
PYFUNC_FLAVOR = "python_function"
# The output of a signature whose one output column has no name, and of a model without a signature.
DEFAULT_OUTPUT = "prediction"
MAX_BATCH_SIZE = 256

# MLflow's column types (mlflow.types.DataType) -> TensorSpec dtypes. datetime has no Triton type.
COLUMN_TYPES = {
    "string": TEXT,
    "binary": BINARY,
    "boolean": "bool",
    "integer": "int32",
    "long": "int64",
    "float": "float32",
    "double": "float64",
}
# Spark JSON types of an input table's columns -> MLflow column types (for a model without signature).
SPARK_TO_MLFLOW = {
    "string": "string",
    "binary": "binary",
    "boolean": "boolean",
    "byte": "integer",
    "short": "integer",
    "integer": "integer",
    "long": "long",
    "float": "float",
    "double": "double",
}
OPTIONS: dict[str, type | tuple[type, ...]] = {
    "output_type": str,  # a model without a signature: its one output's MLflow type
    "output_name": str,  # ... and its name (default "prediction")
    "input_types": dict,  # ... {input: MLflow type}; by default the input table's column types
    "params": dict,  # passed to predict(params=...) (the signature's params)
    "device": str,  # set per instance by the server; an MLflow model places itself
    "instance": int,
}
_NAME = re.compile(r"[^A-Za-z0-9_-]+")
_ALIAS = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class MlflowReference:
    """A parsed reference: a registered model (by version or alias), a run's model, or a directory."""

    reference: str
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    run_id: str | None = None
    path: str | None = None
    directory: str | None = None

    @property
    def is_registered(self) -> bool:
        return self.name is not None

    @property
    def uri(self) -> str:
        """The MLflow URI: ``models:/<name>/<version>`` once pinned (else as written), or the directory."""
        if self.name is not None:
            return f"{MODELS_SCHEME}{self.name}/{self.version}" if self.version else self.reference
        if self.run_id is not None:
            return f"{RUNS_SCHEME}{self.run_id}/{self.path}"
        return str(self.directory)

    def pinned(self, version: str) -> MlflowReference:
        if self.name is None:
            raise ValueError(f"model reference {self.reference!r} names no registered model to pin")
        return replace(self, version=str(version), alias=None)

    @property
    def triton_name(self) -> str:
        """A Triton model name (letters, digits, ``_``) saying which model and version it serves."""
        if self.name is not None:
            base = f"mlflow_{self.name}_v{self.version}" if self.version else f"mlflow_{self.name}"
        elif self.run_id is not None:
            base = f"mlflow_run_{self.run_id[:12]}_{self.path}"
        else:  # the driver names a downloaded copy after the model it holds: kept
            last = str(self.directory).rstrip("/").rsplit("/", 1)[-1]
            base = last if last.startswith("mlflow_") else f"mlflow_{last}"
        return _NAME.sub("_", base).strip("_")[:100] or "mlflow_model"


def is_mlflow_reference(reference: str) -> bool:
    return reference.startswith((MODELS_SCHEME, RUNS_SCHEME, *DIRECTORY_PREFIXES))


def parse_reference(reference: str) -> MlflowReference:
    """Parse one of the forms above; errors say what the forms are."""
    forms = (
        "'models:/<name>@<alias>', 'models:/<name>/<version>', 'runs:/<run id>/<path>' or an MLflow "
        "model directory"
    )
    if reference.startswith(MODELS_SCHEME):
        rest = reference.removeprefix(MODELS_SCHEME).strip("/")
        if "@" in rest:
            name, _, alias = rest.partition("@")
            if not name or "/" in name or not _ALIAS.match(alias):
                raise ValueError(f"model reference {reference!r} must look like {forms}")
            return MlflowReference(reference, name=name, alias=alias)
        name, _, version = rest.rpartition("/")
        if not name or "/" in name:
            raise ValueError(f"model reference {reference!r} must look like {forms}")
        if version == "latest":
            return MlflowReference(reference, name=name, alias="latest")
        if not version.isdigit():
            raise ValueError(
                f"model reference {reference!r}: {version!r} is not a version number; MLflow's model "
                f"stages are deprecated: move an alias instead and name it as models:/{name}@<alias>"
            )
        return MlflowReference(reference, name=name, version=str(int(version)))
    if reference.startswith(RUNS_SCHEME):
        run_id, _, path = reference.removeprefix(RUNS_SCHEME).strip("/").partition("/")
        if not run_id or not path or ".." in path.split("/"):
            raise ValueError(f"model reference {reference!r} must look like {forms}")
        return MlflowReference(reference, run_id=run_id, path=path.strip("/"))
    if reference.startswith(DIRECTORY_PREFIXES):
        return MlflowReference(reference, directory=reference.removeprefix("file:").rstrip("/") or "/")
    raise ValueError(f"model reference {reference!r} must look like {forms}")


# -- what the model's files say ------------------------------------------------------------------


def _yaml(raw: bytes, what: str) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} is not YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{what} is not a YAML mapping")
    return data


def read_requirements(raw: bytes | None) -> tuple[str, ...]:
    """The PEP 508 lines of a ``requirements.txt`` (comments, blank lines and pip options dropped)."""
    if raw is None:
        return ()
    lines = []
    for line in raw.decode("utf-8").splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith(("#", "-")):
            lines.append(line)
    return tuple(lines)


def python_version(raw: bytes | None) -> str | None:
    """The ``python`` of a ``python_env.yaml`` (the interpreter the model was logged with)."""
    if raw is None:
        return None
    value = _yaml(raw, PYTHON_ENV_FILE).get("python")
    return str(value) if value is not None else None


@dataclass(frozen=True)
class Column:
    """One signature column: its MLflow name (the DataFrame's column) and its tensor."""

    column: str | None
    tensor: TensorSpec
    tensor_based: bool = False


def _tensor_name(column: str | None, default: str, taken: set[str]) -> str:
    name = _NAME.sub("_", column).strip("_") if column else default
    name = name or default
    unique, n = name, 2
    while unique in taken:
        unique, n = f"{name}_{n}", n + 1
    taken.add(unique)
    return unique


def _column(entry: Mapping[str, Any], role: str, default: str, taken: set[str], where: str) -> Column:
    kind = entry.get("type")
    name = entry.get("name")
    label = f"{where}: signature {role} {name or default!r}"
    if kind == "tensor":
        spec = entry.get("tensor-spec") or {}
        dtype = str(spec.get("dtype", ""))
        shape = [int(d) for d in (spec.get("shape") or [-1])]
        if dtype not in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
                         "uint16", "uint32", "bool", "str", "object"):  # fmt: skip
            raise ValueError(f"{label} is a tensor of {dtype!r}, which Triton cannot carry")
        inner = tuple(shape[1:]) or (1,)
        if role == "input" and any(d < 1 for d in inner):
            raise ValueError(f"{label} has a variable shape {shape}; inputs have fixed shapes")
        dtype = TEXT if dtype in ("str", "object") else dtype
        tensor = TensorSpec(_tensor_name(name, default, taken), dtype, inner)
        return Column(name, tensor, tensor_based=True)
    if kind == "array" and role == "output":
        items = (entry.get("items") or {}).get("type")
        if items not in COLUMN_TYPES or items == "binary":
            raise ValueError(f"{label} is an array of {items!r}; arrays of text or numbers are served")
        return Column(name, TensorSpec(_tensor_name(name, default, taken), COLUMN_TYPES[items], (-1,)))
    if kind not in COLUMN_TYPES:
        raise ValueError(
            f"{label} has type {kind!r}; served types: {', '.join(COLUMN_TYPES)}"
            + (" and arrays of them as outputs" if role == "output" else "")
        )
    if role == "output" and kind == "binary":
        raise ValueError(f"{label} is binary; outputs are text or numbers")
    return Column(name, TensorSpec(_tensor_name(name, default, taken), COLUMN_TYPES[kind]))


def _schema(text: Any, role: str, where: str) -> list[Column]:
    entries = json.loads(text) if isinstance(text, str) else text
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{where}: the signature's {role}s are empty")
    taken: set[str] = set()
    default = "input" if role == "input" else DEFAULT_OUTPUT
    columns = [
        _column(entry, role, default if len(entries) == 1 else f"{default}_{i}", taken, where)
        for i, entry in enumerate(entries)
    ]
    return columns


@dataclass(frozen=True)
class MlflowModelInfo:
    """What an MLflow model's files say: its pyfunc flavor, signature columns and requirements."""

    inputs: list[Column] | None  # None: the model has no signature
    outputs: list[Column] | None
    requirements: tuple[str, ...]
    python: str | None
    has_params: bool


def model_info(reference: str, read: Callable[[str], bytes | None]) -> MlflowModelInfo:
    """Read ``MLmodel``, ``requirements.txt`` and ``python_env.yaml`` through ``read(name)`` (the
    file's bytes, or None where it does not exist); errors name the reference."""
    raw = read(MLMODEL)
    if raw is None:
        raise ValueError(f"model reference {reference!r} has no MLmodel file: it is not an MLflow model")
    mlmodel = _yaml(raw, f"{reference} MLmodel")
    flavors = mlmodel.get("flavors") or {}
    if PYFUNC_FLAVOR not in flavors:
        raise ValueError(
            f"model reference {reference!r} has no python_function flavor (flavors: "
            f"{', '.join(flavors) or 'none'}): log it with a flavor that mlflow.pyfunc.load_model loads"
        )
    signature = mlmodel.get("signature") or {}
    inputs = _schema(signature["inputs"], "input", reference) if signature.get("inputs") else None
    outputs = _schema(signature["outputs"], "output", reference) if signature.get("outputs") else None
    return MlflowModelInfo(
        inputs=inputs,
        outputs=outputs,
        requirements=read_requirements(read(REQUIREMENTS_FILE)),
        python=python_version(read(PYTHON_ENV_FILE)),
        has_params=bool(signature.get("params")),
    )


def check_options(options: Mapping[str, Any]) -> None:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(
            f"an MLflow model takes no option {', '.join(map(repr, unknown))}; it takes: {', '.join(sorted(OPTIONS))}"
        )
    for key, value in options.items():
        if not isinstance(value, OPTIONS[key]) or isinstance(value, bool):
            raise ValueError(
                f"option {key!r} of an MLflow model must be {OPTIONS[key].__name__}, got {value!r}"
            )  # type: ignore[union-attr]
    for key in ("output_type",):
        if key in options and options[key] not in COLUMN_TYPES:
            raise ValueError(f"option {key!r} must be one of {', '.join(COLUMN_TYPES)}, got {options[key]!r}")
    for name, kind in (options.get("input_types") or {}).items():
        if kind not in COLUMN_TYPES:
            raise ValueError(
                f"option 'input_types' gives input {name!r} type {kind!r}; types: {', '.join(COLUMN_TYPES)}"
            )


def _unsigned_output(reference: str, options: Mapping[str, Any], how: str) -> list[Column]:
    """A model whose signature has no outputs: its one output as ``model_options`` state it."""
    if "output_type" not in options:
        raise ValueError(f"model reference {reference!r} has no output signature: {how}")
    name = str(options.get("output_name") or DEFAULT_OUTPUT)
    return [
        Column(
            name, TensorSpec(_tensor_name(name, DEFAULT_OUTPUT, set()), COLUMN_TYPES[options["output_type"]])
        )
    ]


def _unsigned_inputs(
    reference: str,
    options: Mapping[str, Any],
    input_columns: Sequence[str] | Mapping[str, str] | None,
    column_types: Mapping[str, Any] | None,
    how: str,
) -> list[Column]:
    """A model without an input signature: its inputs are the ``input_columns``, typed by
    ``input_types`` or else by the input table's column types."""
    input_columns = input_columns or list(options.get("input_types") or {})
    if not input_columns:
        raise ValueError(f"model reference {reference!r} has no signature: {how}")
    table_columns = (
        dict(input_columns) if isinstance(input_columns, Mapping) else {n: n for n in input_columns}
    )
    types = dict(options.get("input_types") or {})
    inputs, taken = [], set[str]()
    for name, table_column in table_columns.items():
        kind = types.get(name)
        if kind is None and column_types is not None:
            kind = SPARK_TO_MLFLOW.get(str(column_types.get(table_column)))
        if kind is None:
            raise ValueError(
                f"model reference {reference!r} has no signature and input {name!r} no type: set "
                f"model_options['input_types'] = {{{name!r}: <one of {', '.join(COLUMN_TYPES)}>}} (by "
                "default the input table's column type, which is not known here)"
            )
        inputs.append(Column(name, TensorSpec(_tensor_name(name, "input", taken), COLUMN_TYPES[kind])))
    return inputs


UNSIGNED_HOW = (
    "an MLflow model without a signature needs job setting 'input_columns' (the DataFrame columns "
    "predict takes, e.g. ['text'] or {'text': 'body'}) and model_options['output_type'] (one of "
    f"{', '.join(COLUMN_TYPES)}; output_name names it, default {DEFAULT_OUTPUT!r}); or log the "
    "model with a signature (mlflow.models.infer_signature)"
)


def mlflow_model(
    reference: str,
    read: Callable[[str], bytes | None],
    *,
    location: str | None = None,
    options: Mapping[str, Any] | None = None,
    input_columns: Sequence[str] | Mapping[str, str] | None = None,
    column_types: Mapping[str, Any] | None = None,
) -> ServedModel:
    """The :class:`ServedModel` of an MLflow model whose files ``read`` gives.

    ``location`` is the model's directory where it is served (a node's copy): its loader runs
    ``mlflow.pyfunc.load_model`` there. ``options``, ``input_columns`` and ``column_types`` (the
    input table's ``{column: Spark JSON type}``, where known) type a model without a signature.
    """
    options = dict(options or {})
    check_options(options)
    parsed = parse_reference(reference)
    info = model_info(reference, read)
    outputs = info.outputs or _unsigned_output(reference, options, UNSIGNED_HOW)
    inputs = info.inputs or _unsigned_inputs(reference, options, input_columns, column_types, UNSIGNED_HOW)
    if options.get("params") and not info.has_params:
        raise ValueError(f"model reference {reference!r}: option 'params' needs a signature with params")

    def load(load_options: Mapping[str, Any]) -> InferFn:
        if location is None:
            raise RuntimeError(f"model {reference!r} has no local copy to load here")
        return load_pyfunc(location, inputs, outputs, load_options.get("params"))

    return ServedModel(
        name=parsed.triton_name,
        inputs=tuple(c.tensor for c in inputs),
        outputs=tuple(c.tensor for c in outputs),
        loader=load,
        max_batch_size=MAX_BATCH_SIZE,
        requirements=info.requirements,
        check_options=check_options,
        inputs_by_name=True,
    )


def directory_reader(directory: str | Path) -> Callable[[str], bytes | None]:
    """``read`` for :func:`mlflow_model` over a directory of this machine."""
    root = Path(directory).expanduser()

    def read(name: str) -> bytes | None:
        path = root / name
        return path.read_bytes() if path.is_file() else None

    return read


# -- serving, on the node (inside the Triton server) --------------------------------------------


def _frame_column(values: np.ndarray, tensor: TensorSpec) -> Any:
    """One batch's values of an input as predict takes them: str, bytes, numbers, one per row."""
    rows = len(values)
    if tensor.is_text:
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values.reshape(rows, -1)[:, 0]]
    if tensor.is_binary:
        return [bytes(v) for v in values.reshape(rows, -1)[:, 0]]
    if tensor.is_scalar:
        return values.reshape(rows)
    return list(values.reshape(rows, -1))


def _result_columns(result: Any, outputs: list[Column]) -> dict[str, Any]:
    """``{output tensor: values}`` of a predict result (Series, DataFrame, array, list or dict)."""
    import numpy as np
    import pandas as pd

    names = [c.tensor.name for c in outputs]
    if isinstance(result, dict):
        by_column = {str(k): v for k, v in result.items()}
    elif isinstance(result, pd.DataFrame):
        if len(outputs) == 1 and result.shape[1] == 1:
            return {names[0]: result.iloc[:, 0].to_numpy()}
        by_column = {str(k): result[k].to_numpy() for k in result.columns}
    elif isinstance(result, pd.Series):
        if len(outputs) == 1:
            return {names[0]: result.to_numpy()}
        by_column = {str(result.name): result.to_numpy()}
    else:
        array = np.asarray(result) if not isinstance(result, list) else result
        if len(outputs) == 1:
            return {names[0]: array}
        array = np.asarray(array)
        if array.ndim == 2 and array.shape[1] == len(outputs):
            return {name: array[:, i] for i, name in enumerate(names)}
        raise ValueError(
            f"predict returned an array of shape {list(array.shape)}; the signature has {len(outputs)} "
            f"outputs ({', '.join(str(c.column) for c in outputs)}): return a DataFrame with those columns"
        )
    found = {}
    for column in outputs:
        key = column.column if column.column is not None else column.tensor.name
        if key not in by_column:
            raise ValueError(
                f"predict returned columns {sorted(by_column)}, without the signature's output {key!r}"
            )
        found[column.tensor.name] = by_column[key]
    return found


def load_pyfunc(
    location: str, inputs: list[Column], outputs: list[Column], params: Mapping[str, Any] | None = None
) -> InferFn:
    """``mlflow.pyfunc.load_model(location)`` (its ``code_paths`` on ``sys.path``), called on batches."""
    import mlflow.pyfunc
    import numpy as np
    import pandas as pd

    model = mlflow.pyfunc.load_model(location)
    tensor_based = any(c.tensor_based for c in inputs)
    extra = {"params": dict(params)} if params else {}

    def infer(**batch: np.ndarray) -> dict[str, Any]:
        rows = len(next(iter(batch.values())))
        if tensor_based:
            arrays = {
                c.column or c.tensor.name: np.asarray(batch[c.tensor.name]).reshape(rows, *c.tensor.shape)
                for c in inputs
            }
            data: Any = next(iter(arrays.values())) if len(inputs) == 1 else arrays
        else:
            data = pd.DataFrame(
                {c.column or c.tensor.name: _frame_column(batch[c.tensor.name], c.tensor) for c in inputs}
            )
        return _result_columns(model.predict(data, **extra), outputs)

    return infer
