"""The record store: one lock, atomic private writes, and state transitions that only move forward."""

from __future__ import annotations

import json
import multiprocessing
import stat

import pytest

from airflow_spark_triton.runs.records import JsonRecord, TransitionRefused, state_home

TABLE = {None: {"NEW"}, "NEW": {"STARTED", "GONE"}, "STARTED": {"DONE", "GONE"}, "GONE": set()}


def make(tmp_path, **kwargs) -> JsonRecord:
    return JsonRecord(tmp_path / "record.json", tmp_path / ".lock", TABLE, **kwargs)


def test_update_merges_stamps_and_keeps_the_file_private(tmp_path):
    record = make(tmp_path)
    assert record.read() is None
    record.update(state="NEW", a=1)
    written = record.update(b=2)
    assert written["a"] == 1 and written["b"] == 2 and written["updated_at"]
    assert json.loads((tmp_path / "record.json").read_text()) == written
    assert stat.S_IMODE((tmp_path / "record.json").stat().st_mode) == 0o600
    assert "updated_at" not in make(tmp_path / "x", stamp=False).update(state="NEW")


def test_a_state_change_the_table_does_not_allow_is_refused_whoever_asks(tmp_path):
    record = make(tmp_path)
    with pytest.raises(TransitionRefused, match="state None cannot become STARTED"):
        record.update(state="STARTED")
    record.update(state="NEW")
    record.update(state="NEW", note="again")  # rewriting the current state is allowed
    assert record.transition("DONE") is None, "NEW -> DONE is not in the table"
    assert record.transition("STARTED", allowed_from=("GONE",)) is None, "not from the state asked for"
    assert record.transition("STARTED", allowed_from=("NEW",), by="me")["by"] == "me"
    record.update(state="GONE")
    with pytest.raises(TransitionRefused) as refused:
        record.update(state="STARTED", note="late")
    assert (refused.value.current, refused.value.wanted) == ("GONE", "STARTED")
    with pytest.raises(TransitionRefused):
        record.update_if(lambda current: {"state": "DONE"})
    assert record.update_if(lambda current: None) is None
    final = record.read()
    assert final["state"] == "GONE" and final["note"] == "again", "a refused change writes nothing"


def test_an_unguarded_record_takes_any_state(tmp_path):
    record = JsonRecord(tmp_path / "r.json", tmp_path / ".lock")
    record.update(state="X")
    assert record.transition("Y")["state"] == "Y"


def _increment(path: str, times: int) -> None:
    from pathlib import Path

    record = JsonRecord(Path(path) / "record.json", Path(path) / ".lock")
    for _ in range(times):
        record.update_if(lambda current: {"n": current.get("n", 0) + 1})


def test_read_modify_write_is_serialised_across_processes(tmp_path):
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_increment, args=(str(tmp_path), 50)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    assert JsonRecord(tmp_path / "record.json", tmp_path / ".lock").read()["n"] == 150


def test_state_home_prefers_the_setting_then_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_SPARK_TRITON_HOME", str(tmp_path / "env"))
    assert state_home(str(tmp_path / "given")) == tmp_path / "given"
    assert state_home() == tmp_path / "env"
