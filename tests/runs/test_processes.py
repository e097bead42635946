"""Process identity (pid + create time; group members created after the leader) and safe stops."""

from __future__ import annotations

import subprocess
import time

import psutil

from airflow_spark_triton.runs import processes as procs
from airflow_spark_triton.runs.processes import ProcessRecord


def test_stop_groups_never_signals_a_reused_pid(tmp_path):
    sleeper = subprocess.Popen(["sleep", "60"], start_new_session=True, cwd=tmp_path)
    try:
        real = ProcessRecord.of(sleeper.pid)
        stranger = ProcessRecord(real.pid, real.create_time - 100.0, real.pgid)  # same pid, older process
        assert procs.is_alive(real) and not procs.is_alive(stranger)
        assert procs.stop_groups([stranger], grace_s=1)
        assert sleeper.poll() is None, "a pid whose create time does not match must not be signalled"
        assert procs.stop_groups([real], grace_s=5)
        assert sleeper.wait(5) is not None
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()


def test_a_group_member_counts_only_if_created_after_the_leader(tmp_path):
    """A real child created after its leader belongs to it; the same processes judged against a
    record whose leader would be younger than they are (a reused group id) do not."""
    leader = subprocess.Popen(["bash", "-c", "sleep 60 & wait"], start_new_session=True, cwd=tmp_path)
    try:
        time.sleep(0.3)
        record = ProcessRecord.of(leader.pid)
        (child,) = psutil.Process(leader.pid).children()
        assert child.create_time() >= record.create_time
        assert procs.belongs(psutil.Process(leader.pid), record)
        assert procs.belongs(child, record), "created after the leader: ours"
        assert {p.pid for p in procs.group_members(record)} == {leader.pid, child.pid}

        younger = ProcessRecord(record.pid, child.create_time() + 1.0, record.pgid)  # a later leader
        assert not procs.belongs(psutil.Process(leader.pid), younger), "same pid, other create time"
        assert not procs.belongs(child, younger), "created before the leader: a stranger"
        assert procs.group_members(younger) == []
        assert procs.stop_groups([younger], grace_s=1)
        assert leader.poll() is None and child.is_running(), "a stranger is never signalled"
    finally:
        procs.stop_groups([ProcessRecord.of(leader.pid)], grace_s=5)
        leader.wait(5)


def test_one_identity_helper_for_both_sides():
    """The Airflow side uses the cluster side's identity and group stop, not a copy (issue #13)."""
    from spark_jobs import processes as shared

    for name in ("ProcessRecord", "CREATE_TIME_TOLERANCE_S", "belongs", "group_members", "wait_until"):
        assert getattr(procs, name) is getattr(shared, name), name


def test_is_alive_reaps_an_exited_child_of_ours(tmp_path):
    record = procs.start_detached(["true"], env={"PATH": "/usr/bin:/bin"}, log_path=tmp_path / "true.log")
    assert procs.wait_until(lambda: not procs.is_alive(record), 10)
    assert record.pid not in procs._CHILDREN, "reaped, not left a zombie"
    assert not psutil.pid_exists(record.pid) or psutil.Process(record.pid).create_time() != record.create_time
