"""Server records on a node: identity and group kills through the shared spark_jobs.processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from spark_jobs import node_state
from spark_jobs.processes import ProcessRecord


def gone(proc: psutil.Process) -> bool:
    """Exited; an orphan waits as a zombie until whoever adopted it reaps it."""
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def server_group(tmp_path):
    """A stand-in server: a session leader with a child, like the server and its tritonserver."""
    leader = subprocess.Popen(["bash", "-c", "sleep 60 & wait"], start_new_session=True, cwd=tmp_path)
    deadline = time.monotonic() + 10
    while not psutil.Process(leader.pid).children() and time.monotonic() < deadline:
        time.sleep(0.05)
    (child,) = psutil.Process(leader.pid).children()
    yield leader, child
    if leader.poll() is None:
        node_state.kill_group(ProcessRecord.of(leader.pid).to_dict(), grace_s=5)
    leader.wait(5)


def test_a_stranger_in_a_reused_group_is_neither_counted_nor_killed(server_group):
    """A record whose server is younger than the group's live processes: they only share its number."""
    leader, child = server_group
    stale = {"run_id": "old", "pid": leader.pid, "pgid": leader.pid, "create_time": child.create_time() + 1.0}
    assert not node_state.process_matches(stale)
    assert not node_state.kill_group(stale, grace_s=1), "nothing of the recorded server is running"
    assert leader.poll() is None and not gone(child), "a stranger is never signalled"

    record = {"run_id": "now", **ProcessRecord.of(leader.pid).to_dict()}
    assert node_state.process_matches(record)
    assert node_state.kill_group(record, grace_s=5)
    assert leader.wait(5) is not None and gone(child)
    assert not node_state.process_matches(record)
    assert not node_state.kill_group(record, grace_s=1)


def test_a_member_survives_its_dead_server_and_is_still_killed(server_group):
    """The recorded server is gone (kill -9); its tritonserver child is still in the group and ours."""
    leader, child = server_group
    record = ProcessRecord.of(leader.pid).to_dict()
    leader.kill()
    leader.wait(5)
    assert not node_state.process_matches(record)
    assert not gone(child)
    assert node_state.kill_group(record, grace_s=5)
    assert gone(child)


def test_a_bare_pid_of_a_live_server_is_killed(server_group):
    """What a failed start passes: ``{"pid", "pgid"}`` with no create time, the server still running."""
    leader, child = server_group
    bare = {"pid": leader.pid, "pgid": leader.pid}
    assert not node_state.process_matches(bare), "no create time: not an identity"
    assert node_state.kill_group(bare, grace_s=5)
    assert leader.wait(5) is not None and gone(child)


def test_unusable_records_match_nothing():
    for record in ({}, {"pid": "x", "create_time": 1.0}, {"create_time": 1.0}, {"pid": None}):
        assert not node_state.process_matches(record)
        assert not node_state.kill_group(record, grace_s=1)


def test_the_cluster_side_needs_only_psutil():
    """spark_jobs is shipped to the cluster: its process helpers must not pull in the Airflow side."""
    check = (
        "import sys, spark_jobs.node_state, spark_jobs.processes; "
        "print(' '.join(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('airflow', 'airflow_spark_triton', 'tenacity', 'pyspark'))))"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


MAPS_SEGMENTS = """
import mmap, os, sys, time
from multiprocessing import resource_tracker, shared_memory
ours = shared_memory.SharedMemory(create=True, size=4096)  # psm_...: as PyTriton's tensor store
resource_tracker.unregister(ours._name, "shared_memory")  # as in a killed group: nothing unlinks it
fd = os.open("/dev/shm/" + sys.argv[1], os.O_CREAT | os.O_RDWR)  # not a server's name
os.ftruncate(fd, 4096)
other = mmap.mmap(fd, 4096)
print(ours.name, flush=True)
time.sleep(60)
"""


def test_a_killed_server_group_leaves_no_shared_memory_of_its_own(tmp_path):
    """The kill removes the segments the group maps under the server prefixes; no other file."""
    other = f"not-a-server-{tmp_path.name}"
    leader = subprocess.Popen(
        [sys.executable, "-c", MAPS_SEGMENTS, other],
        start_new_session=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ours = node_state.SHM_DIR / leader.stdout.readline().strip()
        assert ours.name.startswith("psm_") and ours.exists()
        assert node_state.kill_group(ProcessRecord.of(leader.pid).to_dict())
        assert leader.wait(5) is not None
        assert not ours.exists(), "the group's own segment outlived it"
        assert (node_state.SHM_DIR / other).exists(), "a segment under another name is not ours to remove"
    finally:
        leader.kill()
        leader.wait(5)
        (node_state.SHM_DIR / other).unlink(missing_ok=True)


def test_a_group_killed_whole_leaves_nothing_once_its_pid_is_free(tmp_path):
    """Nothing of the group is left to read: the record names the segments (by pid) and the
    workspace. While the pid lives (reused), they may be another server's and stay."""
    gone_server = subprocess.Popen([sys.executable, "-c", "pass"])
    gone_server.wait()
    workspace = tmp_path / "workspace"
    (workspace / "model-store").mkdir(parents=True)
    records = {
        "dead": {
            "pid": gone_server.pid,
            "pgid": gone_server.pid,
            "create_time": 1.0,
            "workspace": str(workspace),
        },
        "reused": {"pid": os.getpid(), "pgid": os.getpid(), "create_time": 1.0, "workspace": str(workspace)},
    }
    segments = {
        name: node_state.SHM_DIR / f"pytrtion{r['pid']}-test-{tmp_path.name}" for name, r in records.items()
    }
    try:
        for segment in segments.values():
            segment.write_bytes(b"x")
        assert not node_state.kill_group(records["reused"])
        assert segments["reused"].exists() and workspace.exists(), "a live pid's segments are not ours"
        assert not node_state.kill_group(records["dead"])
        assert not segments["dead"].exists() and not workspace.exists()
    finally:
        for segment in segments.values():
            segment.unlink(missing_ok=True)
