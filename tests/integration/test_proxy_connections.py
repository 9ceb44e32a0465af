"""Client connections: keep-alive, pipelining, HTTP/1.0, idle and slow-loris clients."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.backends import RunningBackend, start_backend
from tests.integration.log_watch import WATCH
from tests.integration.proxy_client import RawConnection
from tests.integration.sidecar import RunningProxy, base_config

pytestmark = pytest.mark.integration

IDLE_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def backend() -> Iterator[RunningBackend]:
    with start_backend("python") as running:
        yield running


@pytest.fixture(scope="module")
def proxy(backend: RunningBackend) -> Iterator[RunningProxy]:
    config = base_config(backend.url, limits={"idle_timeout": IDLE_TIMEOUT})
    with WATCH.start_proxy(config) as running:
        yield running


def test_keep_alive_connection_serves_several_requests(proxy: RunningProxy) -> None:
    with RawConnection(proxy.port) as connection:
        for n in range(3):
            connection.send(f"GET /whoami?n={n} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            reply = connection.read_response()
            assert reply.status == 200
            assert reply.json()["path"] == f"/whoami?n={n}"


def test_pipelined_requests_are_answered_in_order(proxy: RunningProxy) -> None:
    with RawConnection(proxy.port) as connection:
        connection.send(
            "".join(f"GET /whoami?n={n} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" for n in range(5))
        )
        paths = [connection.read_response().json()["path"] for _ in range(5)]
    assert paths == [f"/whoami?n={n}" for n in range(5)]


def test_http_1_0_request_is_answered_and_the_connection_closed(proxy: RunningProxy) -> None:
    with RawConnection(proxy.port) as connection:
        connection.send("GET /whoami HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        reply = connection.read_response()
        assert reply.status == 200
        assert (reply.header("Connection") or "").lower() == "close"
        assert connection.wait_closed(3) == "eof"


def test_connection_close_request_closes_after_the_response(proxy: RunningProxy) -> None:
    with RawConnection(proxy.port) as connection:
        connection.send("GET /whoami HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert connection.read_response().status == 200
        assert connection.wait_closed(3) == "eof"


def test_idle_keep_alive_connection_is_closed_after_idle_timeout(proxy: RunningProxy) -> None:
    with RawConnection(proxy.port) as connection:
        connection.send("GET /whoami HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert connection.read_response().status == 200
        assert connection.wait_closed(IDLE_TIMEOUT + 2) == "eof"


def test_request_head_that_never_completes_is_closed(proxy: RunningProxy) -> None:
    # A slow-loris client: part of a head, then nothing. Its connection must not live forever.
    with RawConnection(proxy.port) as connection:
        connection.send("GET /whoami HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1\r\n")
        assert connection.wait_closed(IDLE_TIMEOUT + 2) in ("eof", "reset")
    with RawConnection(proxy.port) as other:
        other.send("GET /whoami HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert other.read_response().status == 200


def test_malformed_request_gets_400_and_the_proxy_keeps_serving(proxy: RunningProxy) -> None:
    with RawConnection(proxy.port) as connection:
        connection.send("GET /whoami HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n")
        reply = connection.read_response()
        assert reply.status == 400
        assert reply.json() == {"error": "bad_request"}
    with RawConnection(proxy.port) as other:
        other.send("GET /whoami HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert other.read_response().status == 200
