"""The contract between the Airflow side and the job on the cluster.

Both sides import this module (it has no Spark or Airflow import), so the arguments an operator
submits and the arguments the job parses cannot drift apart. It travels as one JSON argument because
Databricks' ``spark_python_task.parameters`` and ``spark-submit`` both pass a list of strings.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any


class JobConfigError(ValueError):
    """A job setting is missing or inconsistent; the message names the setting."""


@dataclass(frozen=True)
class InferenceJobConfig:
    """What one batch-inference run does: which rows, which model, where the results go."""

    input_table: str
    output_table: str
    model: str
    logical_date: str
    rejects_table: str | None = None
    key_column: str = "id"
    # The table columns fed to the model's inputs: in the inputs' order, or {model input: column}.
    input_columns: tuple[str, ...] | dict[str, str] = ("text",)
    date_column: str = "date"
    # Each output lands in a column named after it; output_columns renames ({output: column}), and
    # output_column names the column of a single-output model (spark_jobs.columns.output_names).
    output_column: str | None = None
    output_columns: dict[str, str] = field(default_factory=dict)
    model_options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 64
    # Triton serving knobs (benchmarks/TUNING.md, "Dynamic batching and protocol"): the node
    # server's dynamic batcher and model instances, and how the Spark workers talk to it.
    client_protocol: str = "http"
    server_max_queue_delay_us: int | None = None  # None: 0 for a CPU node's per-core instances, else 2 ms
    server_preferred_batch_sizes: tuple[int, ...] = ()
    server_model_instances: int | None = None  # None: one per core on a CPU node, else 1 (per GPU)
    expected_executors: int | None = None
    server_ready_timeout_s: float = 180.0
    inference_timeout_s: float = 300.0
    job_timeout_s: float | None = None
    report_path: str | None = None
    run_id: str = "manual"

    def __post_init__(self) -> None:
        columns = self.input_columns
        object.__setattr__(
            self, "input_columns", dict(columns) if isinstance(columns, dict) else tuple(columns)
        )
        object.__setattr__(self, "server_preferred_batch_sizes", tuple(self.server_preferred_batch_sizes))
        for name in ("input_table", "output_table", "model", "logical_date", "key_column"):
            if not getattr(self, name):
                raise JobConfigError(f"job setting {name!r} is required")
        try:
            dt.date.fromisoformat(self.logical_date)
        except ValueError as exc:
            raise JobConfigError(
                f"job setting 'logical_date' must be YYYY-MM-DD, got {self.logical_date!r}"
            ) from exc
        if ":" not in self.model:
            raise JobConfigError(
                "job setting 'model' must be a 'module:attribute' or 'hf:<task>:<directory or hub id>' "
                f"reference, got {self.model!r}"
            )
        if self.batch_size < 1:
            raise JobConfigError(f"job setting 'batch_size' must be >= 1, got {self.batch_size}")
        if self.client_protocol not in ("http", "grpc"):
            raise JobConfigError(
                f"job setting 'client_protocol' must be 'http' or 'grpc', got {self.client_protocol!r}"
            )
        if self.server_max_queue_delay_us is not None and self.server_max_queue_delay_us < 0:
            raise JobConfigError(
                f"job setting 'server_max_queue_delay_us' must be >= 0, got {self.server_max_queue_delay_us}"
            )
        if any(int(size) < 1 for size in self.server_preferred_batch_sizes):
            raise JobConfigError(
                "job setting 'server_preferred_batch_sizes' must hold sizes >= 1, "
                f"got {list(self.server_preferred_batch_sizes)}"
            )
        if self.server_model_instances is not None and self.server_model_instances < 1:
            raise JobConfigError(
                f"job setting 'server_model_instances' must be >= 1, got {self.server_model_instances}"
            )
        for name in ("server_ready_timeout_s", "inference_timeout_s", "job_timeout_s"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise JobConfigError(f"job setting {name!r} must be > 0 seconds, got {value}")
        if not self.input_columns:
            raise JobConfigError("job setting 'input_columns' must name at least one column")
        inputs = self.input_columns
        named = [*inputs, *(inputs.values() if isinstance(inputs, dict) else ())]
        named += [*self.output_columns, *self.output_columns.values()]
        if self.output_column is not None:
            named.append(self.output_column)
        if not all(isinstance(name, str) and name for name in named):
            raise JobConfigError(
                "job settings 'input_columns', 'output_column' and 'output_columns' must hold non-empty "
                f"names, got {self.input_columns!r}, {self.output_column!r}, {self.output_columns!r}"
            )
        if self.rejects_table is None:
            object.__setattr__(self, "rejects_table", self.output_table.rstrip("/") + "_rejects")
        tables = {self.input_table, self.output_table, self.rejects_table}
        if len(tables) != 3:
            raise JobConfigError(
                "job settings 'input_table', 'output_table' and 'rejects_table' must be three different tables"
            )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> InferenceJobConfig:
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise JobConfigError(f"unknown job setting(s): {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> InferenceJobConfig:
        return dataclasses.replace(self, **changes)
