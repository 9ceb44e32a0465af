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

Three kinds of series:

* request series, counted from each :class:`RequestRecord` and added up over workers;
* worker gauges (memory, CPU, open fds, requests in flight, client connections): each worker
  samples them every :data:`FLUSH_INTERVAL` and at exit, as ``liveall`` (one series per pid)
  or ``livesum`` gauges. prometheus-client's own process collector sees one process only and
  does not work in multiprocess mode. The supervisor removes a dead worker's gauge files
  (:func:`worker_exited`), so its series disappear with it;
* configuration series (reloads by outcome, the key ids in force), kept by the process that
  serves /metrics: the supervisor with ``workers > 1``, which decides whether a reload is
  taken, else the one worker.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, InfoMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

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

#: What an invalid session is counted under: a small fixed set, from the codec's reasons.
INVALID_REASONS: Final = (
    "bad_signature",  # the MAC (or AES-GCM tag) does not match: tampered, or another secret
    "unknown_key",  # signed with a secret no longer configured
    "missing_chunks",  # some of the session's chunk cookies did not come
    "malformed",  # not a token of this format at all
    "too_large",  # over session.max_json_bytes once inflated, or corrupt
    "future_timestamp",  # issued in the future: clocks apart, or forged
    "other",
)
#: The codec's reason phrases (session_codec.py, session_legacy.py) by label.
_INVALID_REASON_LABELS: Final = {
    "bad signature": "bad_signature",
    "unknown key id (secret removed?)": "unknown_key",
    "chunk 0 missing": "missing_chunks",
    "not a session token": "malformed",
    "bad chunk count": "malformed",
    "malformed header": "malformed",
    "malformed signature": "malformed",
    "malformed ciphertext": "malformed",
    "malformed encoding": "malformed",
    "malformed timestamp": "malformed",
    "payload not ASCII": "malformed",
    "payload not JSON": "malformed",
    "payload not a JSON object": "malformed",
    "legacy cookie sent twice with different values": "malformed",
    "payload too large or corrupt": "too_large",
    "legacy cookie too large": "too_large",
    "timestamp in the future": "future_timestamp",
}
#: Directions of ``session_bytes``: received from the client, written to it.
DIRECTIONS: Final = ("in", "out")
#: Outcomes of a reload (SIGHUP).
RELOAD_OUTCOMES: Final = ("ok", "refused")

#: What a request counts under: upstream, status, session state, invalid reason and change,
#: upstream error, websocket. Requests alike share one dictionary entry until the next flush.
_Key = tuple[str, int, str, str, str, str, bool]
#: Requests in flight and open client connections of this worker, when sampled.
Load = Callable[[], tuple[int, int]]


def invalid_reason(reason: str) -> str:
    """The ``reason`` label for one of the codec's invalid-session reasons."""
    label = _INVALID_REASON_LABELS.get(reason)
    if label is not None:
        return label
    if reason.endswith("chunks expected, some missing"):
        return "missing_chunks"
    return "other"


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
        self.invalid_sessions = Counter(
            "session_sidecar_invalid_sessions",
            "Invalid session cookies read from routed requests, by reason ("
            + ", ".join(INVALID_REASONS)
            + ").",
            ("reason",),
            registry=r,
        )
        for reason in INVALID_REASONS:
            self.invalid_sessions.labels(reason)  # shown at 0 before any
        self.session_bytes = Histogram(
            "session_sidecar_session_bytes",
            "Size of the session in cookie bytes, by direction (in: a valid one received, "
            "out: one written).",
            ("direction",),
            buckets=SESSION_BYTES_BUCKETS,
            registry=r,
        )
        self.session_chunks = Histogram(
            "session_sidecar_session_chunks",
            "Cookie chunks of the session, by direction (in: received, out: written).",
            ("direction",),
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
            "Requests whose upstream failed, by upstream and kind (dns, refused, tls, timeout, "
            "reset, bad_response, header_too_large, session_too_large).",
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
        self.worker = _WorkerGauges(r)
        self.pending: dict[_Key, int] = {}
        self.pending_durations: dict[str, _Buckets] = {}
        self.pending_session_bytes = {d: _Buckets(SESSION_BYTES_BUCKETS) for d in DIRECTIONS}
        self.pending_session_chunks = {d: _Buckets(SESSION_CHUNK_BUCKETS) for d in DIRECTIONS}
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
        """Add the pending counts to the series, and sample the worker gauges."""
        self.flush_scheduled = False
        pending, self.pending = self.pending, {}
        for (upstream, status, state, reason, change, error, websocket), n in pending.items():
            self.requests.labels(upstream or NO_UPSTREAM, str(status)).inc(n)
            if not upstream:
                continue
            self.sessions.labels(state).inc(n)
            if state == "invalid":
                self.invalid_sessions.labels(invalid_reason(reason)).inc(n)
            if change != "none":
                self.session_changes.labels(change).inc(n)
            if error:
                self.upstream_errors.labels(upstream, error).inc(n)
            if websocket:
                self.websockets.labels(upstream).inc(n)
        for upstream, durations in self.pending_durations.items():
            if any(durations.counts):
                durations.add_to(self.duration.labels(upstream or NO_UPSTREAM))
        for direction in DIRECTIONS:
            self.pending_session_bytes[direction].add_to(self.session_bytes.labels(direction))
            self.pending_session_chunks[direction].add_to(self.session_chunks.labels(direction))
        for stream, lines in log_output.take_dropped().items():
            if lines:
                self.log_lines_dropped.labels(stream).inc(lines)
        self.worker.sample()


#: How often a worker counts its open fds (memory and CPU: at every flush, about once a second).
FD_SAMPLE_SECONDS: Final = 10.0
_PAGE_BYTES: Final = os.sysconf("SC_PAGE_SIZE")


def _resident_bytes() -> float | None:
    try:
        with open("/proc/self/statm", "rb") as statm:  # size resident shared ... (pages)
            return float(int(statm.read().split()[1]) * _PAGE_BYTES)
    except (OSError, IndexError, ValueError):
        return None


def _open_fds() -> float | None:
    try:
        return float(len(os.listdir("/proc/self/fd")))
    except OSError:
        return None


class _WorkerGauges:
    """One worker's memory, CPU and open fds (per pid), requests in flight and connections.

    In multiprocess mode prometheus-client labels a ``liveall`` gauge with the writer's pid
    itself and adds ``livesum`` gauges over live processes; in one process the pid label is
    written here, so the page looks the same either way.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        pid_label = () if self.multiprocess else ("pid",)
        self.pid = str(os.getpid())
        self._fds_sampled: float | None = None

        def per_pid(name: str, documentation: str) -> Gauge:
            return Gauge(
                name, documentation, pid_label, multiprocess_mode="liveall", registry=registry
            )

        self.memory = per_pid(
            "session_sidecar_worker_resident_memory_bytes",
            "Resident memory of each worker, by pid.",
        )
        self.cpu = per_pid(
            "session_sidecar_worker_cpu_seconds",
            "CPU time (user and system) each worker has used since it started, by pid.",
        )
        self.fds = per_pid(
            "session_sidecar_worker_open_fds", "Open file descriptors of each worker, by pid."
        )
        self.in_flight = Gauge(
            "session_sidecar_in_flight_requests",
            "Requests being served: head read, response not yet ended (WebSocket relays included).",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.connections = Gauge(
            "session_sidecar_client_connections",
            "Open client connections on the proxied port.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.load: Load | None = None

    def sample(self) -> None:
        if self.load is None:
            return  # not a serving worker (a tool, the supervisor, a unit test)
        times = os.times()
        values = {self.cpu: times.user + times.system, self.memory: _resident_bytes()}
        now = time.monotonic()
        if self._fds_sampled is None or now - self._fds_sampled >= FD_SAMPLE_SECONDS:
            # Listing /proc/self/fd costs about 1 ms per 1,000 fds, on the event loop: a
            # client holding many idle connections must not buy loop time with it.
            self._fds_sampled = now
            values[self.fds] = _open_fds()
        for gauge, value in values.items():
            if value is not None:  # not on a system without /proc
                (gauge if self.multiprocess else gauge.labels(self.pid)).set(value)
        in_flight, connections = self.load()
        self.in_flight.set(in_flight)
        self.connections.set(connections)


class _ConfigMetrics(Collector):
    """Reloads by outcome and the session key ids in force, in the process serving /metrics.

    Key ids are public (they travel in every cookie); the secrets never come here.
    """

    def __init__(self) -> None:
        self.reloads = dict.fromkeys(RELOAD_OUTCOMES, 0)
        self.key_ids: tuple[str, ...] = ()

    def collect(self) -> Iterator[Metric]:
        reloads = CounterMetricFamily(
            "session_sidecar_reloads",
            "Configuration reloads (SIGHUP), by outcome: ok, or refused (invalid; the running "
            "configuration stays).",
            labels=("outcome",),
        )
        for outcome, count in self.reloads.items():
            reloads.add_metric((outcome,), count)
        yield reloads
        keys = InfoMetricFamily(
            "session_sidecar_session_key",
            "The session key ids in force, newest (index 0, role signs) first; the others "
            "only verify.",
            labels=("index", "kid", "role"),
        )
        for index, kid in enumerate(self.key_ids):
            keys.add_metric((str(index), kid, "signs" if index == 0 else "verifies"), {})
        yield keys


_config_metrics = _ConfigMetrics()


def count_reload(outcome: str, key_ids: Sequence[str] = ()) -> None:
    """Count a reload (``ok`` or ``refused``); an ``ok`` one brings its key ids."""
    _config_metrics.reloads[outcome] += 1
    if outcome == "ok":
        _config_metrics.key_ids = tuple(key_ids)


def set_key_ids(key_ids: Sequence[str]) -> None:
    """The key ids of the configuration in force, newest first (at start)."""
    _config_metrics.key_ids = tuple(key_ids)


def worker_exited(pid: int) -> None:
    """Remove a dead worker's live gauges from the multiprocess directory (supervisor)."""
    if os.environ.get(MULTIPROC_ENV):
        mark_process_dead(pid)  # type: ignore[no-untyped-call]


_metrics: _Metrics | None = None


def _process_metrics() -> _Metrics:
    global _metrics
    if _metrics is None:
        _metrics = _Metrics()
        _metrics.registry.register(_config_metrics)
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
            record.session_reason,
            record.session_change,
            record.upstream_error,
            record.websocket,
        )
        m.pending[key] = m.pending.get(key, 0) + 1
        durations = m.pending_durations.get(record.upstream)
        if durations is None:
            durations = m.pending_durations[record.upstream] = _Buckets(LATENCY_BUCKETS)
        durations.observe(record.duration)
        if record.session_chunks_in:
            m.pending_session_bytes["in"].observe(record.session_bytes_in)
            m.pending_session_chunks["in"].observe(record.session_chunks_in)
        if record.session_chunks_out:
            m.pending_session_bytes["out"].observe(record.session_bytes_out)
            m.pending_session_chunks["out"].observe(record.session_chunks_out)
        if not m.flush_scheduled:
            m.schedule_flush()

    def watch(self, load: Load) -> None:
        """Sample this worker's gauges from now on, ``load`` giving its requests in flight
        and client connections: at every scrape of this process, and with ``workers > 1``
        every FLUSH_INTERVAL too, so the supervisor's page is never more than that behind."""
        m = self._metrics
        m.worker.load = load
        if m.worker.multiprocess:
            loop = asyncio.get_running_loop()

            def tick() -> None:
                m.flush()
                loop.call_later(FLUSH_INTERVAL, tick)

            tick()


def exposition(accept: str | None) -> tuple[bytes, str]:
    """The metrics page for a scrape with this ``Accept`` header: ``(body, content type)``.

    In multiprocess mode the page adds up the files every worker wrote, read afresh each time.
    """
    flush()
    if os.environ.get(MULTIPROC_ENV):
        scraped = CollectorRegistry()
        MultiProcessCollector(scraped)  # type: ignore[no-untyped-call]
        scraped.register(_config_metrics)
    else:
        scraped = process_registry()
    encoder, content_type = choose_encoder(accept or "")
    return encoder(scraped), content_type
