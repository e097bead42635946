"""The fault suite (issue #5): every fault's designed outcome, and nothing left behind, as a table.

``make faults`` runs ``pytest -m faults``; ``make test`` collects the same tests, so CI checks the
same thing. After the run, the table of :mod:`tests.faults.ledger` is printed and, if
``$FAULTS_REPORT`` names a file, saved there as JSON.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.faults import ledger
from tests.spark_jobs.conftest import cluster_spark  # noqa: F401  (one local-cluster per fault module)

REPORT_ENV = "FAULTS_REPORT"


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not ledger.ROWS:
        return
    rows = sorted(ledger.ROWS, key=lambda r: r.test)
    terminalreporter.section("fault table (issue #5)")
    terminalreporter.write_line(ledger.format_table(rows))
    dirty = [r.fault for r in rows if not r.clean]
    verdict = "every left/lost/duplicated column is 0" if not dirty else f"NOT CLEAN: {', '.join(dirty)}"
    terminalreporter.write_line(f"{len(rows)} faults; {verdict}")
    target = os.environ.get(REPORT_ENV)
    if target:
        ledger.write_json(rows, Path(target))
        terminalreporter.write_line(f"fault table written to {target}")


@pytest.fixture
def fault_home(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """This fault's own backend home and data, under the session root (so the session leak check
    covers it too): counting what is left is then counting what is under this directory."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:80]
    home = ROOT / "faults" / name
    home.mkdir(parents=True, exist_ok=False)
    monkeypatch.setenv("AIRFLOW_SPARK_TRITON_HOME", str(home / "spark_triton"))
    yield home


@pytest.fixture
def timeline(fault_home: Path) -> Iterator[ledger.Timeline]:
    """What ran under the fault's home, and when runs ended: cleanup times come from here."""
    watch = ledger.Timeline(fault_home)
    watch.start()
    yield watch
    watch.stop()
