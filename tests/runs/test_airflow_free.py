"""runs/ imports no Airflow (nor Spark): the run supervisor and the local reaper run it in a bare interpreter."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import airflow_spark_triton.runs

RUNS_MODULES = [
    m.name for m in pkgutil.iter_modules(airflow_spark_triton.runs.__path__, "airflow_spark_triton.runs.")
]
CHECK = """
import importlib, sys
importlib.import_module(sys.argv[1])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("airflow", "pyspark", "torch"))
print(" ".join(heavy))
"""


@pytest.mark.parametrize(
    "module",
    [
        *RUNS_MODULES,
        "airflow_spark_triton.backends.local.reaper",
        "airflow_spark_triton.backends.local.cluster_state",
    ],
)
def test_the_module_imports_no_airflow(module):
    done = subprocess.run([sys.executable, "-c", CHECK, module], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"{module} imports {done.stdout.strip()}"


def test_every_runs_module_is_checked():
    assert {"records", "processes", "env", "supervisor", "supervised"} <= {
        m.rsplit(".", 1)[1] for m in RUNS_MODULES
    }
