"""The upstream half of a client connection's exchanges: connect, send, answer, relay, fail.

Given an :class:`~proxy.proxy_exchange.Exchange` whose upstream head is built, the leg takes a
pooled connection or opens one (``timeout`` covers connecting and the response head), writes
the head and the body (a body already complete goes out in the same write, a streaming one
with back-pressure; RFC 9110 section 10.1.1's ``100 Continue`` only once the upstream is up),
takes the upstream's response or failure, and hands the client its head and body through the
:class:`~proxy.proxy_connection.ProxyConnection`. A WebSocket handshake the upstream accepted
(RFC 6455 section 4.2.2) becomes a byte tunnel here. Every failure is one cause of
:mod:`proxy.upstream_errors`: answered, counted and logged once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiohttp.client_exceptions import ClientPayloadError
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import RawResponseMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader

from proxy.proxy_exchange import Exchange
from proxy.proxy_heads import Refusal, response_head, tunnel_head
from proxy.upstream_connection import UpstreamConnection, UpstreamPool
from proxy.upstream_errors import RESPONSES, connect_failure, describe
from proxy.websocket_tunnel import accepts

if TYPE_CHECKING:
    from proxy.proxy_connection import ProxyConnection

log = logging.getLogger("session_sidecar.proxy")

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"


class UpstreamLeg:
    """The :class:`~proxy.upstream_connection.UpstreamOwner` of one client connection's
    requests, one at a time, in the order the client sent them."""

    def __init__(self, client: ProxyConnection, pool: UpstreamPool) -> None:
        self.client = client
        self.pool = pool
        self._loop = client._loop

    def send(self, ex: Exchange) -> None:
        """Carry ``ex`` (its head built) to its upstream."""
        assert ex.upstream is not None
        key = UpstreamPool.key(ex.upstream)
        conn = None if ex.websocket else self.pool.take_idle(key)
        if conn is not None:
            self._send(ex, conn)
        else:
            ex.connecting = asyncio.ensure_future(self._connect_and_send(ex, key))

    async def _connect_and_send(self, ex: Exchange, key: tuple[str, int, bool]) -> None:
        assert ex.upstream is not None
        started = self._loop.time()
        try:
            async with asyncio.timeout(ex.upstream.timeout):
                conn = await self.pool.connect(key)
        except TimeoutError:
            self._fail(ex, "timeout", f"no connection within {ex.upstream.timeout:g}s")
            return
        except OSError as exc:
            self._fail(ex, connect_failure(exc), describe(exc))
            return
        except UnicodeError:  # the IDNA codec refused the name before any lookup
            self._fail(ex, "dns", "the host name is not valid IDNA")
            return
        if ex.done or ex is not self.client.current:
            conn.close()
            return
        self._send(ex, conn)
        if ex.deadline is not None and not ex.has_body:
            # One budget for connecting and answering: a slow connect leaves less for the head.
            ex.deadline = started + ex.upstream.timeout

    def _send(self, ex: Exchange, conn: UpstreamConnection) -> None:
        ex.conn = conn
        conn.start(self, head_request=ex.message.method == "HEAD")
        payload = ex.payload
        if payload is EMPTY_PAYLOAD:
            ex.request_sent = conn.write(ex.head)
            self._start_deadline(ex)
        elif payload.is_eof() and not ex.expect_continue:
            body = payload.read_nowait(-1)
            ex.record.bytes_in = len(body)
            tail = _LAST_CHUNK if ex.chunked else b""
            ex.request_sent = conn.write(ex.head + _frame(body, ex.chunked) + tail)
            self._start_deadline(ex)
        else:
            conn.write(ex.head)
            ex.upload = asyncio.ensure_future(self._upload(ex, conn))

    async def _upload(self, ex: Exchange, conn: UpstreamConnection) -> None:
        # RFC 9110 section 10.1.1: the client waits for 100 Continue before sending the body.
        # It is sent only now, once the upstream connection is up and the body is wanted.
        if ex.expect_continue and not ex.responded:
            self.client.write(_CONTINUE)
        payload = ex.payload
        try:
            while True:
                chunk = await payload.readany()
                if not chunk:
                    break
                ex.record.bytes_in += len(chunk)
                if not conn.write(_frame(chunk, ex.chunked)):
                    return  # the upstream went away; its connection_lost reports it
                await conn.drain()
            ex.request_sent = conn.write(_LAST_CHUNK) if ex.chunked else True
        except (ConnectionError, ClientPayloadError, HttpProcessingError):
            # The client's body broke off: nothing complete can reach the upstream.
            ex.keep_alive = False
            if not ex.responded:
                self.client.release(ex, clean=False)
                self.client.close()
            return
        if not ex.responded and not ex.done:
            self._start_deadline(ex)

    def _start_deadline(self, ex: Exchange) -> None:
        # The timeout counts from the end of the upload: a slow, large upload is not the
        # upstream's fault. The server's sweep enforces it (no timer object per request).
        assert ex.upstream is not None
        ex.deadline = self._loop.time() + ex.upstream.timeout

    def check_deadline(self, now: float) -> None:
        ex = self.client.current
        if ex is not None and ex.deadline is not None and now >= ex.deadline:
            ex.deadline = None
            if not ex.responded and not ex.done:
                timeout = ex.upstream.timeout if ex.upstream is not None else 0.0
                self._fail(ex, "timeout", f"no response head within {timeout:g}s")

    # --- events from the upstream connection ------------------------------------------------

    def upstream_response(self, message: RawResponseMessage, payload: StreamReader) -> None:
        ex = self.client.current
        if ex is None or ex.done:
            return
        ex.deadline = None
        if not 100 <= message.code <= 599:
            # RFC 9110 section 15: a status outside 100..599 is invalid; treat it as a 5xx.
            ex.keep_alive = False
            self._fail(ex, "bad_response", f"status {message.code} is outside 100..599")
            return
        if message.code == 101:
            # RFC 6455 section 4.1: a 101 opens the tunnel only as the answer to this very
            # handshake. Anything else (a status-echo route, a switch unasked) is a 502 with
            # both connections closed, so nothing sent after it is ever relayed unparsed.
            connection = ",".join(message.headers.getall("Connection", ()))
            if ex.websocket and accepts(message.headers, connection, ex.websocket_key):
                self._open_tunnel(ex, message)
            else:
                ex.keep_alive = False
                self._fail(ex, "bad_response", "a 101 that is no answer to this handshake")
            return
        record = ex.record
        head = response_head(ex, message)
        if isinstance(head, Refusal):
            self.client.reply(ex, head.status, head.body)
            return
        bodyless = ex.message.method == "HEAD" or message.code in (204, 304)
        record.status = message.code
        ex.responded = True
        if bodyless or payload.is_eof():
            try:
                body = b"" if bodyless else payload.read_nowait(-1)
            except ClientPayloadError:
                self._upstream_broke(ex)
                return
            record.bytes_out = len(body)
            last = _LAST_CHUNK if ex.response_chunked else b""
            self.client.write(head + _frame(body, ex.response_chunked) + last)
            self.client.finish(ex)
        else:
            self.client.write(head)
            ex.download = asyncio.ensure_future(self._download(ex, payload))

    async def _download(self, ex: Exchange, payload: StreamReader) -> None:
        try:
            while True:
                chunk = await payload.readany()
                if not chunk:
                    break
                ex.record.bytes_out += len(chunk)
                self.client.write(_frame(chunk, ex.response_chunked))
                await self.client.drain()
        except ClientPayloadError:
            self._upstream_broke(ex)
            return
        except ConnectionError:
            return  # the client went away; connection_lost cleans up
        if ex.response_chunked:
            self.client.write(_LAST_CHUNK)
        self.client.finish(ex)

    def _upstream_broke(self, ex: Exchange) -> None:
        # The upstream died mid-body. Abort the client's connection so it can never take a
        # truncated body for a complete one.
        ex.record.upstream_error = "reset"
        self._log_failure(ex, "reset", "connection lost mid-body", "client connection aborted")
        self.client.release(ex, clean=False)
        self.client.report(ex)
        self.client.abort()

    def upstream_failed(
        self, kind: str, sizes: tuple[int, int] | None = None, detail: str = ""
    ) -> None:
        ex = self.client.current
        if ex is None or ex.done or ex.responded:
            return  # mid-body failures surface through the body stream
        conn = ex.conn
        if (
            kind == "reset"
            and conn is not None
            and conn.reused
            and not ex.retried
            and not ex.has_body
            and ex.upstream is not None
        ):
            # A pooled connection the server had just closed. RFC 9112 section 9.3.1 allows
            # a retry on a new connection when nothing of the response arrived.
            ex.retried = True
            ex.conn = None
            ex.deadline = None
            key = UpstreamPool.key(ex.upstream)
            ex.connecting = asyncio.ensure_future(self._connect_and_send(ex, key))
            return
        self._fail(ex, kind, detail, sizes)

    def _open_tunnel(self, ex: Exchange, message: RawResponseMessage) -> None:
        head = tunnel_head(ex, message)
        if isinstance(head, Refusal):
            self.client.reply(ex, head.status, head.body)
            return
        self.client.write(head)
        ex.record.status = 101
        ex.responded = True
        conn = ex.conn
        assert conn is not None
        conn.open_tunnel()
        self.client.open_tunnel(conn)

    def tunnel_data(self, data: bytes) -> None:
        self.client.relay(data)

    def tunnel_pause(self, pause: bool) -> None:
        self.client.tunnel_pause(pause)

    def tunnel_closed(self) -> None:
        self.client.tunnel_closed()

    # --- failures ---------------------------------------------------------------------------

    def _fail(
        self, ex: Exchange, kind: str, detail: str = "", sizes: tuple[int, int] | None = None
    ) -> None:
        status, error = RESPONSES[kind]
        ex.record.upstream_error = kind
        body: dict[str, object] = {"error": error}
        if sizes is not None:
            body["bytes"], body["limit"] = sizes
            detail = f"{sizes[0]} bytes, limit {sizes[1]}"
        self._log_failure(ex, kind, detail, f"answered {status} {error}")
        self.client.reply(ex, status, body)

    @staticmethod
    def _log_failure(ex: Exchange, kind: str, detail: str, outcome: str) -> None:
        """One WARNING per failed exchange: upstream, address, cause, detail, what followed.
        The detail comes from upstream_errors.describe() or the proxy's own words: never from
        bytes the upstream sent, nor from the request."""
        up = ex.upstream
        log.warning(
            "upstream %s at %s:%d failed: %s%s; %s (request %s)",
            ex.record.upstream,
            up.host if up is not None else "-",
            up.port if up is not None else 0,
            kind,
            f", {detail}" if detail else "",
            outcome,
            ex.record.request_id,
        )


def _frame(data: bytes, chunked: bool) -> bytes:
    # RFC 9112 section 7.1: chunk-size in hex, CRLF, data, CRLF. Empty data is no chunk at all
    # (a zero-size chunk would end the body).
    if not chunked or not data:
        return data
    return b"%x\r\n%b\r\n" % (len(data), data)
