"""Test fixture: a local Databricks REST emulator (clusters, jobs runs, Files API) with fault injection."""

from tests.databricks_emulator.server import DatabricksEmulator, Fault, RecordedRequest
from tests.databricks_emulator.state import Settings

__all__ = ["DatabricksEmulator", "Fault", "RecordedRequest", "Settings"]
