"""Which table column feeds each model input, which column each output lands in, and whether a table fits.

One set of rules for both sides: the job applies them to the table it reads, and the Airflow side's
pre-flight applies them to the table's schema before any cluster exists (``airflow_spark_triton.preflight``).
Pure Python: a table's columns are given as ``{name: Spark JSON type}`` (``"string"``, ``"long"``,
``{"type": "array", "elementType": "float", ...}``), which pyspark (``DataType.jsonValue()``),
delta-rs (``schema().to_json()``) and Unity Catalog (``ColumnInfo.type_json``) all give.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from spark_jobs.contract import OUTPUT_META_COLUMNS, JobConfigError

if TYPE_CHECKING:
    from spark_jobs.contract import InferenceJobConfig
    from spark_jobs.models.base import ServedModel, TensorSpec

# Date column types a run can select one day of: a DATE, a TIMESTAMP (the day in the Spark session's
# time zone) or a 'YYYY-MM-DD' string.
DATE_COLUMN_TYPES = ("date", "timestamp", "timestamp_ntz", "string")
_NUMBERS = ("byte", "short", "integer", "long", "float", "double")


class InputSchemaError(ValueError):
    """The input table cannot be scored at all; the message names the table and column."""


# Spark's JSON type names that its SQL names differ from (DataType.simpleString()).
_SQL_NAMES = {"long": "bigint", "integer": "int", "short": "smallint", "byte": "tinyint"}


def type_text(spark_type: Any) -> str:
    """``array<float>``, ``bigint``: a Spark JSON type as Spark SQL names it, for messages."""
    if isinstance(spark_type, Mapping):
        kind = spark_type.get("type")
        if kind == "array":
            return f"array<{type_text(spark_type.get('elementType'))}>"
        if kind == "map":
            return f"map<{type_text(spark_type.get('keyType'))},{type_text(spark_type.get('valueType'))}>"
        return str(kind)
    return _SQL_NAMES.get(str(spark_type), str(spark_type))


def _is_number(spark_type: Any, boolean: bool) -> bool:
    return isinstance(spark_type, str) and (
        spark_type in _NUMBERS or spark_type.startswith("decimal") or (boolean and spark_type == "boolean")
    )


def input_mapping(job: InferenceJobConfig, model: ServedModel) -> list[tuple[TensorSpec, str]]:
    """``(model input, table column)`` pairs in the model's input order, from ``input_columns``.

    Empty ``input_columns``: each input reads the column of its own name. A model whose inputs are
    named columns (``inputs_by_name``: an MLflow signature) takes a dict that renames only some."""
    names = [spec.name for spec in model.inputs]
    columns = job.input_columns
    if not columns:
        return [(spec, spec.name) for spec in model.inputs]
    if isinstance(columns, Mapping):
        unknown = sorted(set(columns) - set(names))
        missing = [] if model.inputs_by_name else [n for n in names if n not in columns]
        if unknown or missing:
            raise JobConfigError(
                f"job setting 'input_columns' maps model inputs {sorted(columns)}, but model {model.name} "
                f"takes {names}: map every input of the model to a table column, e.g. "
                f"{{{names[0]!r}: 'my_column'}}"
            )
        return [(spec, columns.get(spec.name, spec.name)) for spec in model.inputs]
    if len(columns) != len(names):
        raise JobConfigError(
            f"model {model.name} takes {len(names)} input(s) ({', '.join(names)}) but job setting "
            f"'input_columns' names {len(columns)}: {list(columns)}; name one column per input in this "
            f"order, or map them by name ({{input: column}})"
        )
    return list(zip(model.inputs, columns, strict=True))


def output_names(job: InferenceJobConfig, model: ServedModel) -> dict[str, str]:
    """``{output name: output table column}``: each output named after itself unless renamed."""
    outputs = [spec.name for spec in model.outputs]
    unknown = sorted(set(job.output_columns) - set(outputs))
    if unknown:
        raise JobConfigError(
            f"job setting 'output_columns' renames {unknown}, which model {model.name} does not output "
            f"(its outputs: {', '.join(outputs)})"
        )
    names = {name: job.output_columns.get(name, name) for name in outputs}
    if job.output_column is not None:
        if len(outputs) != 1:
            raise JobConfigError(
                f"job setting 'output_column' names one column, but model {model.name} has {len(outputs)} "
                f"outputs ({', '.join(outputs)}); each lands in a column named after it: rename them "
                "with 'output_columns' ({output: column}) instead"
            )
        if job.output_columns and job.output_columns.get(outputs[0], job.output_column) != job.output_column:
            raise JobConfigError("job settings 'output_column' and 'output_columns' name different columns")
        names[outputs[0]] = job.output_column
    taken = {name: f"the column {name!r} the job writes" for name in OUTPUT_META_COLUMNS}
    taken.update(
        {
            job.key_column: f"key_column {job.key_column!r}",
            job.date_column: f"date_column {job.date_column!r}",
        }
    )
    seen: dict[str, str] = {}
    for output, column in names.items():
        if column in job.keep_columns:
            raise JobConfigError(
                f"job setting 'keep_columns' copies input column {column!r} to the output table, where "
                f"output {output!r} of model {model.name} lands in that column: drop it from keep_columns, "
                f"or rename the output with output_columns={{{output!r}: '{column}_out'}}"
            )
        if column in taken:
            raise JobConfigError(
                f"output column {column!r} (output {output!r} of model {model.name}) collides with "
                f"{taken[column]} in the output table: rename it with "
                f"output_columns={{{output!r}: '{column}_out'}}"
            )
        if column in seen:
            raise JobConfigError(
                f"outputs {seen[column]!r} and {output!r} of model {model.name} would both land in column "
                f"{column!r}: give them different names in 'output_columns'"
            )
        seen[column] = output
    return names


def check_settings(job: InferenceJobConfig, model: ServedModel) -> None:
    """Everything about a job that its model decides, before any table is read: the input and output
    columns, ``batch_size`` against the model's ``max_batch_size``, and the model's options."""
    input_mapping(job, model)
    output_names(job, model)
    if job.batch_size > model.max_batch_size:
        raise JobConfigError(
            f"job setting 'batch_size' is {job.batch_size}, above model {model.name}'s max_batch_size "
            f"{model.max_batch_size} (the most rows Triton takes in one request): set batch_size to "
            f"{model.max_batch_size} or less"
        )
    if model.check_options is not None:
        try:
            model.check_options(job.model_options)
        except ValueError as exc:
            raise JobConfigError(f"job setting 'model_options': {exc}") from exc


def _input_problem(spark_type: Any, spec: TensorSpec) -> str | None:
    """What the model input ``spec`` needs that a column of ``spark_type`` lacks; None if it fits."""
    if spec.is_text:
        return None if spark_type in ("string", "binary") else "text (a string or binary column)"
    if spec.is_binary:
        return None if spark_type == "binary" else "bytes (a binary column, e.g. encoded images)"
    boolean = spec.dtype == "bool"
    kind = "booleans" if boolean else "numbers"
    if spec.is_scalar:
        return None if _is_number(spark_type, boolean) else kind
    is_array = isinstance(spark_type, Mapping) and spark_type.get("type") == "array"
    if is_array and _is_number(spark_type.get("elementType"), boolean):
        return None
    return f"an array of {spec.values_per_row} {kind} (shape {list(spec.shape)})"


def check_table(fields: Mapping[str, Any], table: str, job: InferenceJobConfig, model: ServedModel) -> None:
    """The input table ``table`` (columns ``fields``) has the key, date and input columns, with types
    the model and the job can use; raises :class:`InputSchemaError` naming the column and the fix."""

    def missing(column: str, setting: str) -> InputSchemaError:
        return InputSchemaError(
            f"input table {table} has no column {column!r} ({setting}; its columns: "
            f"{', '.join(sorted(fields))}): set {setting} to one of them"
        )

    for column, setting in ((job.key_column, "key_column"), (job.date_column, "date_column")):
        if column not in fields:
            raise missing(column, setting)
    for column in job.keep_columns:
        if column not in fields:
            raise missing(column, "keep_columns")
    date_type = fields[job.date_column]
    if date_type not in DATE_COLUMN_TYPES:
        raise InputSchemaError(
            f"input table {table} column {job.date_column!r} (date_column) is {type_text(date_type)}; "
            "a run selects its date from a DATE, TIMESTAMP or 'YYYY-MM-DD' string column: point "
            "date_column at one"
        )
    for spec, column in input_mapping(job, model):
        if column not in fields:
            raise missing(column, f"input_columns (model input {spec.name!r})")
        problem = _input_problem(fields[column], spec)
        if problem:
            raise InputSchemaError(
                f"input table {table} column {column!r} is {type_text(fields[column])}, model input "
                f"{spec.name!r} of {model.name} needs {problem}: map that input to a column of that type "
                "in input_columns"
            )
