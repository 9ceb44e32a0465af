"""Issue 14, finding 2: one client cannot take a worker's memory or CPU with request heads.

The whole head is capped (``limits.max_request_head_bytes``, by default the session's cookies
plus 32 KiB): past it the proxy answers ``431`` at once, parses nothing more, and reads and
drops what still comes for a bounded time and size, so the client reads the ``431`` instead of
a reset (RFC 9112 section 9.6). Cookie splitting is linear, so the cap bounds its CPU too.

Each attack runs against the real proxy process (one worker, then two) for a few seconds while
a second client keeps making requests; the workers' RSS and CPU are read from /proc.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

import pytest

from tests.adversarial.abuse import MB, SecondClient, WorkerWatch, worker_pids
from tests.adversarial.held_heads import (
    LARGE_FIELD,
    HeldConnections,
    cookie_lines,
    head_of_fields,
    request_bytes,
    send_while_reading,
)
from tests.adversarial.recording_upstream import RecordingUpstream
from tests.integration.log_watch import WATCH
from tests.integration.proxy_client import RawConnection
from tests.integration.sidecar import RunningProxy, base_config

pytestmark = pytest.mark.integration

#: The default cap with the default cookie (12 chunks of 4000 bytes): 48,000 + 1,024 + 32 KiB.
DEFAULT_HEAD_CAP = 81_792
#: What one attack may add to a worker's resident memory.
RSS_BOUND = 100 * MB
#: What a second identical attack may add over the first one's peak (allocator noise).
REPEAT_RSS_BOUND = 16 * MB
#: As many fields of 130,000 bytes as the parser's field count allows: about 15 MB a head.
HUGE_HEAD_FIELDS = 120


@pytest.fixture(scope="module", params=[1, 2], ids=["1-worker", "2-workers"])
def workers(request: pytest.FixtureRequest) -> int:
    count: int = request.param
    return count


@pytest.fixture(scope="module")
def proxy(upstream: RecordingUpstream, workers: int) -> Iterator[RunningProxy]:
    with WATCH.start_proxy(base_config(upstream.url, workers=workers)) as running:
        yield running


@pytest.fixture(scope="module")
def migrating_proxy(upstream: RecordingUpstream, workers: int) -> Iterator[RunningProxy]:
    migrate = {"format": "flask", "secret_keys": ["flask-secret-key-0123456789abcdef"]}
    config = base_config(upstream.url, workers=workers, migrate=migrate)
    with WATCH.start_proxy(config) as running:
        yield running


def test_a_head_of_many_large_fields_is_answered_431_which_the_client_reads(
    proxy: RunningProxy,
) -> None:
    head = head_of_fields(HUGE_HEAD_FIELDS, LARGE_FIELD)
    reply, _ = send_while_reading(proxy.port, head)
    assert reply.startswith(b"HTTP/1.1 431 "), reply[:200]
    assert b"request_header_too_large" in reply


def test_a_head_just_over_the_cap_is_answered_431_and_one_just_under_is_served(
    proxy: RunningProxy,
) -> None:
    under = request_bytes("/under", [("X-Filler", "u" * (DEFAULT_HEAD_CAP - 200))])
    reply, _ = send_while_reading(proxy.port, under)
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:200]
    over = request_bytes("/over", [("X-Filler", "o" * (DEFAULT_HEAD_CAP + 100))])
    reply, _ = send_while_reading(proxy.port, over)
    assert reply.startswith(b"HTTP/1.1 431 "), reply[:200]


def test_a_request_body_larger_than_the_cap_is_not_counted_as_head(proxy: RunningProxy) -> None:
    body = b"b" * (3 * DEFAULT_HEAD_CAP)
    with RawConnection(proxy.port) as client:
        client.send(
            b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        assert client.read_response().status == 200
        client.send(b"GET /after HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert client.read_response().status == 200


@pytest.mark.parametrize("first", ["GET /first", "POST /first"])
def test_a_head_over_the_cap_pipelined_after_a_request_is_refused_after_its_answer(
    proxy: RunningProxy, first: str
) -> None:
    body = b"p" * 100 if first.startswith("POST") else b""
    framing = b"Content-Length: %d\r\n" % len(body) if body else b""
    over = head_of_fields(2, DEFAULT_HEAD_CAP // 2, target="/over")
    with RawConnection(proxy.port) as client:
        client.send(
            first.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + framing + b"\r\n" + body + over
        )
        assert client.read_response().json()["target"] == "/first"
        assert client.read_response().status == 431


def test_pipelined_requests_past_the_cap_in_all_are_each_served(proxy: RunningProxy) -> None:
    one = b"GET /p HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"x" * 1000 + b"\r\n\r\n"
    count = 2 * DEFAULT_HEAD_CAP // len(one)
    with RawConnection(proxy.port) as client:
        client.send(one * count)
        assert [client.read_response().status for _ in range(count)] == [200] * count


def _hold_heads(
    proxy: RunningProxy, workers: int, data: bytes, count: int, seconds: float
) -> tuple[WorkerWatch, list[bytes]]:
    """``count`` connections send ``data`` and hold for ``seconds`` while a second client runs."""
    with (
        WorkerWatch(worker_pids(proxy, workers)) as watch,
        SecondClient(proxy.port) as bystander,
        HeldConnections(proxy.port, count, data) as held,
    ):
        held.wait_sent(30)
        time.sleep(seconds)
        replies = held.replies()
    bystander.assert_served(max_wait=3.0)
    return watch, replies


def _repeat_growth(first: WorkerWatch, second: WorkerWatch) -> int:
    """How far the second attack's peak RSS went past the first's, for the worst worker."""
    return max(second.peak_rss[pid] - first.peak_rss[pid] for pid in second.pids)


def test_connections_sending_heads_past_the_cap_cannot_take_the_workers_memory(
    proxy: RunningProxy, workers: int
) -> None:
    """24 connections each send an unfinished head of 120 fields of 130,000 bytes (about 15 MB
    each, all within the per-field limits); today's main held about 34 MB a connection."""
    head = head_of_fields(HUGE_HEAD_FIELDS, LARGE_FIELD, finished=False)
    first, replies = _hold_heads(proxy, workers, head, count=24, seconds=2.0)
    assert first.peak_rss_growth() < RSS_BOUND, first.summary()
    assert all(r.startswith(b"HTTP/1.1 431 ") for r in replies), [r[:40] for r in replies]
    second, _ = _hold_heads(proxy, workers, head, count=24, seconds=2.0)
    assert _repeat_growth(first, second) < REPEAT_RSS_BOUND, (
        f"{first.summary()}; {second.summary()}"
    )


def test_connections_holding_heads_just_under_the_cap_are_held_with_bounded_memory(
    proxy: RunningProxy, workers: int
) -> None:
    head = head_of_fields(20, (DEFAULT_HEAD_CAP - 2048) // 20 - 17, finished=False)
    assert DEFAULT_HEAD_CAP - 4096 < len(head) < DEFAULT_HEAD_CAP
    first, replies = _hold_heads(proxy, workers, head, count=32, seconds=2.0)
    assert first.peak_rss_growth() < RSS_BOUND, first.summary()
    assert replies == [b""] * 32  # held, not refused
    second, _ = _hold_heads(proxy, workers, head, count=32, seconds=2.0)
    assert _repeat_growth(first, second) < REPEAT_RSS_BOUND, (
        f"{first.summary()}; {second.summary()}"
    )


def _send_for(
    proxy: RunningProxy, workers: int, data: bytes, seconds: float
) -> tuple[WorkerWatch, list[bytes]]:
    """Send ``data`` on one new connection after another for ``seconds`` (reading each answer)
    while a second client runs."""
    replies = []
    with WorkerWatch(worker_pids(proxy, workers)) as watch, SecondClient(proxy.port) as bystander:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            reply, _ = send_while_reading(proxy.port, data, timeout=30)
            replies.append(reply[:12])
    bystander.assert_served(max_wait=3.0)
    return watch, replies


#: The issue's case: 126 Cookie lines of tiny pairs, each line as long as a field may be.
HUGE_COOKIE_LINES = cookie_lines(126, LARGE_FIELD, extra="session.0=x; session=x")
#: The same shape within the cap: 126 lines of about 580 bytes (about 73 KB of pairs).
CAPPED_COOKIE_LINES = cookie_lines(126, 580, extra="session.0=x; session=x")


@pytest.mark.parametrize("migrating", [False, True], ids=["plain", "migrate"])
def test_cookie_lines_of_tiny_pairs_past_the_cap_cost_the_worker_little_cpu(
    proxy: RunningProxy, migrating_proxy: RunningProxy, workers: int, migrating: bool
) -> None:
    target = migrating_proxy if migrating else proxy
    data = request_bytes("/cookies", HUGE_COOKIE_LINES)
    watch, replies = _send_for(target, workers, data, seconds=3.0)
    assert all(r.startswith(b"HTTP/1.1 431") for r in replies), replies[:5]
    per_request = watch.cpu_seconds() / len(replies)
    assert per_request < 0.05, f"{per_request * 1000:.0f} ms of CPU a request; {watch.summary()}"
    assert watch.peak_rss_growth() < RSS_BOUND, watch.summary()


@pytest.mark.parametrize("migrating", [False, True], ids=["plain", "migrate"])
def test_cookie_lines_of_tiny_pairs_within_the_cap_are_split_in_linear_time(
    proxy: RunningProxy, migrating_proxy: RunningProxy, workers: int, migrating: bool
) -> None:
    target = migrating_proxy if migrating else proxy
    data = request_bytes("/cookies", CAPPED_COOKIE_LINES)
    assert DEFAULT_HEAD_CAP - 10_000 < len(data) < DEFAULT_HEAD_CAP
    first, replies = _send_for(target, workers, data, seconds=3.0)
    assert all(r.startswith(b"HTTP/1.1 200") for r in replies), replies[:5]
    per_request = first.cpu_seconds() / len(replies)
    assert per_request < 0.01, f"{per_request * 1000:.1f} ms of CPU a request; {first.summary()}"
    second, _ = _send_for(target, workers, data, seconds=3.0)
    assert _repeat_growth(first, second) < REPEAT_RSS_BOUND, (
        f"{first.summary()}; {second.summary()}"
    )


# --- a reload cannot raise the cookie limits past what the running parser accepts ----------


def _wait_for(proxy: RunningProxy, text: str, count: int = 1, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while (output := proxy.output()).count(text) < count:
        assert time.monotonic() < deadline, f"no {count} x {text!r} in:\n{output}"
        time.sleep(0.05)
    return output


def _served_target(proxy: RunningProxy) -> str:
    reply, _ = send_while_reading(proxy.port, request_bytes("/probe", []))
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:200]
    return str(json.loads(reply.partition(b"\r\n\r\n")[2])["target"])


def test_a_reload_raising_the_cookie_limits_past_the_running_parser_is_refused(
    upstream: RecordingUpstream, workers: int
) -> None:
    """24 chunks of 4000 bytes need a head limit of 101,120 bytes; the parsers running were
    built for 81,792. The file raising both is refused as a whole (limits change only with a
    restart), and the old configuration serves on; one within the running limits applies."""
    with WATCH.start_proxy(base_config(upstream.url, workers=workers)) as proxy:
        _wait_for(proxy, "listening on", workers)
        cookie = {"secure": False, "max_chunks": 24}
        limits = {"max_request_head_bytes": 200_000}
        proxy.rewrite_config(
            base_config(f"{upstream.url}/new", workers=workers, cookie=cookie, limits=limits)
        )
        proxy.signal(signal.SIGHUP)
        output = _wait_for(proxy, "reload refused")
        assert (
            "limits.max_request_head_bytes: 81792 cannot carry a full session of 24 chunks of "
            "4000 bytes with a request line; raise it to at least 101120 (these are the running "
            "limits: change them and restart)"
        ) in output
        assert "configuration reloaded" not in output
        assert _served_target(proxy) == "/probe"

        if workers == 2:  # a worker restarted now would serve the refused file: its slot waits
            os.kill(worker_pids(proxy, 2)[0], signal.SIGKILL)
            _wait_for(proxy, "not restarting it while")

        within = {"secure": False, "max_chunks": 14}
        proxy.rewrite_config(base_config(f"{upstream.url}/new", workers=workers, cookie=within))
        proxy.signal(signal.SIGHUP)
        _wait_for(proxy, "configuration reloaded")
        _wait_for(proxy, "listening on", 3 if workers == 2 else 1)  # the slot has its worker
        assert {_served_target(proxy) for _ in range(6)} == {"/new/probe"}
