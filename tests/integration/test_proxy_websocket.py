"""WebSockets through the proxy, against the Python backend's ``/ws`` echo.

The backend echoes text and binary frames, answers "session" with the X-Session it saw on the
handshake, closes with 4001 on "close", and offers the subprotocols chat and superchat.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import WSMsgType

from tests.integration.backends import RunningBackend, start_backend
from tests.integration.log_watch import WATCH
from tests.integration.proxy_client import CookieClient, compact
from tests.integration.sidecar import RunningProxy, base_config

pytestmark = pytest.mark.integration

TIMEOUT = 5.0


@pytest.fixture(scope="module")
def backend() -> Iterator[RunningBackend]:
    with start_backend("python") as running:
        yield running


@pytest.fixture(scope="module")
def proxy(backend: RunningBackend) -> Iterator[RunningProxy]:
    with WATCH.start_proxy(base_config(backend.url)) as running:
        yield running


@asynccontextmanager
async def websocket(
    proxy: RunningProxy,
    headers: Mapping[str, str] | None = None,
    protocols: Sequence[str] = (),
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session,
        session.ws_connect(
            f"{proxy.url}/ws",
            headers=headers,
            protocols=protocols,
            autoping=False,
            timeout=aiohttp.ClientWSTimeout(ws_receive=TIMEOUT, ws_close=TIMEOUT),
        ) as ws,
    ):
        yield ws


def ask(proxy: RunningProxy, message: str, headers: Mapping[str, str] | None = None) -> str:
    """Send one text frame and return the text frame that comes back."""

    async def exchange() -> str:
        async with websocket(proxy, headers) as ws:
            await ws.send_str(message)
            return await ws.receive_str()

    return asyncio.run(exchange())


def test_backend_sees_the_session_on_the_handshake(proxy: RunningProxy) -> None:
    with CookieClient(proxy.url) as client:
        client.set_session({"user": "ada-websocket", "room": 7})
        cookie = client.cookie_header()
    assert cookie is not None
    reply = ask(proxy, "session", {"Cookie": cookie})
    assert reply == compact({"user": "ada-websocket", "room": 7})


def test_handshake_without_a_session_carries_an_empty_session(proxy: RunningProxy) -> None:
    assert ask(proxy, "session") == "{}"


@pytest.mark.parametrize("spelling", ["X-Session", "x_session", "X_SESSION"])
def test_spoofed_session_header_on_the_handshake_is_stripped(
    proxy: RunningProxy, spelling: str
) -> None:
    assert ask(proxy, "session", {spelling: '{"user":"mallory","admin":true}'}) == "{}"


def test_text_frames_pass_both_ways(proxy: RunningProxy) -> None:
    assert ask(proxy, "hello, Zoë") == "hello, Zoë"


def test_binary_frames_pass_both_ways(proxy: RunningProxy) -> None:
    payload = bytes(range(256)) * 300

    async def exchange() -> bytes:
        async with websocket(proxy) as ws:
            await ws.send_bytes(payload)
            return await ws.receive_bytes()

    assert asyncio.run(exchange()) == payload


def test_ping_passes_to_the_backend_and_its_pong_comes_back(proxy: RunningProxy) -> None:
    async def exchange() -> tuple[WSMsgType, object]:
        async with websocket(proxy) as ws:
            await ws.ping(b"are-you-there")
            message = await ws.receive()
            return message.type, message.data

    assert asyncio.run(exchange()) == (WSMsgType.PONG, b"are-you-there")


def test_unsolicited_pong_passes_without_breaking_the_connection(proxy: RunningProxy) -> None:
    async def exchange() -> str:
        async with websocket(proxy) as ws:
            await ws.pong(b"unsolicited")
            await ws.send_str("still here")
            return await ws.receive_str()

    assert asyncio.run(exchange()) == "still here"


def test_backend_close_code_passes_through(proxy: RunningProxy) -> None:
    async def exchange() -> tuple[WSMsgType, object, str | None]:
        async with websocket(proxy) as ws:
            await ws.send_str("close")
            message = await ws.receive()
            return message.type, message.data, message.extra

    assert asyncio.run(exchange()) == (WSMsgType.CLOSE, 4001, "bye")


def test_client_close_is_answered_promptly(proxy: RunningProxy) -> None:
    async def exchange() -> bool:
        async with websocket(proxy) as ws:
            await ws.send_str("hello")
            await ws.receive_str()
            closed: bool = await ws.close(code=4002, message=b"client done")
            return closed

    assert asyncio.run(asyncio.wait_for(exchange(), TIMEOUT))


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [(("superchat",), "superchat"), (("nope", "chat"), "chat"), ((), None)],
    ids=["superchat", "second-choice", "none"],
)
def test_subprotocol_is_negotiated_through_the_proxy(
    proxy: RunningProxy, offered: tuple[str, ...], chosen: str | None
) -> None:
    async def exchange() -> str | None:
        async with websocket(proxy, protocols=offered) as ws:
            await ws.send_str("ping-protocol")
            assert await ws.receive_str() == "ping-protocol"
            return ws.protocol

    assert asyncio.run(exchange()) == chosen


def test_many_messages_keep_their_order(proxy: RunningProxy) -> None:
    async def exchange() -> list[str]:
        async with websocket(proxy) as ws:
            for i in range(200):
                await ws.send_str(f"message {i}")
            return [await ws.receive_str() for _ in range(200)]

    assert asyncio.run(exchange()) == [f"message {i}" for i in range(200)]
