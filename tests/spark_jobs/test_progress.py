"""Progress while tasks run: per-batch rows reach the driver before their task ends; the history
behind the run page's chart; the report so far in the progress file."""

from __future__ import annotations

import json
import socket
import threading
import time

from spark_jobs.contract import MAX_REPORT_BYTES, REPORT_FILE, RunReport, progress_path
from spark_jobs.processes import wait_until
from spark_jobs.progress import HISTORY_POINTS, ProgressReporter
from spark_jobs.progress_channel import ProgressListener


def test_batches_reach_the_driver_while_their_task_runs(spark):
    """Two partitions of 5 batches each, a batch every 0.3 s: the driver sees rows mid-task."""
    listener = ProgressListener("127.0.0.1")
    sender = listener.sender()

    def score(rows):
        import time as t

        for _ in range(5):
            t.sleep(0.3)
            sender.add(10)
        yield sum(1 for _ in rows)

    result: list[int] = []
    job = threading.Thread(
        target=lambda: result.extend(
            spark.sparkContext.parallelize(range(100), 2).mapPartitions(score).collect()
        )
    )
    job.start()
    try:
        assert wait_until(lambda: listener.rows_done() > 0, 60, 0.05), "no batch reached the driver"
        seen = listener.rows_done()
        assert 0 < seen < 100 and job.is_alive(), (seen, "rows arrived only when tasks ended")
    finally:
        job.join(timeout=120)
        listener.close()
    assert sum(result) == 100
    assert listener.rows_done() == 100


def test_a_retried_partition_counts_its_furthest_attempt_and_strangers_are_ignored():
    listener = ProgressListener("127.0.0.1")
    try:
        with socket.create_connection((listener.host, listener.port)) as conn:
            conn.sendall(f"{listener.token}\n0 0 0 30\n0 0 0 10\n0 1 0 5\n0 0 1 20\n".encode())
        with socket.create_connection((listener.host, listener.port)) as stranger:
            stranger.sendall(b"not-the-token\n0 7 0 1000\n")
        assert wait_until(lambda: listener.rows_done() == 45, 10, 0.05), (
            listener.rows_done()
        )  # max(40, 20) + 5
        time.sleep(0.3)
        assert listener.rows_done() == 45
    finally:
        listener.close()


def test_a_sender_without_a_listener_never_fails_a_batch():
    listener = ProgressListener("127.0.0.1")
    sender = listener.sender()
    listener.close()
    sender.add(5)  # no task context outside Spark: nothing sent, nothing raised
    sender._send = lambda line: (_ for _ in ()).throw(ConnectionRefusedError())  # type: ignore[method-assign]
    sender.add(5)


class _NoSparkContext:
    """A session without a SparkContext (Spark Connect): no accumulator, no task counts."""

    @property
    def sparkContext(self):
        raise RuntimeError("no SparkContext under Spark Connect")

    class conf:
        @staticmethod
        def get(key, default=None):
            return "127.0.0.1" if key == "spark.driver.host" else default


def test_progress_file_has_history_and_the_report_so_far(tmp_path):
    report = RunReport("r1", "2026-11-24", "m:M", "/t/in", "/t/out", "/t/out_rejects")
    reporter = ProgressReporter(_NoSparkContext(), str(tmp_path / REPORT_FILE), interval_s=60, report=report)
    reporter.start()
    try:
        sender = reporter.sender
        assert sender is not None
        report.rows_read = 12  # the job fills its report in as the run goes
        reporter.inference_started(10)
        reporter._listener._rows[(1, 0)] = {0: 4}  # as if a batch of 4 had arrived
        reporter.flush()
        reporter._listener._rows[(1, 0)] = {0: 10}
    finally:
        reporter.stop("success")
    progress = json.loads(progress_path(tmp_path / REPORT_FILE).read_text())
    assert progress["phase"] == "success"
    assert progress["rows_done"] == progress["rows_total"] == 10
    assert [rows for _, rows in progress["history"]] == [0, 4, 10]
    so_far = RunReport.from_dict(progress["report"])
    assert (so_far, so_far.rows_read, so_far.output_version) == (report, 12, None)


def test_history_stays_bounded_and_plateaus_are_one_segment():
    reporter = ProgressReporter(_NoSparkContext(), None)
    for second in range(3):
        reporter._record(float(second), 7)
    assert reporter._history == [[0.0, 7], [2.0, 7]]
    for second in range(3, 3 + 2 * HISTORY_POINTS):
        reporter._record(float(second), second)
    assert len(reporter._history) <= HISTORY_POINTS
    assert reporter._history[-1] == [float(2 + 2 * HISTORY_POINTS), 2 + 2 * HISTORY_POINTS]
    times = [t for t, _ in reporter._history]
    assert times == sorted(times)


def test_the_report_so_far_is_bounded_like_the_final_one_and_the_jobs_own_is_left_whole(tmp_path):
    """Issue #24: progress files bounded. A report with more reasons, warnings and sample rows than
    a report holds (an older job's per-key reasons, a long dry run) is capped in the progress file;
    the job's own report object, which it goes on filling in, is not touched."""
    report = RunReport("r1", "2026-11-24", "m:M", "/t/in", "/t/out", "/t/out_rejects", rows_read=10**6)
    report.reject_reasons = {f"duplicate id {i}": 1 for i in range(50_000)}
    report.warnings = ["w" * 5_000] * 50
    report.samples = [{"id": i, "embedding": [0.5] * 384} for i in range(500)]
    reporter = ProgressReporter(_NoSparkContext(), str(tmp_path / REPORT_FILE), report=report)
    for second in range(3 * HISTORY_POINTS):
        reporter._inference_started = reporter._started
        reporter._record(float(second), second)
    reporter.flush()
    path = progress_path(tmp_path / REPORT_FILE)
    assert path.stat().st_size <= MAX_REPORT_BYTES + 16 * 1024  # the report, plus counters and history
    so_far = RunReport.from_dict(json.loads(path.read_text())["report"])
    assert sum(so_far.reject_reasons.values()) == 50_000 and len(so_far.samples) <= 10
    assert so_far.warnings[-1].startswith(f"report bounded to {MAX_REPORT_BYTES} bytes")
    assert len(report.reject_reasons) == 50_000 and len(report.samples) == 500 and len(report.warnings) == 50
