"""Prometheus metrics fed from request records. (Stub: to be completed.)"""

from __future__ import annotations

from proxy.request_record import RequestRecord


class RequestMetrics:
    """An observer that counts each finished request."""

    def __call__(self, record: RequestRecord) -> None:
        return None
