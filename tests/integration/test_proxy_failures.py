"""Upstream and client failures: the right status at once, never a hang, and the proxy lives on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import aiohttp
import pytest

from tests.integration.backends import RunningBackend, free_port, start_backend
from tests.integration.log_watch import WATCH
from tests.integration.proxy_client import RawConnection, raw_request
from tests.integration.scripted_backend import ENDLESS_PATH, HANG_PATH, ScriptedBackend
from tests.integration.sidecar import RunningProxy, base_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def backend() -> Iterator[RunningBackend]:
    with start_backend("python") as running:
        yield running


#: 5 000 bytes promised, 100 sent, then the connection closed.
SMALL_CUT = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5000\r\n\r\n" + b"x" * 100
)
#: A chunked body that stops without its last chunk.
CHUNKED_CUT = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"64\r\n" + b"y" * 100 + b"\r\n"
)


@pytest.fixture(scope="module")
def hanging_backend() -> Iterator[ScriptedBackend]:
    with ScriptedBackend({"/cut/small": SMALL_CUT, "/cut/chunked": CHUNKED_CUT}) as running:
        yield running


@pytest.fixture(scope="module")
def proxy(backend: RunningBackend, hanging_backend: ScriptedBackend) -> Iterator[RunningProxy]:
    upstreams = [
        {"name": "app", "url": backend.url, "timeout": 5},
        # Nothing listens on this port: connections are refused.
        {"name": "dead", "url": f"http://127.0.0.1:{free_port()}", "path_prefix": "/dead"},
        {
            "name": "impatient",
            "url": backend.url,
            "path_prefix": "/impatient",
            "strip_prefix": True,
            "timeout": 1,
        },
        {"name": "hanging", "url": hanging_backend.url, "path_prefix": HANG_PATH, "timeout": 30},
        {"name": "endless", "url": hanging_backend.url, "path_prefix": ENDLESS_PATH},
        {"name": "cut", "url": hanging_backend.url, "path_prefix": "/cut"},
    ]
    with WATCH.start_proxy(base_config(backend.url, upstreams=upstreams)) as running:
        yield running


def timed_request(proxy: RunningProxy, target: str) -> tuple[int, dict[str, object], float]:
    started = time.monotonic()
    reply = raw_request(proxy.port, "GET", target)
    return reply.status, reply.json(), time.monotonic() - started


def assert_still_serving(proxy: RunningProxy) -> None:
    status, _, elapsed = timed_request(proxy, "/whoami")
    assert status == 200
    assert elapsed < 1.0
    assert proxy.process.poll() is None


def test_refused_upstream_answers_502_at_once(proxy: RunningProxy) -> None:
    status, body, elapsed = timed_request(proxy, "/dead/x")
    assert (status, body) == (502, {"error": "upstream_unreachable"})
    assert elapsed < 1.0
    assert_still_serving(proxy)


def test_upstream_without_response_headers_within_its_timeout_answers_504(
    proxy: RunningProxy,
) -> None:
    status, body, elapsed = timed_request(proxy, "/impatient/slow?seconds=4")
    assert (status, body) == (504, {"error": "upstream_timeout"})
    assert 0.9 < elapsed < 2.5
    assert_still_serving(proxy)


def test_upstream_within_its_timeout_is_waited_for(proxy: RunningProxy) -> None:
    status, body, _ = timed_request(proxy, "/impatient/slow?seconds=0.3")
    assert (status, body) == (200, {"slept": 0.3})


def test_upstream_reset_mid_body_aborts_the_client_connection(proxy: RunningProxy) -> None:
    with RawConnection(proxy.port, timeout=10) as connection:
        connection.send("GET /reset HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        reply = connection.read_response()
    assert reply.status == 200
    assert reply.header("Content-Length") == "1000000"
    assert not reply.complete
    assert len(reply.body) < 1_000_000
    assert reply.ended in ("eof", "reset")
    assert_still_serving(proxy)


def test_upstream_reset_mid_body_is_never_a_complete_response_to_aiohttp(
    proxy: RunningProxy,
) -> None:
    async def fetch() -> None:
        async with aiohttp.ClientSession() as session, session.get(f"{proxy.url}/reset") as r:
            await r.read()

    with pytest.raises(aiohttp.ClientPayloadError):
        asyncio.run(fetch())


def test_upstream_closing_a_short_body_early_aborts_the_client_connection(
    proxy: RunningProxy,
) -> None:
    with RawConnection(proxy.port, timeout=10) as connection:
        connection.send("GET /cut/small HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        try:
            reply = connection.read_response()
        except ConnectionError:
            return  # aborted before the head: equally never a complete response
    assert reply.header("Content-Length") == "5000"
    assert not reply.complete
    assert_still_serving(proxy)


def test_upstream_cutting_a_chunked_body_never_sends_the_last_chunk(proxy: RunningProxy) -> None:
    with RawConnection(proxy.port, timeout=10) as connection:
        connection.send("GET /cut/chunked HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        reply = connection.read_response()
    assert reply.status == 200
    assert not reply.complete
    assert reply.ended in ("eof", "reset")
    assert_still_serving(proxy)


def test_client_going_away_cancels_the_upstream_request(
    proxy: RunningProxy, hanging_backend: ScriptedBackend
) -> None:
    hanging_backend.hanging.clear()
    hanging_backend.hung_up.clear()
    with RawConnection(proxy.port) as connection:
        connection.send(f"GET {HANG_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert hanging_backend.hanging.wait(5), "the request never reached the upstream"
    assert hanging_backend.hung_up.wait(3), "the upstream request outlived its client"
    assert_still_serving(proxy)


def test_client_going_away_mid_upload_cancels_the_upstream_request(
    proxy: RunningProxy, hanging_backend: ScriptedBackend
) -> None:
    hanging_backend.hanging.clear()
    hanging_backend.hung_up.clear()
    with RawConnection(proxy.port) as connection:
        connection.send(
            f"POST {HANG_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10000000\r\n\r\n"
        )
        connection.send(bytes(100_000))
        assert hanging_backend.hanging.wait(5), "the request never reached the upstream"
    assert hanging_backend.hung_up.wait(3), "the upstream request outlived its client"
    assert_still_serving(proxy)


def test_client_going_away_mid_download_closes_the_upstream_connection(
    proxy: RunningProxy, hanging_backend: ScriptedBackend
) -> None:
    hanging_backend.hanging.clear()
    hanging_backend.hung_up.clear()
    with RawConnection(proxy.port) as connection:
        connection.send(f"GET {ENDLESS_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert connection.read_head().status == 200
        assert hanging_backend.hanging.wait(5)
    assert hanging_backend.hung_up.wait(3), "the upstream kept streaming to nobody"
    assert_still_serving(proxy)


def test_client_going_away_during_a_slow_upstream_leaves_the_proxy_quick(
    proxy: RunningProxy,
) -> None:
    for _ in range(5):
        with RawConnection(proxy.port) as connection:
            connection.send("GET /slow?seconds=5 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            time.sleep(0.1)
    assert_still_serving(proxy)


def test_a_slow_request_does_not_hold_up_other_clients(proxy: RunningProxy) -> None:
    async def both() -> tuple[int, int, float]:
        async with aiohttp.ClientSession() as session:
            slow = asyncio.ensure_future(session.get(f"{proxy.url}/slow?seconds=2"))
            await asyncio.sleep(0.2)
            started = time.monotonic()
            async with session.get(f"{proxy.url}/whoami") as quick:
                quick_status = quick.status
            quick_elapsed = time.monotonic() - started
            async with await slow as slow_response:
                return quick_status, slow_response.status, quick_elapsed

    quick_status, slow_status, quick_elapsed = asyncio.run(both())
    assert (quick_status, slow_status) == (200, 200)
    assert quick_elapsed < 0.5


def test_failures_at_once_do_not_stop_the_proxy_for_other_clients(proxy: RunningProxy) -> None:
    async def mixed() -> list[int]:
        async def status(path: str) -> int:
            try:
                async with aiohttp.ClientSession() as session, session.get(proxy.url + path) as r:
                    await r.read()
                    return r.status
            except aiohttp.ClientPayloadError:
                return -1  # the aborted /reset

        paths = ["/dead/x", "/impatient/slow?seconds=3", "/reset", "/whoami", "/slow?seconds=0.5"]
        return await asyncio.gather(*(status(p) for p in paths * 3))

    statuses = asyncio.run(mixed())
    assert statuses == [502, 504, -1, 200, 200] * 3
    assert_still_serving(proxy)
