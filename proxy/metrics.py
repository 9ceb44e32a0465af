"""Prometheus metrics fed from request records, and their exposition for /metrics.

A request only updates plain dictionaries (under a microsecond); the counts are added to the
Prometheus series at most :data:`FLUSH_INTERVAL` seconds later, before every scrape of this
process, and at exit. Updating the series directly would cost about 8 microseconds a request
with ``workers > 1``, where every increment is a locked write to a shared file.

With ``workers > 1`` every worker writes its series to files in ``PROMETHEUS_MULTIPROC_DIR``
(prometheus-client's multiprocess mode, chosen by that variable when the worker starts) and
the supervisor's /metrics adds them up. Otherwise the series live in this process's registry.

The series are created on first use, once per process, in a registry of their own: building
:class:`RequestMetrics` twice (a reload, a test) counts into the same series.
"""

from __future__ import annotations

import asyncio
import atexit
import os
from bisect import bisect_left
from collections.abc import Sequence
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from proxy import log_output
from proxy.request_record import RequestRecord

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
#: Seconds a count may wait before it reaches the series another process scrapes.
FLUSH_INTERVAL: Final = 1.0

#: The ``upstream`` label of a request no upstream was chosen for (no route, CONNECT).
NO_UPSTREAM: Final = "none"

LATENCY_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
#: Up to the 12 chunks of 4 KB of the default cookie policy, and beyond for larger ones.
SESSION_BYTES_BUCKETS: Final = (
    256, 1024, 2048, 4096, 8192, 16384, 32768, 49152, 65536, 131072, 262144,
)  # fmt: skip
SESSION_CHUNK_BUCKETS: Final = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)

#: What a request counts under: upstream, status, session state and change, upstream error,
#: websocket. Requests alike share one dictionary entry until the next flush.
_Key = tuple[str, int, str, str, str, bool]


class _Buckets:
    """A histogram's bucket counts and sum since the last flush."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, buckets: Sequence[float]) -> None:
        self.bounds = (*buckets, float("inf"))
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def observe(self, value: float) -> None:
        # Prometheus buckets are "less than or equal": the first bound >= value.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def add_to(self, histogram: Histogram) -> None:
        """Add these observations to a Prometheus histogram child, and start again from zero.

        prometheus-client observes one value at a time, so this adds to the child's bucket and
        sum values (its ``_buckets`` and ``_sum``, in the same bound order) directly.
        """
        if not any(self.counts):
            return
        histogram._sum.inc(self.total)
        for bucket, count in zip(histogram._buckets, self.counts, strict=True):
            if count:
                bucket.inc(count)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0


class _Metrics:
    """This process's series, and the counts not yet added to them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "session_sidecar_requests",
            "Finished requests by upstream and response status.",
            ("upstream", "status"),
            registry=r,
        )
        self.duration = Histogram(
            "session_sidecar_request_duration_seconds",
            "Time from request headers in to response body out, by upstream.",
            ("upstream",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.sessions = Counter(
            "session_sidecar_sessions",
            "Session cookies read from routed requests, by state "
            "(absent, valid, expired, invalid).",
            ("state",),
            registry=r,
        )
        self.session_bytes = Histogram(
            "session_sidecar_session_bytes",
            "Size of the session received (valid) or written, in bytes.",
            buckets=SESSION_BYTES_BUCKETS,
            registry=r,
        )
        self.session_chunks = Histogram(
            "session_sidecar_session_chunks",
            "Cookie chunks of the session received or written.",
            buckets=SESSION_CHUNK_BUCKETS,
            registry=r,
        )
        self.session_changes = Counter(
            "session_sidecar_session_changes",
            "Session cookie changes: set, cleared, resigned (older secret), refreshed, "
            "overflow (too large for the cookies) and invalid_header (bad X-Set-Session).",
            ("change",),
            registry=r,
        )
        self.upstream_errors = Counter(
            "session_sidecar_upstream_errors",
            "Requests whose upstream failed, by upstream and kind "
            "(refused, timeout, reset, header_too_large, bad_response).",
            ("upstream", "kind"),
            registry=r,
        )
        self.websockets = Counter(
            "session_sidecar_websocket_sessions",
            "Finished WebSocket sessions, by upstream.",
            ("upstream",),
            registry=r,
        )
        self.log_lines_dropped = Counter(
            "session_sidecar_log_lines_dropped",
            "Log lines dropped because nobody read the stream fast enough, by stream "
            "(stdout: the access log, stderr: the process log).",
            ("stream",),
            registry=r,
        )
        for stream in ("stdout", "stderr"):
            self.log_lines_dropped.labels(stream)  # shown at 0 before any drop
        self.pending: dict[_Key, int] = {}
        self.pending_durations: dict[str, _Buckets] = {}
        self.pending_session_bytes = _Buckets(SESSION_BYTES_BUCKETS)
        self.pending_session_chunks = _Buckets(SESSION_CHUNK_BUCKETS)
        self.flush_scheduled = False

    def schedule_flush(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # outside an event loop (a tool, a test): count at once
            self.flush()
            return
        self.flush_scheduled = True
        loop.call_later(FLUSH_INTERVAL, self.flush)

    def flush(self) -> None:
        """Add the pending counts to the series."""
        self.flush_scheduled = False
        pending, self.pending = self.pending, {}
        for (upstream, status, state, change, error, websocket), n in pending.items():
            self.requests.labels(upstream or NO_UPSTREAM, str(status)).inc(n)
            if not upstream:
                continue
            self.sessions.labels(state).inc(n)
            if change != "none":
                self.session_changes.labels(change).inc(n)
            if error:
                self.upstream_errors.labels(upstream, error).inc(n)
            if websocket:
                self.websockets.labels(upstream).inc(n)
        for upstream, durations in self.pending_durations.items():
            if any(durations.counts):
                durations.add_to(self.duration.labels(upstream or NO_UPSTREAM))
        self.pending_session_bytes.add_to(self.session_bytes)
        self.pending_session_chunks.add_to(self.session_chunks)
        for stream, lines in log_output.take_dropped().items():
            if lines:
                self.log_lines_dropped.labels(stream).inc(lines)


_metrics: _Metrics | None = None


def _process_metrics() -> _Metrics:
    global _metrics
    if _metrics is None:
        _metrics = _Metrics()
        atexit.register(_metrics.flush)
    return _metrics


def process_registry() -> CollectorRegistry:
    """This process's own registry (what /metrics shows with ``workers: 1``)."""
    return _process_metrics().registry


def flush() -> None:
    """Add every count still pending in this process to its series."""
    if _metrics is not None:
        _metrics.flush()


class RequestMetrics:
    """An observer that counts each finished request.

    Session outcomes, changes and upstream errors are counted only for requests that reached
    the routing to an upstream: a request with no route has no session to speak of.
    """

    def __init__(self) -> None:
        self._metrics = _process_metrics()

    def __call__(self, record: RequestRecord) -> None:
        m = self._metrics
        key = (
            record.upstream,
            record.status,
            record.session_state,
            record.session_change,
            record.upstream_error,
            record.websocket,
        )
        m.pending[key] = m.pending.get(key, 0) + 1
        durations = m.pending_durations.get(record.upstream)
        if durations is None:
            durations = m.pending_durations[record.upstream] = _Buckets(LATENCY_BUCKETS)
        durations.observe(record.duration)
        if record.session_chunks:
            m.pending_session_bytes.observe(record.session_bytes)
            m.pending_session_chunks.observe(record.session_chunks)
        if not m.flush_scheduled:
            m.schedule_flush()


def exposition(accept: str | None) -> tuple[bytes, str]:
    """The metrics page for a scrape with this ``Accept`` header: ``(body, content type)``.

    In multiprocess mode the page adds up the files every worker wrote, read afresh each time.
    """
    flush()
    if os.environ.get(MULTIPROC_ENV):
        scraped = CollectorRegistry()
        MultiProcessCollector(scraped)  # type: ignore[no-untyped-call]
    else:
        scraped = process_registry()
    encoder, content_type = choose_encoder(accept or "")
    return encoder(scraped), content_type
