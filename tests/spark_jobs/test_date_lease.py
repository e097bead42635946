"""The date lease on real Delta tables (delta-rs): one run per (output table, date), stale leases taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from spark_jobs.date_lease import DateLease, DateLeaseHeld, DateLeaseLost, DeltaRsLeaseStore, Lease

DAY, OTHER_DAY = "2026-11-24", "2026-11-25"


def lease(table: Path, run_id: str, day: str = DAY, **settings) -> DateLease:
    values = {"ttl_s": 60.0, "wait_s": 0.0, **settings}
    return DateLease(
        DeltaRsLeaseStore(str(table)),
        output_table="/data/out",
        lease_date=day,
        run_id=run_id,
        writer=run_id,
        **values,
    )


def test_a_second_run_of_the_date_fails_at_once_naming_the_first_and_may_run_once_it_released(tmp_path):
    first = lease(tmp_path, "run-a").acquire()
    started = time.monotonic()
    with pytest.raises(DateLeaseHeld, match=r"date 2026-11-24 is being written by run run-a \(driver pid"):
        lease(tmp_path, "run-b").acquire()
    assert time.monotonic() - started < 10
    other_date = lease(tmp_path, "run-c", OTHER_DAY).acquire()  # another date is another lease
    first.release()
    second = lease(tmp_path, "run-b").acquire()
    assert second.took_over is None  # released, not stale
    second.release()
    other_date.release()


def test_a_waiting_run_starts_when_the_holder_releases(tmp_path, monkeypatch):
    monkeypatch.setattr("spark_jobs.date_lease.WAIT_POLL_S", 0.2)
    first = lease(tmp_path, "run-a").acquire()
    threading.Timer(1.5, first.release).start()
    started = time.monotonic()
    second = lease(tmp_path, "run-b", wait_s=60).acquire()
    assert 1.0 < time.monotonic() - started < 30
    second.release()
    with pytest.raises(DateLeaseHeld, match=r"after waiting 0.5 s"):
        holder = lease(tmp_path, "run-c").acquire()
        try:
            lease(tmp_path, "run-d", wait_s=0.5).acquire()
        finally:
            holder.release()


def test_the_heartbeat_keeps_a_lease_past_its_ttl(tmp_path):
    holder = lease(tmp_path, "run-a", ttl_s=4).acquire()
    time.sleep(5)  # more than the TTL: only the renewals (every second) keep it
    with pytest.raises(DateLeaseHeld, match="run run-a"):
        lease(tmp_path, "run-b").acquire()
    holder.ensure_held()
    holder.release()


def later(seconds: float):
    """A clock ``seconds`` ahead: what a run starting that much later sees."""
    return lambda: time.time() + seconds


def test_a_lease_of_another_host_is_taken_over_once_expired(tmp_path):
    store = DeltaRsLeaseStore(str(tmp_path))
    now = time.time()
    remote = Lease(
        DAY, "run-remote", "dag/task/run/-1", "another-host", 4242, 1.0, now, now + 300, None, "t0"
    )
    assert store.swap(DAY, None, remote)
    with pytest.raises(
        DateLeaseHeld, match=r"run run-remote for dag/task/run/-1 \(driver pid 4242 on another-host"
    ):
        lease(tmp_path, "run-b").acquire()  # pid 4242 is not judged here: another host's
    taker = lease(tmp_path, "run-b", clock=later(301)).acquire()
    assert taker.took_over is not None and taker.took_over.run_id == "run-remote"
    taker.release()


def test_a_killed_driver_on_this_host_frees_its_date_at_once(tmp_path):
    code = (
        "import sys, time\n"
        "from spark_jobs.date_lease import DateLease, DeltaRsLeaseStore\n"
        f"DateLease(DeltaRsLeaseStore(sys.argv[1]), output_table='/data/out', lease_date='{DAY}', "
        "run_id='run-killed', writer='run-killed', ttl_s=3600).acquire()\n"
        "print('HELD', flush=True)\n"
        "time.sleep(600)\n"
    )
    repo = Path(__file__).resolve().parents[2]
    driver = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )  # fmt: skip
    try:
        assert driver.stdout.readline().strip() == "HELD"
        with pytest.raises(DateLeaseHeld, match="run run-killed"):
            lease(tmp_path, "run-b").acquire()
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
    taker = lease(tmp_path, "run-b").acquire()  # an hour of TTL left, but its driver is gone
    assert taker.took_over is not None and taker.took_over.pid == driver.pid
    taker.release()


def test_a_run_whose_lease_was_taken_over_cannot_renew_it_and_says_who_has_it(tmp_path):
    slow = lease(tmp_path, "run-slow", ttl_s=60).acquire()
    # Its renewals stalled for longer than the TTL (a paused driver): a run starting then takes over.
    taker = lease(tmp_path, "run-taker", clock=later(61)).acquire()
    with pytest.raises(DateLeaseLost, match=r"run run-slow lost its lease .* now held by run run-taker"):
        slow.ensure_held()
    slow.release()  # does not release the taker's lease
    with pytest.raises(DateLeaseHeld, match="run run-taker"):
        lease(tmp_path, "run-c", clock=later(61)).acquire()
    taker.release()


def test_of_runs_racing_for_one_date_exactly_one_gets_it(tmp_path):
    DeltaRsLeaseStore(str(tmp_path)).read(DAY)  # the table exists, so the race is for the row
    start, outcomes = threading.Barrier(4), []

    def race(name: str) -> None:
        start.wait()
        try:
            outcomes.append(lease(tmp_path, name).acquire())
        except DateLeaseHeld:
            outcomes.append(None)

    threads = [threading.Thread(target=race, args=(f"run-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    winners = [held for held in outcomes if held is not None]
    assert len(outcomes) == 4 and len(winners) == 1, outcomes
    assert DeltaRsLeaseStore(str(tmp_path)).read(DAY).run_id == winners[0].run_id
    winners[0].release()
