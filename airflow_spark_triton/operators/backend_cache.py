"""One backend per task instance: what every operator of this package calls its backend through.

Building a backend looks its connection up (:func:`~airflow_spark_triton.backends.registry.get_backend`),
so an operator that built one per call looked the same connection up once per backend call. The
backend is built on first use, at execute time, never at construction: Airflow serializes operators
and deep-copies them before they run, and renders the templated ``conn_id`` only then. A new
``conn_id`` (a template rendered after first use) gets a new backend; a copy of the operator shares
the one it has (``shallow_copy_attrs``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from airflow_spark_triton.backends.registry import get_backend

if TYPE_CHECKING:
    from airflow_spark_triton.backends.base import GpuSparkBackend


class CachedBackend:
    """Mixin of an operator with a ``conn_id``: :attr:`backend` is that connection's backend."""

    shallow_copy_attrs: ClassVar[tuple[str, ...]] = ("_backend_cache",)
    conn_id: str
    _backend_cache: tuple[str, GpuSparkBackend] | None = None

    @property
    def backend(self) -> GpuSparkBackend:
        conn_id = str(self.conn_id)
        if self._backend_cache is None or self._backend_cache[0] != conn_id:
            self._backend_cache = (conn_id, get_backend(conn_id))
        return self._backend_cache[1]

    def backend_for(self, conn_id: str) -> GpuSparkBackend:
        """The backend of ``conn_id``: :attr:`backend` when it is this operator's connection (no
        second look-up), else one built for the caller (e.g. a downstream task's other connection)."""
        return self.backend if str(conn_id) == str(self.conn_id) else get_backend(str(conn_id))
