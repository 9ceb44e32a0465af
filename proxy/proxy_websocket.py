"""WebSocket proxying: the handshake carries the session like any request, then frames flow.

Text, binary, ping, pong and close (with its code) pass both ways until either side closes.
The subprotocol the upstream picks is the one offered to the client (RFC 6455 section 4.2.2).
"""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

log = logging.getLogger("session_sidecar.websocket")

#: Handshake headers that aiohttp's client writes itself (RFC 6455 section 4.1).
_HANDSHAKE = (
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Protocol",
    "Sec-WebSocket-Extensions",
    "Upgrade",
    "Connection",
)


def is_websocket_upgrade(request: web.BaseRequest) -> bool:
    upgrade = request.headers.get("Upgrade", "")
    connection = request.headers.get("Connection", "")
    return (
        request.method == "GET"
        and upgrade.lower() == "websocket"
        and "upgrade" in connection.lower()
    )


async def proxy_websocket(
    request: web.BaseRequest,
    client: aiohttp.ClientSession,
    target: URL,
    headers: CIMultiDict[str],
    timeout: float,
) -> web.StreamResponse:
    offered = [
        p.strip()
        for value in request.headers.getall("Sec-WebSocket-Protocol", [])
        for p in value.split(",")
        if p.strip()
    ]
    for name in _HANDSHAKE:
        headers.popall(name, None)
    ws_target = target.with_scheme("wss" if target.scheme == "https" else "ws")
    try:
        upstream = await client.ws_connect(
            ws_target,
            headers=headers,
            protocols=offered,
            autoclose=False,
            autoping=False,
            max_msg_size=0,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=timeout),
        )
    except aiohttp.WSServerHandshakeError as exc:
        status = exc.status if 400 <= exc.status < 600 else 502
        return _error(status, "upstream_refused_websocket")
    except (aiohttp.ClientError, OSError, TimeoutError):
        return _error(502, "upstream_unreachable")

    downstream = web.WebSocketResponse(
        protocols=(upstream.protocol,) if upstream.protocol else (),
        autoclose=False,
        autoping=False,
        max_msg_size=0,
    )
    try:
        await downstream.prepare(request)
        to_upstream = asyncio.ensure_future(_pump(downstream, upstream))
        to_client = asyncio.ensure_future(_pump(upstream, downstream))
        try:
            await asyncio.wait((to_upstream, to_client), return_when=asyncio.FIRST_COMPLETED)
        finally:
            to_upstream.cancel()
            to_client.cancel()
    finally:
        await upstream.close()
        if not downstream.closed:
            await downstream.close()
    return downstream


async def _pump(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> None:
    while True:
        msg = await source.receive()
        if msg.type is WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type is WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        elif msg.type is WSMsgType.PING:
            await sink.ping(msg.data)
        elif msg.type is WSMsgType.PONG:
            await sink.pong(msg.data)
        elif msg.type is WSMsgType.CLOSE:
            code = msg.data if isinstance(msg.data, int) else 1000
            await sink.close(code=code, message=(msg.extra or "").encode())
            return
        else:  # CLOSING, CLOSED, ERROR
            return


def _error(status: int, error: str) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps({"error": error}).encode(),
        content_type="application/json",
    )
