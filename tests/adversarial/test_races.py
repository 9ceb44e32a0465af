"""Races: an upstream that resets mid-download or mid-upload, a client that aborts mid-download.

Each is repeated at several points and timings. After each, a second client asks on a fresh
connection and must get its own answer; the recording upstream's strict parser must have read
only whole requests. A pooled upstream connection in an unknown state (half a body still
coming, a request half written) would show up as another client's bytes in that answer.
(Early answers and client aborts during an upload are in test_pool_desync.py.)
"""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.adversarial.recording_upstream import Connection, RecordingUpstream, assert_clean
from tests.adversarial.strict_http import Message, parse_head
from tests.integration.sidecar import RunningProxy

pytestmark = pytest.mark.integration

MARKER = "race-9c2e-marker"
DOWNLOAD = 4_000_000
PARTIAL_TOTAL = 10_000


def racing(conn: Connection, request: Message, payload: dict[str, object]) -> bytes | None:
    query = parse_qs(urlsplit(request.target).query)
    if "partial" in query:  # a head promising 10,000 bytes, some of them, then a reset
        conn.reset_now = True
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {PARTIAL_TOTAL}\r\n\r\n".encode()
        return head + b"x" * int(query["partial"][0])
    if "trailer" in query:  # a chunked answer whose trailer would be the next answer's header
        return (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b'2\r\n{}\r\n0\r\nSet-Cookie: leaked=1\r\nX-Set-Session: {"user":"x"}\r\n\r\n'
        )
    if "big" in query:
        return f"HTTP/1.1 200 OK\r\nContent-Length: {DOWNLOAD}\r\n\r\n".encode() + b"y" * DOWNLOAD
    return None


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    with RecordingUpstream(responder=racing, read_timeout=10) as running:
        yield running


def read_all(sock: socket.socket, limit: float = 10.0) -> bytes:
    data = b""
    deadline = time.monotonic() + limit
    sock.settimeout(limit)
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def second_client_gets_its_own(proxy: RunningProxy, tag: str) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(f"GET /c?id={tag} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n".encode())
        data = read_all(sock)
    head, offset = parse_head(data, response=True)
    assert head.status == 200, data[:300]
    assert json.loads(data[offset:])["id"] == tag


def abort(sock: socket.socket, hard: bool) -> None:
    if hard:  # a reset, not a FIN: the proxy learns of it only on its next write
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.mark.parametrize("sent", [0, 1, 4096, PARTIAL_TOTAL - 1])
@pytest.mark.parametrize("round_", range(3))
def test_an_upstream_reset_mid_download_ends_only_that_clients_response(
    proxy: RunningProxy, upstream: RecordingUpstream, sent: int, round_: int
) -> None:
    upstream.reset()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(f"GET /dl?partial={sent}&id=a{round_} HTTP/1.1\r\nHost: app\r\n\r\n".encode())
        data = read_all(sock)  # must end: the proxy closes a response it cannot finish
    if data:
        head, offset = parse_head(data, response=True)
        if head.status == 200:
            assert len(data) - offset < PARTIAL_TOTAL  # cut short, never padded or joined
        else:
            assert head.status == 502
    second_client_gets_its_own(proxy, f"b-{sent}-{round_}")
    upstream.wait_idle(2)
    assert_clean(upstream, MARKER)


@pytest.mark.parametrize("cut", [0, 1024, 512 * 1024])
@pytest.mark.parametrize("hard", [False, True], ids=["fin", "rst"])
@pytest.mark.parametrize("round_", range(2))
def test_a_client_abort_mid_download_never_pools_the_upstream_connection_unread(
    proxy: RunningProxy, upstream: RecordingUpstream, cut: int, hard: bool, round_: int
) -> None:
    upstream.reset()
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    sock.sendall(f"GET /dl?big=1&id=a{round_} HTTP/1.1\r\nHost: app\r\n\r\n".encode())
    got = b""
    while len(got) < cut + 40:
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    abort(sock, hard)
    # At once, while the rest of the 4 MB is still on its way from the upstream.
    for i in range(3):
        second_client_gets_its_own(proxy, f"b-{cut}-{hard}-{round_}-{i}")
    upstream.wait_idle(3)
    assert_clean(upstream, MARKER)


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.3])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_upstream_reset_mid_upload_is_a_502_for_that_client_only(
    proxy: RunningProxy, upstream: RecordingUpstream, delay: float, chunked: bool
) -> None:
    upstream.reset()
    framing = "Transfer-Encoding: chunked" if chunked else "Content-Length: 200000"
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(
            f"POST /up?respond=reset-early&id=a HTTP/1.1\r\nHost: app\r\n{framing}\r\n\r\n".encode()
        )
        time.sleep(delay)
        try:
            body = b"z" * 100_000
            sock.sendall(f"{len(body):x}\r\n".encode() + body + b"\r\n" if chunked else body)
        except OSError:
            pass  # the proxy may already have answered and closed
        data = read_all(sock)
    if data:
        head, _ = parse_head(data, response=True)
        assert head.status == 502, data[:300]
    second_client_gets_its_own(proxy, f"b-{delay}-{chunked}")
    upstream.wait_idle(2)
    assert_clean(upstream, MARKER)


def test_a_response_trailer_never_becomes_a_header_of_the_next_response(
    proxy: RunningProxy, upstream: RecordingUpstream
) -> None:
    """aiohttp's C parser carries a chunked message's trailer fields into the next message's
    headers; on a pooled upstream connection that next message is another client's answer."""
    upstream.reset()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"GET /t?trailer=1&id=a HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
        first = read_all(sock)
    assert first.startswith(b"HTTP/1.1 200"), first[:200]
    assert b"leaked" not in first and b"X-Set-Session" not in first
    for i in range(3):  # other clients, on what would be the pooled connection
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            sock.sendall(
                f"GET /c?id=b{i} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n".encode()
            )
            data = read_all(sock)
        head, offset = parse_head(data, response=True)
        assert json.loads(data[offset:])["id"] == f"b{i}"
        assert head.header(b"Set-Cookie") is None, data[:400]
    upstream.wait_idle(2)
    assert_clean(upstream, MARKER)
