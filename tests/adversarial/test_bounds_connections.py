"""Issue 14, finding 3: no client can take all of a worker's connections.

At start each process raises its soft RLIMIT_NOFILE to the hard one, and a worker serves at
most ``limits.max_connections`` client connections (by default (fd limit - 64) / 2). At the
cap, a new connection closes the oldest one with no request in flight (idle keep-alive ones
first, then unfinished heads); when every connection has a request in flight, the new one is
answered ``503`` and closed. ``idle_timeout`` still closes heads that never end.
"""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import threading
import time
from collections.abc import Iterator
from typing import Final

import pytest

from tests.adversarial.abuse import MB, SecondClient, WorkerWatch, worker_pids
from tests.adversarial.recording_upstream import RecordingUpstream
from tests.adversarial.strict_http import Message
from tests.integration.log_watch import WATCH
from tests.integration.proxy_client import RawConnection, raw_request
from tests.integration.sidecar import RunningProxy, base_config

pytestmark = pytest.mark.integration

#: An unfinished head: the client never sends the empty line that ends it (slow loris).
SLOW_HEAD: Final = b"GET /slow-loris HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Wait: "
#: The soft fd limit the proxy is started with in the tests of the raise (the hard one stays).
LOW_SOFT_LIMIT: Final = 256
CAP: Final = 50
RSS_BOUND: Final = 60 * MB
REPEAT_RSS_BOUND: Final = 16 * MB


def _slow(conn: object, request: Message, payload: dict[str, object]) -> bytes | None:
    """Requests to /busy take 3 s to answer: a connection waiting on one has it in flight."""
    if request.target.startswith("/busy"):
        time.sleep(3.0)
    return None


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    with RecordingUpstream(responder=_slow) as running:
        yield running


def _start_with_low_soft_fd_limit(upstream: RecordingUpstream, workers: int) -> RunningProxy:
    """The proxy started with a soft RLIMIT_NOFILE of LOW_SOFT_LIMIT (the hard one as is): this
    process lowers its own while it starts the proxy, which inherits it."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (LOW_SOFT_LIMIT, before[1]))
    try:
        return _start(upstream, workers)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


def _start(upstream: RecordingUpstream, workers: int = 1, **limits: object) -> RunningProxy:
    config = base_config(upstream.url, workers=workers, limits=limits) if limits else None
    return WATCH.start_proxy(config or base_config(upstream.url, workers=workers))


def _open_fd_limits(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/limits") as limits:
        for line in limits:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError(f"no open-files line in /proc/{pid}/limits")


def _slow_heads(port: int, count: int, pause: float = 0.005) -> list[socket.socket]:
    """``count`` connections, opened one after another, each with a head that never ends."""
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(SLOW_HEAD)
        socks.append(sock)
        time.sleep(pause)
    return socks


def _closed_by_proxy(sock: socket.socket) -> bool:
    """Whether the proxy has closed ``sock`` (nothing else is ever sent on these)."""
    sock.setblocking(False)
    try:
        return sock.recv(1 << 16) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True  # reset


def _which_closed(socks: list[socket.socket], settle: float = 0.3) -> list[bool]:
    time.sleep(settle)
    return [_closed_by_proxy(sock) for sock in socks]


def _close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


# --- the fd limit ----------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_the_soft_fd_limit_is_raised_to_the_hard_one(
    upstream: RecordingUpstream, workers: int
) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert hard > 4 * LOW_SOFT_LIMIT, "this test needs a hard fd limit above the soft one"
    with _start_with_low_soft_fd_limit(upstream, workers) as proxy:
        pids = [proxy.process.pid, *(worker_pids(proxy, 2) if workers == 2 else [])]
        assert [_open_fd_limits(pid) for pid in pids] == [(hard, hard)] * len(pids)
        deadline = time.monotonic() + 15
        while proxy.output().count(f"up to {(hard - 64) // 2} client connections") < workers:
            assert time.monotonic() < deadline, proxy.output()
            time.sleep(0.05)


@pytest.mark.parametrize("workers", [1, 2])
def test_slow_heads_past_the_old_soft_fd_limit_leave_new_clients_served(
    upstream: RecordingUpstream, workers: int
) -> None:
    """Today's main kept the soft limit it was started with: 256 slow heads took every fd,
    and each new client got a reset until they went away."""
    with _start_with_low_soft_fd_limit(upstream, workers) as proxy:
        pids = worker_pids(proxy, workers)
        for _ in range(2):
            with WorkerWatch(pids) as watch, SecondClient(proxy.port) as bystander:
                socks = _slow_heads(proxy.port, 2 * LOW_SOFT_LIMIT, pause=0.002)
                time.sleep(1.0)
                still_open = _which_closed(socks, 0).count(False)
                _close_all(socks)
            bystander.assert_served(max_wait=3.0)
            assert still_open == len(socks)  # far below the cap: none was closed
            assert watch.peak_rss_growth() < RSS_BOUND, watch.summary()


# --- the cap ---------------------------------------------------------------------------------


def test_at_the_cap_the_oldest_unfinished_head_is_closed_for_a_new_client(
    upstream: RecordingUpstream,
) -> None:
    with _start(upstream, max_connections=CAP) as proxy:
        socks = _slow_heads(proxy.port, CAP)
        time.sleep(0.3)
        assert raw_request(proxy.port, "GET", "/newcomer").status == 200
        closed = _which_closed(socks)
        _close_all(socks)
    assert closed == [True] + [False] * (CAP - 1)


def test_idle_keep_alive_connections_are_closed_before_unfinished_heads(
    upstream: RecordingUpstream,
) -> None:
    with _start(upstream, max_connections=CAP) as proxy:
        heads = _slow_heads(proxy.port, 10)  # older than every idle one
        idle = []
        for i in range(CAP - 10):
            connection = RawConnection(proxy.port)
            connection.send(f"GET /kept-{i} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert connection.read_response().status == 200
            idle.append(connection)
        newcomers = []
        for i in range(3):  # each stays open, so the next one needs room again
            connection = RawConnection(proxy.port)
            connection.send(f"GET /newcomer-{i} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert connection.read_response().status == 200
            newcomers.append(connection)
        closed_idle = _which_closed([connection.sock for connection in idle])
        closed_heads = _which_closed(heads, 0)
        _close_all(heads + [connection.sock for connection in idle + newcomers])
    assert closed_idle == [True] * 3 + [False] * (CAP - 13)
    assert closed_heads == [False] * 10


def test_with_every_connection_busy_a_new_client_gets_503_which_it_reads(
    upstream: RecordingUpstream,
) -> None:
    with _start(upstream, max_connections=10) as proxy:
        busy = [RawConnection(proxy.port) for _ in range(10)]
        for i, connection in enumerate(busy):
            connection.send(f"GET /busy?id={i} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        time.sleep(0.5)  # every request is at the upstream, which answers in 3 s
        with RawConnection(proxy.port) as refused:
            refused.send("GET /refused HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            reply = refused.read_response()
            assert (reply.status, reply.reason) == (503, "Service Unavailable")
            assert reply.json() == {"error": "too_many_connections"}
            assert reply.header("Retry-After") == "1"
            assert reply.header("Connection") == "close"
        assert [json.loads(c.read_response().body)["id"] for c in busy] == [
            str(i) for i in range(10)
        ]
        for connection in busy:
            connection.close()
        assert raw_request(proxy.port, "GET", "/after").status == 200


def test_idle_timeout_closes_unfinished_heads_at_the_cap(upstream: RecordingUpstream) -> None:
    with _start(upstream, max_connections=CAP, idle_timeout=1) as proxy:
        socks = _slow_heads(proxy.port, CAP)
        time.sleep(0.2)
        assert not any(_which_closed(socks, 0))
        closed = _which_closed(socks, 1.5)
        assert raw_request(proxy.port, "GET", "/after-timeout").status == 200
        _close_all(socks)
    assert closed == [True] * CAP


# --- a stream of slow heads, for several seconds ---------------------------------------------


class SlowLoris:
    """Opens a connection with a head that never ends every ``pause`` seconds and holds it
    until the proxy closes it."""

    def __init__(self, port: int, pause: float = 0.005) -> None:
        self.port = port
        self.pause = pause
        self.opened = 0
        self.closed_by_proxy = 0
        self._socks: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.pause):
            with contextlib.suppress(OSError):
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                sock.sendall(SLOW_HEAD)
                self._socks.append(sock)
                self.opened += 1
            if len(self._socks) > 200:  # let go of those the proxy closed
                kept = []
                for sock in self._socks:
                    if _closed_by_proxy(sock):
                        self.closed_by_proxy += 1
                        sock.close()
                    else:
                        kept.append(sock)
                self._socks = kept

    def __enter__(self) -> SlowLoris:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        _close_all(self._socks)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_stream_of_slow_heads_at_the_cap_leaves_a_second_client_served(
    upstream: RecordingUpstream, workers: int
) -> None:
    with _start(upstream, workers, max_connections=CAP) as proxy:
        pids = worker_pids(proxy, workers)
        watches = []
        for _ in range(2):
            with (
                WorkerWatch(pids) as watch,
                SecondClient(proxy.port) as bystander,
                SlowLoris(proxy.port) as attacker,
            ):
                time.sleep(3.0)
            bystander.assert_served(max_wait=3.0)
            assert attacker.opened > 4 * CAP * workers, attacker.opened
            assert watch.peak_rss_growth() < RSS_BOUND, watch.summary()
            watches.append(watch)
        first, second = watches
        growth = max(second.peak_rss[pid] - first.peak_rss[pid] for pid in pids)
        assert growth < REPEAT_RSS_BOUND, f"{first.summary()}; {second.summary()}"
