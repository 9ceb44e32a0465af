"""A hostile upstream tries to break the framing of the client's keep-alive connection.

Issue 7, items 3 and 11: framing is per hop, decided on the headers the proxy actually sends
(RFC 9112 section 6), so ``Connection`` tokens naming framing headers cannot leave a keep-alive
response without ``Content-Length`` or ``chunked``; and a response head is bounded in total.
Each response is followed on the same client connection by a second request, whose answer
must be its own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.log_watch import WATCH
from tests.integration.proxy_client import RawConnection
from tests.integration.scripted_backend import ScriptedBackend, canned_response
from tests.integration.sidecar import RunningProxy, base_config

pytestmark = pytest.mark.integration

BODY = b"0123456789"
UNFRAMING = {
    "connection_names_content_length": [
        b"Content-Length: 10",
        b"Connection: content-length",
    ],
    "connection_names_it_twice": [
        b"Connection: keep-alive",
        b"Content-Length: 10",
        b"Connection: Content-Length, transfer-encoding",
    ],
    "chunked_and_connection_names_te": [
        b"Transfer-Encoding: chunked",
        b"Connection: transfer-encoding",
    ],
    "close_delimited": [b"X-Nothing: here"],
}


def response(lines: list[bytes]) -> bytes:
    chunked = any(b"chunked" in line for line in lines)
    body = b"a\r\n" + BODY + b"\r\n0\r\n\r\n" if chunked else BODY
    return b"HTTP/1.1 200 OK\r\n" + b"\r\n".join(lines) + b"\r\n\r\n" + body


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedBackend]:
    scripts = {f"/{name}": response(lines) for name, lines in UNFRAMING.items()}
    scripts["/next"] = canned_response([("Content-Type", "text/plain")], b"second answer")
    big = [(f"X-Big-{i}", "v" * 100_000) for i in range(100)]
    scripts["/huge-head"] = canned_response(big, b"never relayed")
    scripts["/many-small"] = canned_response([(f"X-H{i}", "v" * 1000) for i in range(120)])
    with ScriptedBackend(scripts) as backend:
        yield backend


@pytest.fixture(scope="module")
def proxy(upstream: ScriptedBackend) -> Iterator[RunningProxy]:
    with WATCH.start_proxy(base_config(upstream.url)) as running:
        yield running


@pytest.mark.parametrize("name", UNFRAMING)
def test_every_keep_alive_response_is_framed_whatever_the_upstream_says(
    proxy: RunningProxy, name: str
) -> None:
    with RawConnection(proxy.port) as client:
        client.send(f"GET /{name} HTTP/1.1\r\nHost: app\r\n\r\n")
        first = client.read_response()
        assert first.status == 200
        assert first.body == BODY
        framed = first.header("Content-Length") is not None or (
            (first.header("Transfer-Encoding") or "").lower() == "chunked"
        )
        assert framed or first.header("Connection") == "close"
        if first.header("Connection") != "close":
            client.send("GET /next HTTP/1.1\r\nHost: app\r\n\r\n")
            second = client.read_response()
            assert second.body == b"second answer"


def test_a_head_over_the_total_limit_is_a_502_naming_size_and_limit(proxy: RunningProxy) -> None:
    # 100 fields of 100 KB each pass the per-field limit (128 KiB) but make a 10 MB head.
    with RawConnection(proxy.port) as client:
        client.send("GET /huge-head HTTP/1.1\r\nHost: app\r\n\r\n")
        reply = client.read_response()
        assert reply.status == 502
        body = reply.json()
        assert body["error"] == "upstream_header_too_large"
        assert body["limit"] == 131_072
        assert body["bytes"] > body["limit"]
        assert b"never relayed" not in reply.body
    log = proxy.output()
    assert "upstream_header_too_large" in log
    assert f"limit {body['limit']}" in log
    # Still serving.
    with RawConnection(proxy.port) as client:
        client.send("GET /next HTTP/1.1\r\nHost: app\r\n\r\n")
        assert client.read_response().body == b"second answer"


def test_a_head_under_the_total_limit_is_relayed(proxy: RunningProxy) -> None:
    with RawConnection(proxy.port) as client:
        client.send("GET /many-small HTTP/1.1\r\nHost: app\r\n\r\n")
        reply = client.read_response()
        assert reply.status == 200
        assert len(reply.header_values("X-H119")) == 1
