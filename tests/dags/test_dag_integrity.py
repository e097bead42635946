"""DAG files must import cleanly and parse fast: no Spark, torch or Triton at parse time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_spark_triton.schedules import nightly as nightly_schedule

DAGS = sorted((Path(__file__).resolve().parents[2] / "dags").glob("*.py"))

PROBE = """
import importlib.util, json, sys, time
import airflow.sdk  # what every DAG file needs anyway; the scheduler has it loaded
from airflow.sdk import DAG  # noqa: F401  (resolve the lazy import before timing)
before = set(sys.modules)
start = time.process_time()  # CPU time: the parse's own work, not the machine's load
spec = importlib.util.spec_from_file_location("dag_under_test", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
elapsed = time.process_time() - start
heavy = sorted(m for m in set(sys.modules) - before if m.split(".")[0] in {"pyspark", "torch", "pytriton", "deltalake", "sentence_transformers", "transformers", "PIL"})
print(json.dumps({"seconds": elapsed, "heavy": heavy}))
"""


@pytest.mark.parametrize("dag_file", DAGS, ids=lambda p: p.name)
def test_dag_file_parses_fast_without_heavy_imports(dag_file):
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(dag_file)], check=True, capture_output=True, text=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [], f"{dag_file.name} imports {result['heavy']} at parse time"
    assert result["seconds"] < 1.0, f"{dag_file.name} took {result['seconds']:.2f} CPU s to parse"


def test_dagbag_has_no_import_errors(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS[0].parent))
    assert bag.import_errors == {}
    nightly = bag.get_dag("nightly_embeddings")
    assert [t.task_id for t in nightly.tasks] == ["create_cluster", "embed_documents", "delete_cluster"]
    assert nightly.get_task("delete_cluster").is_teardown
    assert nightly.get_task("create_cluster").is_setup
    assert nightly.schedule == nightly_schedule()


def test_the_nightly_run_scores_the_day_that_has_just_ended():
    """The run fired at 00:00 on the 27th has the logical date 26th (what the operator scores); a
    manual trigger without a date gets the same interval."""
    import pendulum
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.timetables.base import DataInterval, TimeRestriction

    timetable = coerce_to_core_timetable(nightly_schedule())
    fired = pendulum.datetime(2026, 11, 27, tz="UTC")
    last = DataInterval(pendulum.datetime(2026, 11, 25, tz="UTC"), pendulum.datetime(2026, 11, 26, tz="UTC"))
    restriction = TimeRestriction(earliest=None, latest=None, catchup=True)
    info = timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
    assert info.run_after == fired
    assert info.data_interval.start == pendulum.datetime(2026, 11, 26, tz="UTC")
    assert (
        timetable.infer_manual_data_interval(run_after=fired.add(hours=9)).start == info.data_interval.start
    )


def test_nightly_translations_is_the_seeds_t5_example_as_a_nightly_group(airflow_db, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.delenv("SPARK_TRITON_TRANSLATION_MODEL", raising=False)
    dag = DagBag(dag_folder=str(DAGS[0].parent)).get_dag("nightly_translations")
    assert dag.schedule == nightly_schedule()
    assert dag.get_task("translate.create_cluster").is_setup
    assert dag.get_task("translate.delete_cluster").is_teardown
    infer = dag.get_task("translate.infer")
    assert (infer.input_columns, infer.output_columns) == (
        {"text": "sentence"},
        {"generated_text": "translation"},
    )
    assert dag.params["model"] == "hf:text2text-generation:google-t5/t5-small"
    assert dag.params["model_options"]["prefix"] == "translate English to French: "
