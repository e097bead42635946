"""Which host a record belongs to: a recorded process is judged by its pid only on the host that started it.

The local and spark-submit backends keep their clusters and runs as JSON records holding pids. A pid
means something only to the kernel that handed it out: on another host the same number is another
process or none. With Celery workers on several hosts (the usual production executor), a triggerer or
a teardown on host B that read host A's record through a shared state directory would find the
supervisor "dead" and mark a healthy run FAILED, or find nothing to stop and leak the cluster.

So every cluster and run record carries the host that wrote it (``host``), and whatever would judge a
recorded process (alive? gone? signal it) first asks :func:`foreign_host`: a record of another host
is reported as running there, and an operation that must touch its processes (submit, wait, cancel,
delete) fails with :func:`elsewhere_message`, naming both hosts. Records written before hosts were
recorded have none and count as this host's, as they always did.

The host is ``socket.gethostname()``, or ``$SPARK_TRITON_HOST_ID`` where several hostnames share one
process table (containers started with the host's PID namespace): set the same value in each.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

HOST_ID_ENV = "SPARK_TRITON_HOST_ID"
DOCS = "docs/deploying.md, 'Local runs are single-host'"


def this_host() -> str:
    """This machine's identity in records: ``$SPARK_TRITON_HOST_ID``, else its hostname."""
    return os.environ.get(HOST_ID_ENV) or socket.gethostname()


def foreign_host(record: Mapping[str, Any] | None) -> str | None:
    """The host of a record written on another host; None for this host's records (and old records
    without a host)."""
    host = (record or {}).get("host")
    return host if host and host != this_host() else None


def unchecked_message(host: str) -> str:
    """The status message of an unfinished run of another host: its recorded state stands."""
    return f"running on host {host!r}; this host ({this_host()!r}) cannot check it"


def elsewhere_message(what: str, host: str) -> str:
    """Why this host may not judge or stop ``what`` (e.g. ``cluster local-…``), and what is supported."""
    return (
        f"{what} is running on host {host!r}; this host ({this_host()!r}) cannot check it or stop its "
        "processes. The local and spark-submit backends run every task of a DAG run, and the triggerer, on "
        f"the host that created its cluster (one Airflow host, or a queue served by that host only; ${HOST_ID_ENV} "
        f"names hosts that share one process table): {DOCS}"
    )
