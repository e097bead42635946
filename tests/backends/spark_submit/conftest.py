"""Spark-submit backend fixtures: the local backend's leak check and no-secrets canaries."""

from __future__ import annotations

from tests.backends.local.conftest import (  # noqa: F401 (fixtures)
    canary,
    no_process_left_behind,
    secrets_key,
    started,
)
