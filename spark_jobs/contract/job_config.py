"""The job argument: what the Airflow side asks one run to do, and how it travels to the job.

Both sides import it through :mod:`spark_jobs.contract` (it has no Spark or Airflow import), so the
arguments an operator submits and the arguments the job parses cannot drift apart. It travels as one
JSON argument after :data:`JOB_ARG` because Databricks' ``spark_python_task.parameters`` and
``spark-submit`` both pass a list of strings; the JSON carries :data:`CONTRACT_VERSION`, so a job
older than the Airflow side that submits to it fails naming both versions instead of misreading it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Version of the job argument and the run report. Raise it with every change of either: a job that
#: gets an argument of a newer version fails naming both versions (the cluster runs older code than
#: the Airflow side), and a report's keys an older Airflow side does not know are kept as they are.
#: History: 1: the first contract; 2: the report's reject_samples; 3: output_columns, input_columns
#: as {model input: column}, output_column=None; 4: the output settings (write_mode, keep_columns,
#: where, min_rows, max_reject_fraction, dry_run/limit, write_id, lease_wait_s/lease_ttl_s), reject
#: reasons as kinds (the rejects table's ``detail``), the report's write_mode, dry_run and samples;
#: 5: MLflow models (model_version, model_registry_uri; the report's model_version).
#: Arguments of an older version parse unchanged (every new setting has a default).
CONTRACT_VERSION = 5
CONTRACT_VERSION_KEY = "contract_version"
#: The job's one command-line option; its value is :meth:`InferenceJobConfig.to_json`.
JOB_ARG = "--job"
#: The job's entry point, as spark-submit runs it and as it is shipped to a Databricks workspace.
JOB_SCRIPT = Path(__file__).resolve().parents[1] / "batch_inference.py"
#: The run id of a job argument no backend has filled in yet (:meth:`InferenceJobConfig.for_run`).
DEFAULT_RUN_ID = "manual"
REJECTS_SUFFIX = "_rejects"
LEASES_SUFFIX = "_leases"

#: How a run writes its output (docs/operators.md, "Output tables"; :mod:`spark_jobs.write_modes`):
#: replace the date's partition, append one idempotent commit, or MERGE on the key.
REPLACE_DATE, APPEND, MERGE = "replace_date", "append", "merge"
WRITE_MODES = (REPLACE_DATE, APPEND, MERGE)
#: Rows a dry run scores when it sets no ``limit``.
DRY_RUN_DEFAULT_LIMIT = 100
#: The longest ``where`` predicate accepted: a filter, not a program.
MAX_WHERE_CHARS = 4000
#: Columns every output row has besides the key, the kept columns and the prediction.
OUTPUT_META_COLUMNS = ("model", "run_id", "scored_at")


def default_rejects_table(output_table: str) -> str:
    """Where rows that cannot be scored go when ``rejects_table`` is not set: ``<output_table>_rejects``."""
    return output_table.rstrip("/") + REJECTS_SUFFIX


def default_lease_table(output_table: str) -> str:
    """The Delta table holding the output table's date leases (:mod:`spark_jobs.date_lease`):
    ``<output_table>_leases``, beside the table, where every run writing it can see it."""
    return output_table.rstrip("/") + LEASES_SUFFIX


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
    # The table columns fed to the model's inputs: in the inputs' order, or {model input: column};
    # empty (the default): each input reads the column of its own name (spark_jobs.columns.input_mapping).
    input_columns: tuple[str, ...] | dict[str, str] = ()
    date_column: str = "date"
    # Each output lands in a column named after it; output_columns renames ({output: column}), and
    # output_column names the column of a single-output model (spark_jobs.columns.output_names).
    output_column: str | None = None
    output_columns: dict[str, str] = field(default_factory=dict)
    model_options: dict[str, Any] = field(default_factory=dict)
    # An MLflow ``models:/`` reference's version, pinned by the Airflow side at the start of the DAG
    # run (an alias resolved once): every node loads this version. None for every other kind.
    model_version: str | None = None
    # The MLflow registry the job loads ``models:/`` from where the environment does not say
    # (``databricks-uc`` or ``databricks`` on Databricks; credential-free by construction).
    model_registry_uri: str | None = None
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
    run_id: str = DEFAULT_RUN_ID
    # How the output is written (spark_jobs.write_modes) and what is checked before any commit.
    write_mode: str = REPLACE_DATE
    keep_columns: tuple[str, ...] = ()  # input columns copied to the output
    where: str | None = None  # a SQL predicate over the input's columns (spark_jobs.row_filter)
    min_rows: int = 0  # fewer rows read than this fails the run before any commit
    max_reject_fraction: float | None = None  # more rejected than this share fails it too
    dry_run: bool = False  # score ``limit`` rows, write nothing, report samples
    limit: int | None = None  # only with dry_run (default DRY_RUN_DEFAULT_LIMIT)
    # Who writes: the append's idempotency key and the name a date lease shows (the operator sets the
    # Airflow task instance, the same for every try); None: the run id.
    write_id: str | None = None
    lease_wait_s: float = 0.0  # wait this long for another run's lease on the date; 0: fail at once
    lease_ttl_s: float = 300.0  # a lease not renewed for this long is stale (its run died)

    def __post_init__(self) -> None:
        columns = self.input_columns
        object.__setattr__(
            self, "input_columns", dict(columns) if isinstance(columns, dict) else tuple(columns)
        )
        object.__setattr__(self, "keep_columns", tuple(self.keep_columns))
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
        if ":" not in self.model and not self.model.startswith(("/", "./", "../", "~")):
            raise JobConfigError(
                "job setting 'model' must be a 'module:attribute', 'hf:<task>:<directory or hub id>', "
                "'models:/<name>@<alias>', 'models:/<name>/<version>', 'runs:/<run id>/<path>' or an "
                f"MLflow model directory reference, got {self.model!r}"
            )
        if self.model_version is not None and not (
            self.model.startswith("models:/") and str(self.model_version).isdigit()
        ):
            raise JobConfigError(
                "job setting 'model_version' is the pinned version of a 'models:/' reference (digits), "
                f"got {self.model_version!r} for model {self.model!r}"
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
            object.__setattr__(self, "rejects_table", default_rejects_table(self.output_table))
        tables = {self.input_table, self.output_table, self.rejects_table}
        if len(tables) != 3:
            raise JobConfigError(
                "job settings 'input_table', 'output_table' and 'rejects_table' must be three different tables"
            )
        if self.lease_table in tables:
            raise JobConfigError(
                f"the date leases of output table {self.output_table} live in {self.lease_table}: "
                "'input_table' and 'rejects_table' must be other tables"
            )
        self._check_write_settings()

    def _check_write_settings(self) -> None:
        if self.write_mode not in WRITE_MODES:
            raise JobConfigError(
                f"job setting 'write_mode' must be one of {', '.join(WRITE_MODES)}, got {self.write_mode!r}"
            )
        # The output columns known without the model; the model's own output names are checked with
        # it (spark_jobs.columns.output_names, by the job and the Airflow side's pre-flight).
        taken = {self.key_column, self.date_column, *OUTPUT_META_COLUMNS, *self.output_columns.values()}
        if self.output_column is not None:
            taken.add(self.output_column)
        kept = self.keep_columns
        if any(c in taken for c in kept) or len(set(kept)) != len(kept) or not all(kept):
            raise JobConfigError(
                f"job setting 'keep_columns' must name distinct input columns other than the output's own "
                f"({', '.join(sorted(taken))}), got {list(kept)}"
            )
        if self.where is not None and (not self.where.strip() or len(self.where) > MAX_WHERE_CHARS):
            raise JobConfigError(
                f"job setting 'where' must be a SQL predicate of 1 to {MAX_WHERE_CHARS} characters, "
                f"got {len(self.where)} characters"
            )
        if self.min_rows < 0:
            raise JobConfigError(f"job setting 'min_rows' must be >= 0, got {self.min_rows}")
        if self.max_reject_fraction is not None and not 0 <= self.max_reject_fraction <= 1:
            raise JobConfigError(
                f"job setting 'max_reject_fraction' must be between 0 and 1, got {self.max_reject_fraction}"
            )
        if self.limit is not None and (self.limit < 1 or not self.dry_run):
            raise JobConfigError(
                f"job setting 'limit' must be >= 1 and needs dry_run=True (a limited run that wrote would "
                f"replace the date's output with part of it), got limit={self.limit}, dry_run={self.dry_run}"
            )
        if self.lease_wait_s < 0 or self.lease_ttl_s < 1:
            raise JobConfigError(
                "job settings 'lease_wait_s' must be >= 0 and 'lease_ttl_s' >= 1 seconds, got "
                f"{self.lease_wait_s} and {self.lease_ttl_s}"
            )

    @property
    def lease_table(self) -> str:
        """Where this run's date lease lives: :func:`default_lease_table` of the output table."""
        return default_lease_table(self.output_table)

    @property
    def dry_run_rows(self) -> int | None:
        """How many valid rows a dry run scores (None: a real run scores all of them)."""
        return (self.limit or DRY_RUN_DEFAULT_LIMIT) if self.dry_run else None

    @property
    def writer(self) -> str:
        """Who writes: ``write_id``, else the run id (append idempotency, the lease's holder)."""
        return self.write_id or self.run_id

    def to_json(self) -> str:
        return json.dumps(
            {CONTRACT_VERSION_KEY: CONTRACT_VERSION, **dataclasses.asdict(self)}, sort_keys=True
        )

    @classmethod
    def from_json(cls, text: str) -> InferenceJobConfig:
        data = json.loads(text)
        version = data.pop(CONTRACT_VERSION_KEY, CONTRACT_VERSION)
        if not isinstance(version, int) or version > CONTRACT_VERSION:
            raise JobConfigError(
                f"the job argument has contract version {version!r} and this job knows up to "
                f"{CONTRACT_VERSION}: install the same airflow-spark-triton version on the cluster as on Airflow"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise JobConfigError(f"unknown job setting(s): {', '.join(unknown)}")
        return cls(**data)

    def to_args(self) -> list[str]:
        """The job's command-line arguments (``spark-submit`` application args, Databricks parameters)."""
        return [JOB_ARG, self.to_json()]

    @classmethod
    def from_args(cls, args: Sequence[str]) -> InferenceJobConfig | None:
        """The job argument in a run's parameters, or None when they carry none (not a run of this job)."""
        args = list(args)
        if JOB_ARG not in args[:-1]:
            return None
        return cls.from_json(args[args.index(JOB_ARG) + 1])

    def replace(self, **changes: Any) -> InferenceJobConfig:
        return dataclasses.replace(self, **changes)

    def for_run(self, *, run_id: str, report_path: str, workers: int | None = None) -> InferenceJobConfig:
        """This argument as a backend submits it: the run's id and report path, and one Triton server
        per worker node (``workers``) unless ``expected_executors`` says otherwise."""
        changes: dict[str, Any] = {"run_id": run_id, "report_path": report_path}
        if not self.expected_executors and workers:
            changes["expected_executors"] = workers
        return self.replace(**changes)
