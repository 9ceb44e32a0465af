"""Flow bounds (issue 14, findings 1 and 4): a client that never reads its answers, and a
request body that stalls.

Each attack runs for a few seconds against the real proxy process, with one worker and with
two, while :class:`~tests.adversarial.abuse.WorkerWatch` samples the workers' RSS and a
:class:`~tests.adversarial.abuse.SecondClient` keeps asking. The workers' RSS must stay under
:data:`RSS_BOUND`, the second client must be served throughout, and the same attack again must
not grow the RSS further. On the main branch before these bounds, the pipelining attack took a
worker past 1 GB in four seconds.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Final

import pytest

from proxy.proxy_connection import LINGER_SECONDS
from proxy.websocket_tunnel import accept_for
from tests.adversarial.abuse import (
    MB,
    SecondClient,
    WorkerWatch,
    open_fds,
    rss_bytes,
    worker_pids,
)
from tests.adversarial.recording_upstream import RecordingUpstream
from tests.integration.admin_scrape import access_line
from tests.integration.log_watch import WATCH
from tests.integration.sidecar import RunningProxy, base_config

pytestmark = pytest.mark.integration

#: How much a worker's RSS may grow during an attack (after the bounds: under 1 MB).
RSS_BOUND: Final = 32 * MB
#: How much more the second of two identical attacks may take than the first.
RSS_REPEAT_SLACK: Final = 16 * MB
ATTACK_SECONDS: Final = 3.0
BODY_TIMEOUT: Final = 1.0
#: What the flow upstream answers: a body that arrives whole in one read, and one streamed.
WHOLE_BODY: Final = 32 * 1024
STREAMED_BODY: Final = 1024 * 1024
#: How long the flow upstream waits before it reads a ``/app/slow`` request's body.
SLOW_UPSTREAM_SECONDS: Final = 3.0
DRIP_SECONDS: Final = 10.0


class FlowUpstream:
    """A raw upstream that answers each request head the moment it has it, by path:
    ``/app/big...`` with :data:`STREAMED_BODY` bytes, ``/app/hang...`` never (it reads on),
    ``/app/slow...`` only after waiting :data:`SLOW_UPSTREAM_SECONDS` and then reading the
    whole ``Content-Length`` body (answered with its size), ``/app/ws`` with a WebSocket
    ``101`` and then keeping every byte in :attr:`tunnelled`, ``/app/drip`` with a chunked
    body of one byte every 0.1 s for :data:`DRIP_SECONDS` (noting in :attr:`drips_cut` when
    the proxy went away first) without reading the request body, anything else with
    :data:`WHOLE_BODY` bytes. Fast enough to fill a proxy that does not stop reading a
    client; its small receive buffer makes a slow read back-pressure the proxy soon."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(512)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.tunnelled: list[bytes] = []
        self.drips_cut: list[float] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @staticmethod
    def answer(body: bytes) -> bytes:
        head = f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        return head.encode() + b"\r\n" + body

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        whole, streamed = self.answer(b"w" * WHOLE_BODY), self.answer(b"s" * STREAMED_BODY)
        buffered = b""
        with sock:
            try:
                while data := sock.recv(65536):
                    buffered += data
                    while b"\r\n\r\n" in buffered:
                        head, _, buffered = buffered.partition(b"\r\n\r\n")
                        target = head.split(b" ", 2)[1]
                        if target.startswith(b"/app/hang"):
                            while sock.recv(65536):
                                pass
                            return
                        if target.startswith(b"/app/ws"):
                            self._tunnel(sock, head, buffered)
                            return
                        if target.startswith(b"/app/drip"):
                            self._drip(sock)
                            return
                        if target.startswith(b"/app/slow"):
                            buffered = self._slow(sock, head, buffered)
                        else:
                            sock.sendall(streamed if target.startswith(b"/app/big") else whole)
            except OSError:
                return

    def _slow(self, sock: socket.socket, head: bytes, buffered: bytes) -> bytes:
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        time.sleep(SLOW_UPSTREAM_SECONDS)
        while len(buffered) < length:
            data = sock.recv(1 << 20)
            if not data:
                raise ConnectionError("the proxy closed mid-body")
            buffered += data
        sock.sendall(self.answer(b"%d" % length))
        return buffered[length:]

    def _tunnel(self, sock: socket.socket, head: bytes, buffered: bytes) -> None:
        key = re.search(rb"(?i)\r\nsec-websocket-key: *([^\r]+)", head)
        assert key is not None
        head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        sock.sendall(
            head + b"Sec-WebSocket-Accept: %s\r\n\r\n" % accept_for(key[1].decode()).encode()
        )
        self.tunnelled.append(buffered)
        while data := sock.recv(65536):
            self.tunnelled.append(data)

    def _drip(self, sock: socket.socket) -> None:
        started = time.monotonic()
        sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            while time.monotonic() - started < DRIP_SECONDS:
                sock.sendall(b"1\r\nd\r\n")
                time.sleep(0.1)
        except OSError:
            self.drips_cut.append(time.monotonic() - started)
            return
        sock.sendall(b"0\r\n\r\n")

    def stop(self) -> None:
        self._listener.close()


@pytest.fixture(scope="module")
def flow() -> Iterator[FlowUpstream]:
    running = FlowUpstream()
    yield running
    running.stop()


@pytest.fixture(scope="module", params=[1, 2], ids=["1-worker", "2-workers"])
def flow_proxy(
    request: pytest.FixtureRequest, flow: FlowUpstream, upstream: RecordingUpstream
) -> Iterator[tuple[RunningProxy, list[int]]]:
    workers: int = request.param
    upstreams = [
        {"url": flow.url, "name": "flow", "path_prefix": "/app", "timeout": 10},
        {"url": upstream.url, "name": "rec", "path_prefix": "/rec", "timeout": 10},
    ]
    limits = {"body_timeout": BODY_TIMEOUT}
    config = base_config(
        flow.url, upstreams=upstreams, workers=workers, limits=limits, log_format="json"
    )
    with WATCH.start_proxy(config) as running:
        pids = worker_pids(running, workers)
        settle(pids)
        yield running, pids


def settle(pids: list[int], timeout: float = 15.0) -> None:
    """Wait until the workers have finished starting: no RSS change for half a second."""
    deadline = time.monotonic() + timeout
    last = [rss_bytes(pid) for pid in pids]
    steady_since = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - steady_since < 0.5:
        time.sleep(0.1)
        now = [rss_bytes(pid) for pid in pids]
        if any(abs(a - b) > MB for a, b in zip(now, last, strict=True)):
            steady_since = time.monotonic()
        last = now


Attack = Callable[[], object]


def attack_twice(proxy: RunningProxy, pids: list[int], attack: Attack) -> None:
    """Run ``attack`` twice while watching the workers and a second client; assert the bounds."""
    peaks = []
    for _ in range(2):
        with WorkerWatch(pids) as watch, SecondClient(proxy.port, "/app/bystander") as bystander:
            attack()
        print(f"{len(pids)} worker(s): {watch.summary()}")
        assert watch.peak_rss_growth() < RSS_BOUND, watch.summary()
        bystander.assert_served(max_wait=3.0)
        peaks.append(max(watch.peak_rss.values()))
    assert peaks[1] <= peaks[0] + RSS_REPEAT_SLACK, (
        f"{peaks[0] / MB:.0f}, then {peaks[1] / MB:.0f} MB"
    )


# --- finding 1: a client that pipelines and never reads ----------------------------------------


def pipeline_unread(port: int, target: str, seconds: float) -> int:
    """Pipeline GETs of ``target`` for ``seconds`` without reading one byte of the answers;
    return how many bytes the proxy took from this client."""
    request = f"GET {target} HTTP/1.1\r\nHost: attacker\r\n\r\n".encode()
    burst = request * (65536 // len(request))
    sent = 0
    deadline = time.monotonic() + seconds
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(0.2)
        while time.monotonic() < deadline:
            try:
                sent += sock.send(burst)
            except TimeoutError:
                continue  # the proxy stopped reading this client: what the bound wants
    return sent


def test_unread_answers_relayed_whole_stop_the_reading(
    flow_proxy: tuple[RunningProxy, list[int]],
) -> None:
    proxy, pids = flow_proxy
    attack_twice(proxy, pids, lambda: pipeline_unread(proxy.port, "/app/whole", ATTACK_SECONDS))


def test_unread_streamed_answers_stop_the_reading(
    flow_proxy: tuple[RunningProxy, list[int]],
) -> None:
    proxy, pids = flow_proxy
    attack_twice(proxy, pids, lambda: pipeline_unread(proxy.port, "/app/big", ATTACK_SECONDS))


def test_unread_answers_of_the_proxy_itself_stop_the_reading(
    flow_proxy: tuple[RunningProxy, list[int]],
) -> None:
    proxy, pids = flow_proxy
    # No route: every answer is the proxy's own 404.
    attack_twice(proxy, pids, lambda: pipeline_unread(proxy.port, "/nowhere", ATTACK_SECONDS))


def test_a_long_pipeline_read_late_is_answered_whole_and_in_order(
    flow_proxy: tuple[RunningProxy, list[int]],
) -> None:
    # What the bounds hold back must still be answered: 3,000 pipelined requests (120 KB, past
    # the parser's 16 and the 64 KiB read-ahead), a third of them answered with 32 KB (past the
    # 64 KiB of unread answers) and a third the proxy's own 404, sent at once, read after a pause.
    proxy, _ = flow_proxy
    count = 3000
    targets = [("/rec/p?id={}", "/app/w{}", "/nowhere/{}")[i % 3].format(i) for i in range(count)]
    requests = [f"GET {target} HTTP/1.1\r\nHost: a\r\n" for target in targets]
    requests[-1] += "Connection: close\r\n"
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.sendall("".join(f"{request}\r\n" for request in requests).encode())
        time.sleep(1.0)  # the proxy's answers back up meanwhile
        data = read_until_closed(sock, limit=30)
    answers = []
    offset = 0
    while offset < len(data):
        end = data.index(b"\r\n\r\n", offset) + 4
        status, fields, _ = split_response(data[offset:end])
        offset = end + int(fields["content-length"])
        answers.append((status, data[end:offset]))
    assert len(answers) == count
    for i, (status, body) in enumerate(answers):
        if i % 3 == 0:
            assert (status, json.loads(body)["id"]) == ("HTTP/1.1 200 OK", str(i)), i
        elif i % 3 == 1:
            assert (status, body) == ("HTTP/1.1 200 OK", b"w" * WHOLE_BODY), i
        else:
            assert (status, json.loads(body)["error"]) == ("HTTP/1.1 404 Not Found", "no_route")


@pytest.mark.parametrize(
    ("target", "ahead", "unread"),
    [("/rec/p", 16, 0.0), ("/rec/p", 25, 0.0), ("/app/big", 16, 1.0)],
    ids=["16-ahead", "25-ahead", "answers-unread"],
)
def test_bytes_sent_before_the_101_behind_a_long_pipeline_reach_the_upstream(
    flow_proxy: tuple[RunningProxy, list[int]],
    flow: FlowUpstream,
    target: str,
    ahead: int,
    unread: float,
) -> None:
    # A WebSocket handshake behind more pipelined requests than the parser takes at once, and
    # bytes sent before its 101: catching up on the pipeline must not lose them, whether the
    # parser stopped just after the handshake (16 or 25 ahead) or the client left 16 MB of
    # answers unread for a while.
    proxy, _ = flow_proxy
    marker = f"early-frame-{time.monotonic_ns()}".encode()
    gets = "".join(f"GET {target}?id={i} HTTP/1.1\r\nHost: a\r\n\r\n" for i in range(ahead))
    handshake = (
        "GET /app/ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", proxy.port))
        sock.sendall(gets.encode() + handshake.encode() + marker)
        time.sleep(unread)
        chunks: list[bytes] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (
            marker in b"".join(flow.tunnelled) and b"HTTP/1.1 101 " in b"".join(chunks)
        ):
            chunks.append(read_available(sock))
            time.sleep(0.01)
    received = b"".join(chunks)
    assert marker in b"".join(flow.tunnelled), "the bytes sent before the 101 were lost"
    assert received.count(b"HTTP/1.1 200 OK") == ahead
    assert b"HTTP/1.1 101 " in received


def read_available(sock: socket.socket) -> bytes:
    """What the socket holds now."""
    chunks = []
    sock.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_large_head_behind_a_slow_answer_is_read_once_that_answer_ends(
    flow_proxy: tuple[RunningProxy, list[int]],
) -> None:
    # 70 KB of the next request's head (a large cookie) arrives while the first request waits
    # for its answer: past the 64 KiB read-ahead, the proxy stops reading mid-head, and must
    # read on once it has caught up, not wait for the rest of a head it does not read.
    proxy, _ = flow_proxy
    first = "POST /app/slow HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
    second = f"GET /rec/after?id=second HTTP/1.1\r\nHost: a\r\nCookie: c={'x' * 70_000}\r\n"
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=20) as sock:
        sock.sendall(first.encode())
        time.sleep(0.5)  # the first request is with the upstream, which waits 3 s
        sock.sendall(second.encode())
        time.sleep(0.5)
        sock.sendall(b"Connection: close\r\n\r\n")
        data = read_until_closed(sock, limit=20)
    status, fields, rest = split_response(data)
    assert (status, rest[: int(fields["content-length"])]) == ("HTTP/1.1 200 OK", b"0")
    status, _, body = split_response(rest[int(fields["content-length"]) :])
    assert (status, json.loads(body)["id"]) == ("HTTP/1.1 200 OK", "second")


def burst_and_hold(port: int, connections: int, seconds: float) -> None:
    """From each of ``connections`` clients, one 256 KB burst of tiny pipelined requests to an
    upstream that never answers; hold them for ``seconds``."""
    request = b"GET /app/hang HTTP/1.1\r\nHost: attacker\r\n\r\n"
    burst = request * (256 * 1024 // len(request))
    clients = []
    try:
        for _ in range(connections):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.send(burst)  # what the kernel takes; the proxy reads what it wants
            clients.append(sock)
        time.sleep(seconds)
    finally:
        for sock in clients:
            sock.close()


def test_a_burst_of_tiny_pipelined_requests_is_not_parsed_ahead(
    flow_proxy: tuple[RunningProxy, list[int]],
) -> None:
    # The parser stops at MAX_PIPELINED requests and keeps the rest as bytes; before, one
    # read of 256 KB became some 6,000 parsed requests, about 11 times its size.
    proxy, pids = flow_proxy
    attack_twice(proxy, pids, lambda: burst_and_hold(proxy.port, 30, ATTACK_SECONDS))


# --- finding 4: a request body that stalls ------------------------------------------------------


def read_until_closed(sock: socket.socket, limit: float = 10.0) -> bytes:
    chunks = []
    sock.settimeout(limit)
    with contextlib.suppress(ConnectionResetError, TimeoutError):
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
    return b"".join(chunks)


def split_response(data: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines)
    return status, {name.lower(): value for name, value in fields.items()}, body


def ask(port: int, target: str) -> dict[str, object]:
    """One GET on a fresh connection; the recording upstream's JSON answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode())
        status, _, body = split_response(read_until_closed(sock))
    assert status.startswith("HTTP/1.1 200 "), status
    answer: dict[str, object] = json.loads(body)
    return answer


def test_a_body_that_stalls_gets_408_and_both_connections_close(
    flow_proxy: tuple[RunningProxy, list[int]], upstream: RecordingUpstream
) -> None:
    proxy, _ = flow_proxy
    tag = f"stall-{time.monotonic_ns()}"
    head = f"POST /rec/upload?id={tag} HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n"
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.sendall(head.encode() + b"x" * 1000)  # then nothing more
        data = read_until_closed(sock)  # the proxy closes it
    status, fields, body = split_response(data)
    assert status == "HTTP/1.1 408 Request Timeout", data[:300]
    assert fields["connection"] == "close"
    assert json.loads(body) == {"error": "body_timeout"}
    line = access_line(proxy, fields["x-request-id"])
    assert (line["status"], line["bytes_in"], line["bytes_out"]) == (408, 1000, len(body))

    # The upstream saw the head and part of the body, never a whole request, and then its
    # connection closed: it was not pooled with half a body in it.
    [stalled] = [c for c in upstream.connections if tag.encode() in c.received]
    deadline = time.monotonic() + 5
    while not stalled.closed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stalled.closed, "the upstream connection of the stalled upload is still open"
    assert not [r for r in stalled.requests if tag in r.target]
    assert len(stalled.received) < 100000
    for _ in range(3):  # whichever worker answers, never on that connection
        assert ask(proxy.port, "/rec/next")["conn"] != stalled.number


def test_a_body_that_stalls_once_its_answer_has_begun_gets_both_connections_cut(
    flow_proxy: tuple[RunningProxy, list[int]], flow: FlowUpstream
) -> None:
    # Too late for a 408: the upstream streams its answer without waiting for the body. A
    # reset, and no last chunk, tell the client the answer is cut short.
    proxy, _ = flow_proxy
    cut_before = len(flow.drips_cut)
    head = "POST /app/drip HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n"
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.sendall(head.encode() + b"x" * 1000)  # then nothing more
        started = time.monotonic()
        data = read_until_closed(sock, limit=DRIP_SECONDS + 5)
        ended = time.monotonic() - started
    status, fields, body = split_response(data)
    assert status == "HTTP/1.1 200 OK"
    assert fields["transfer-encoding"] == "chunked"
    assert b"1\r\nd\r\n" in body
    assert not body.endswith(b"0\r\n\r\n"), "the answer looks complete"
    assert ended < DRIP_SECONDS / 2, f"the connection lasted {ended:.1f}s"
    deadline = time.monotonic() + 5
    while len(flow.drips_cut) == cut_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(flow.drips_cut) > cut_before, "the upstream connection was not closed"


def test_an_upload_held_back_by_a_slow_upstream_is_not_cut(
    flow_proxy: tuple[RunningProxy, list[int]],
) -> None:
    # The upstream reads nothing for 3 body_timeouts: the proxy stops reading the client
    # (back-pressure), and that time is not the client's stall.
    proxy, _ = flow_proxy
    size = 16 * MB  # more than the socket buffers between the client and the upstream
    head = f"POST /app/slow HTTP/1.1\r\nHost: a\r\nContent-Length: {size}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.settimeout(SLOW_UPSTREAM_SECONDS + 10)
        started = time.monotonic()
        sock.sendall(head + bytes(size))
        held = time.monotonic() - started
        status, _, body = split_response(read_until_closed_or_length(sock))
    assert held > BODY_TIMEOUT, f"the upload was never held back ({held:.1f}s): a void test"
    assert status == "HTTP/1.1 200 OK", status
    assert body == str(size).encode()


def read_until_closed_or_length(sock: socket.socket) -> bytes:
    """A keep-alive response: read until its Content-Length body is in."""
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _length(data: bytes) -> int:
    _, fields, _ = split_response(data)
    return int(fields.get("content-length", "0"))


def test_a_body_trickled_faster_than_body_timeout_is_not_cut(
    flow_proxy: tuple[RunningProxy, list[int]],
) -> None:
    proxy, _ = flow_proxy
    body = b"12345"
    head = f"POST /rec/trickle HTTP/1.1\r\nHost: a\r\nContent-Length: {len(body)}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(head.encode())
        for byte in body:  # one byte every half body_timeout: 2.5 body_timeouts in all
            time.sleep(BODY_TIMEOUT / 2)
            sock.sendall(bytes([byte]))
        status, _, answer = split_response(read_until_closed_or_length(sock))
    assert status == "HTTP/1.1 200 OK", status
    assert json.loads(answer)["bytes"] == len(body)


def stall_bodies(port: int, pids: list[int], connections: int, seconds: float) -> None:
    """``connections`` uploads that stall after 16 KB, held for ``seconds``: each must have
    had its 408, and the workers must hold none of their sockets any more."""
    head = b"POST /app/hang HTTP/1.1\r\nHost: attacker\r\nContent-Length: 1000000\r\n\r\n"
    before = sum(open_fds(pid) for pid in pids)
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(connections)]
    try:
        for sock in clients:
            sock.sendall(head + bytes(16384))
        time.sleep(seconds)
        held = sum(open_fds(pid) for pid in pids) - before
        statuses = []
        for sock in clients:
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                statuses.append(sock.recv(64)[:12])
    finally:
        for sock in clients:
            sock.close()
    assert statuses == [b"HTTP/1.1 408"] * connections, statuses[:5]
    assert held < 10, f"the workers still hold {held} more fds than before the stalled uploads"


def test_stalled_bodies_hold_nothing_past_body_timeout(
    flow_proxy: tuple[RunningProxy, list[int]],
) -> None:
    proxy, pids = flow_proxy
    # body_timeout, the 0.1 s sweep, then the 2 s lingering close of each client connection.
    seconds = BODY_TIMEOUT + 0.2 + LINGER_SECONDS + 0.5
    attack_twice(proxy, pids, lambda: stall_bodies(proxy.port, pids, 50, seconds))
