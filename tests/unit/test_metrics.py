"""Request metrics: what each finished request counts, and the /metrics page."""

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from proxy import metrics as metrics_module
from proxy.metrics import (
    INVALID_REASONS,
    LATENCY_BUCKETS,
    MULTIPROC_ENV,
    RequestMetrics,
    exposition,
    flush,
    invalid_reason,
    process_registry,
)
from proxy.request_record import RequestRecord
from proxy.session_codec import EncodedSession, SessionCodec, SessionState

REPO_ROOT = Path(__file__).resolve().parents[2]


def record(**fields: object) -> RequestRecord:
    values: dict[str, object] = {
        "request_id": "req-1",
        "client": "203.0.113.7",
        "method": "GET",
        "path": "/",
        "status": 200,
        "upstream": "metrics-app",
        "duration": 0.02,
    }
    values.update(fields)
    return RequestRecord(**values)  # type: ignore[arg-type]


def sample(name: str, **labels: str) -> float:
    """The current value of one series, 0 if it does not exist yet (the registry is shared)."""
    flush()
    value = process_registry().get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_requests_are_counted_by_upstream_and_status() -> None:
    metrics = RequestMetrics()
    ok = sample("session_sidecar_requests_total", upstream="metrics-app", status="200")
    missing = sample("session_sidecar_requests_total", upstream="metrics-app", status="404")
    metrics(record())
    metrics(record())
    metrics(record(status=404))
    assert sample("session_sidecar_requests_total", upstream="metrics-app", status="200") == ok + 2
    assert (
        sample("session_sidecar_requests_total", upstream="metrics-app", status="404")
        == missing + 1
    )


def test_request_without_upstream_is_labelled_none() -> None:
    before = sample("session_sidecar_requests_total", upstream="none", status="404")
    RequestMetrics()(record(upstream="", status=404))
    assert sample("session_sidecar_requests_total", upstream="none", status="404") == before + 1


def test_latency_is_observed_per_upstream() -> None:
    name = "session_sidecar_request_duration_seconds"
    count = sample(f"{name}_count", upstream="latency-app")
    total = sample(f"{name}_sum", upstream="latency-app")
    fast = sample(f"{name}_bucket", upstream="latency-app", le="0.005")
    metrics = RequestMetrics()
    metrics(record(upstream="latency-app", duration=0.004))
    metrics(record(upstream="latency-app", duration=0.3))
    assert sample(f"{name}_count", upstream="latency-app") == count + 2
    assert sample(f"{name}_sum", upstream="latency-app") == pytest.approx(total + 0.304)
    assert sample(f"{name}_bucket", upstream="latency-app", le="0.005") == fast + 1


@pytest.mark.parametrize("state", ["absent", "valid", "expired", "invalid"])
def test_session_outcome_is_counted_by_state(state: str) -> None:
    before = sample("session_sidecar_sessions_total", state=state)
    RequestMetrics()(record(session_state=state))
    assert sample("session_sidecar_sessions_total", state=state) == before + 1


def test_session_outcome_is_not_counted_when_no_upstream_read_it() -> None:
    before = sample("session_sidecar_sessions_total", state="absent")
    RequestMetrics()(record(upstream="", status=404))
    assert sample("session_sidecar_sessions_total", state="absent") == before


@pytest.mark.parametrize("direction", ["in", "out"])
def test_session_size_and_chunks_are_observed_by_direction(direction: str) -> None:
    count = sample("session_sidecar_session_bytes_count", direction=direction)
    size = sample("session_sidecar_session_bytes_sum", direction=direction)
    chunks = sample("session_sidecar_session_chunks_sum", direction=direction)
    metrics = RequestMetrics()
    metrics(
        record(
            session_state="valid",
            **{f"session_bytes_{direction}": 9000, f"session_chunks_{direction}": 3},
        )
    )
    metrics(record(session_state="absent"))
    assert sample("session_sidecar_session_bytes_count", direction=direction) == count + 1
    assert sample("session_sidecar_session_bytes_sum", direction=direction) == size + 9000
    assert sample("session_sidecar_session_chunks_sum", direction=direction) == chunks + 3


def test_a_session_read_and_rewritten_is_observed_in_both_directions() -> None:
    before = [sample("session_sidecar_session_bytes_count", direction=d) for d in ("in", "out")]
    RequestMetrics()(
        record(
            session_bytes_in=100,
            session_chunks_in=1,
            session_bytes_out=5000,
            session_chunks_out=2,
        )
    )
    after = [sample("session_sidecar_session_bytes_count", direction=d) for d in ("in", "out")]
    assert after == [before[0] + 1, before[1] + 1]


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        ("bad signature", "bad_signature"),
        ("unknown key id (secret removed?)", "unknown_key"),
        ("3 chunks expected, some missing", "missing_chunks"),
        ("not a session token", "malformed"),
        ("payload too large or corrupt", "too_large"),
        ("timestamp in the future", "future_timestamp"),
        ("a reason added later", "other"),
    ],
)
def test_invalid_session_is_counted_by_reason(reason: str, label: str) -> None:
    before = sample("session_sidecar_invalid_sessions_total", reason=label)
    RequestMetrics()(record(session_state="invalid", session_reason=reason))
    assert sample("session_sidecar_invalid_sessions_total", reason=label) == before + 1


def test_every_invalid_reason_is_shown_before_it_happens() -> None:
    flush()
    for label in INVALID_REASONS:
        value = process_registry().get_sample_value(
            "session_sidecar_invalid_sessions_total", {"reason": label}
        )
        assert value is not None, label


@pytest.mark.parametrize(
    "change", ["set", "cleared", "resigned", "refreshed", "overflow", "invalid_header"]
)
def test_session_change_is_counted(change: str) -> None:
    before = sample("session_sidecar_session_changes_total", change=change)
    RequestMetrics()(record(session_change=change))
    assert sample("session_sidecar_session_changes_total", change=change) == before + 1


def test_unchanged_session_counts_no_change() -> None:
    RequestMetrics()(record(session_change="none"))
    flush()
    series = process_registry().get_sample_value(
        "session_sidecar_session_changes_total", {"change": "none"}
    )
    assert series is None


@pytest.mark.parametrize(
    "kind", ["dns", "refused", "tls", "timeout", "reset", "header_too_large", "bad_response"]
)
def test_upstream_error_is_counted_by_upstream_and_kind(kind: str) -> None:
    before = sample("session_sidecar_upstream_errors_total", upstream="err-app", kind=kind)
    RequestMetrics()(record(upstream="err-app", status=502, upstream_error=kind))
    after = sample("session_sidecar_upstream_errors_total", upstream="err-app", kind=kind)
    assert after == before + 1


def test_websocket_session_is_counted() -> None:
    before = sample("session_sidecar_websocket_sessions_total", upstream="ws-app")
    RequestMetrics()(record(upstream="ws-app", status=101, websocket=True))
    assert sample("session_sidecar_websocket_sessions_total", upstream="ws-app") == before + 1


def test_two_observers_count_into_the_same_series() -> None:
    before = sample("session_sidecar_requests_total", upstream="twice-app", status="200")
    RequestMetrics()(record(upstream="twice-app"))
    RequestMetrics()(record(upstream="twice-app"))
    assert (
        sample("session_sidecar_requests_total", upstream="twice-app", status="200") == before + 2
    )


def test_flushed_latency_histogram_equals_observing_one_by_one() -> None:
    durations = [0.0005, 0.001, 0.003, 0.003, 0.2, 1.0, 59.0, 61.0, 3600.0]
    reference = Histogram("reference", "", buckets=LATENCY_BUCKETS, registry=CollectorRegistry())
    metrics = RequestMetrics()
    for duration in durations:
        reference.observe(duration)
        metrics(record(upstream="bucket-app", duration=duration))
    name = "session_sidecar_request_duration_seconds"
    for s in next(iter(reference.collect())).samples:
        if not s.name.endswith("_created"):
            got = sample(name + s.name.removeprefix("reference"), upstream="bucket-app", **s.labels)
            assert got == pytest.approx(s.value), s


def test_counts_reach_the_series_within_the_flush_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics_module, "FLUSH_INTERVAL", 0.05)
    flush()  # nothing pending, no flush scheduled
    registry = process_registry()
    labels = {"upstream": "later-app", "status": "200"}

    async def count_then_wait() -> tuple[float | None, float | None]:
        RequestMetrics()(record(upstream="later-app"))
        pending = registry.get_sample_value("session_sidecar_requests_total", labels)
        await asyncio.sleep(0.2)
        return pending, registry.get_sample_value("session_sidecar_requests_total", labels)

    pending, flushed = asyncio.run(count_then_wait())
    assert pending is None
    assert flushed == 1


def test_a_scrape_includes_counts_not_yet_flushed() -> None:
    async def count_then_scrape() -> bytes:
        RequestMetrics()(record(upstream="scraped-app"))
        return exposition(None)[0]

    body = asyncio.run(count_then_scrape())
    assert b'session_sidecar_requests_total{status="200",upstream="scraped-app"} 1.0' in body


def test_metrics_page_is_prometheus_text() -> None:
    RequestMetrics()(record(upstream="page-app"))
    body, content_type = exposition(None)
    assert content_type.startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(body.decode())}
    assert {"session_sidecar_requests", "session_sidecar_request_duration_seconds"} <= names
    assert 'session_sidecar_requests_total{status="200",upstream="page-app"}' in body.decode()


def test_metrics_page_speaks_openmetrics_when_asked() -> None:
    body, content_type = exposition("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


#: A worker that counts inside its event loop and exits before the flush timer fires: the
#: counts reach its file at exit.
_WORKER_SCRIPT = """
import asyncio
from proxy.metrics import RequestMetrics
from proxy.request_record import RequestRecord

async def serve():
    metrics = RequestMetrics()
    for _ in range({count}):
        metrics(RequestRecord("r", "c", "GET", "/", status=200, upstream="multi-app"))

asyncio.run(serve())
"""


def test_metrics_page_adds_up_every_worker_in_multiprocess_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**os.environ, MULTIPROC_ENV: str(tmp_path), "PYTHONPATH": str(REPO_ROOT)}
    for count in (3, 4):
        subprocess.run(
            [sys.executable, "-c", _WORKER_SCRIPT.format(count=count)], env=env, check=True
        )
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    body, _ = exposition(None)
    assert 'session_sidecar_requests_total{status="200",upstream="multi-app"} 7.0' in body.decode()


def test_the_codecs_own_invalid_reasons_each_have_a_label_of_their_own() -> None:
    """The labels map the codec's phrases: a phrase changed there must not fall to "other"."""
    codec = SessionCodec([b"metrics-reason-secret-0123456789abcdef"], chunk_size=200)
    stranger = SessionCodec([b"another-secret-entirely-0123456789abcdef"], chunk_size=200)

    def chunks(encoded: EncodedSession) -> dict[int, str]:
        return {i: c.value for i, c in enumerate(encoded.cookies)}

    token = chunks(codec.encode('{"user":"alice"}'))[0]
    middle = len(token) - 20
    tampered = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    long_session = chunks(codec.encode('{"k":"' + os.urandom(400).hex() + '"}'))
    assert len(long_session) > 1
    future = chunks(codec.encode("{}", issued_at=int(time.time()) + 86_400))
    cases = {
        "bad_signature": {0: tampered},
        "unknown_key": chunks(stranger.encode("{}")),
        "missing_chunks": {0: long_session[0]},
        "malformed": {0: "not-a-token"},
        "future_timestamp": future,
    }
    for label, carried in cases.items():
        result = codec.decode(carried)
        assert result.state is SessionState.INVALID, label
        assert invalid_reason(result.reason) == label, result.reason


def test_a_worker_counts_its_open_fds_only_every_ten_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Listing /proc/self/fd runs on the event loop and costs ~1 ms per 1,000 fds: a client
    # holding idle connections must not make every one-second flush pay for it.
    listed: list[float] = []

    def open_fds() -> float:
        listed.append(7.0)
        return 7.0

    monkeypatch.setattr(metrics_module, "_open_fds", open_fds)
    registry = CollectorRegistry()
    gauges = metrics_module._WorkerGauges(registry)
    gauges.load = lambda: (0, 0)
    for _ in range(5):
        gauges.sample()
    pid = {"pid": str(os.getpid())}
    assert listed == [7.0]
    assert registry.get_sample_value("session_sidecar_worker_open_fds", pid) == 7.0
    assert (registry.get_sample_value("session_sidecar_worker_resident_memory_bytes", pid) or 0) > 0
    assert (registry.get_sample_value("session_sidecar_worker_cpu_seconds", pid) or 0) > 0
