"""The error shape of the Databricks REST API: an HTTP status plus ``error_code`` and ``message``."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(
        self, status: int, error_code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, str]:
        return {"error_code": self.error_code, "message": self.message}
