"""Logging set-up and the access log: one line per request on standard output.

(Stub: to be completed — see the observability work.)
"""

from __future__ import annotations

import logging
import sys

from proxy.request_record import RequestRecord


def configure_logging(log_format: str, level: int = logging.INFO) -> None:
    """Send the process's logs to stderr and access lines to stdout, in ``log_format``."""
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


class AccessLog:
    """An observer that writes one access line per finished request."""

    def __init__(self, log_format: str) -> None:
        self.log_format = log_format

    def __call__(self, record: RequestRecord) -> None:
        return None
