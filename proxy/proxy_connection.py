"""The proxied port: one client connection, its requests in order, each carried to its upstream.

Per request: route (404 if none) -> read the session cookies -> build the upstream head
(header hygiene, X-Session, X-Session-Status) -> send it on a pooled upstream connection ->
apply the backend's X-Set-Session to the response head, or refuse it with 502 and leave the old
session alone -> relay the body. Bodies stream both ways with back-pressure; a body that is
already complete when its head arrives (the common small request and response) goes out in the
same write as the head, with no task and no copy loop.

This is an asyncio protocol on aiohttp's C parsers (llhttp) and its flow-controlled streams,
rather than aiohttp's web server: the proxy's work per request then costs about what the
parsing does, not three times that (see docs/benchmarks.md). A WebSocket upgrade is relayed as
bytes once the upstream answers ``101``, so every frame type and close code passes unchanged.
The heads themselves (header hygiene, the session in and out, per-hop framing) are built in
proxy_heads.py; this module moves bytes, keeps requests in order and picks status codes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Iterable, Mapping

from aiohttp.base_protocol import BaseProtocol
from aiohttp.client_exceptions import ClientPayloadError
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.http_parser import HttpRequestParser, RawRequestMessage, RawResponseMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader

from proxy.proxy_exchange import Exchange
from proxy.proxy_heads import Refusal, json_head, request_head, response_head, tunnel_head
from proxy.proxy_state import ProxyState
from proxy.request_record import Observer, RequestRecord, forwarded_client
from proxy.routing import normalize_path
from proxy.upstream_connection import UpstreamConnection, UpstreamPool
from proxy.upstream_errors import RESPONSES, connect_failure, describe
from proxy.websocket_tunnel import accepts

log = logging.getLogger("session_sidecar.proxy")

#: How often overdue upstream responses are looked for: the precision of upstream timeouts.
SWEEP_SECONDS = 0.1
#: How long the rest of an answered request is read and dropped before the socket closes.
LINGER_SECONDS = 2.0
#: Requests a client may pipeline before the proxy stops reading from it.
MAX_PIPELINED = 16
_READ_LIMIT = 2**16
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"


class ProxyServer:
    """What every connection of one worker shares; also the protocol factory for the port."""

    def __init__(
        self,
        state: ProxyState,
        pool: UpstreamPool,
        observer: Observer,
        max_line_size: int,
        max_field_size: int,
        idle_timeout: float = 75.0,
    ) -> None:
        self.state = state
        self.idle_timeout = idle_timeout
        self.pool = pool
        self.observer = observer
        self.max_line_size = max_line_size
        self.max_field_size = max_field_size
        self.connections: set[ProxyConnection] = set()
        self.closing = False
        self._sweeping: asyncio.TimerHandle | None = None

    def load(self) -> tuple[int, int]:
        """Requests in flight and open client connections, for the metrics."""
        connections = self.connections
        return sum(1 for c in connections if c.busy), len(connections)

    def __call__(self) -> ProxyConnection:
        if self._sweeping is None:
            self._sweep()
        return ProxyConnection(self)

    def _sweep(self) -> None:
        """Every SWEEP_SECONDS: answer 504 for each upstream response head that is overdue."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for connection in list(self.connections):
            connection.check_deadline(now)
        self._sweeping = loop.call_later(SWEEP_SECONDS, self._sweep)

    async def shutdown(self, timeout: float) -> None:
        """Stop keep-alive, close idle connections, let busy ones finish for ``timeout``."""
        self.closing = True
        for connection in list(self.connections):
            connection.close_if_idle()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.abort()
        if self._sweeping is not None:
            self._sweeping.cancel()


class ProxyConnection(BaseProtocol):
    """One client connection on the proxied port."""

    def __init__(self, server: ProxyServer) -> None:
        loop = asyncio.get_running_loop()
        super().__init__(loop)
        self.server = server
        self._request_parser = HttpRequestParser(
            self,
            loop,
            _READ_LIMIT,
            max_line_size=server.max_line_size,
            max_field_size=server.max_field_size,
            auto_decompress=False,  # Content-Encoding passes through untouched
        )
        # BaseProtocol's flow control pauses this parser when a request body backs up, and
        # resumes it with data_received(b"") once the body is read.
        self._parser = self._request_parser
        self._queue: deque[tuple[RawRequestMessage, StreamReader]] = deque()
        self._current: Exchange | None = None
        self._parse_error: tuple[int, str] | None = None
        self._upgrade_buffer: list[bytes] | None = None
        self._tunnel: UpstreamConnection | None = None
        self._client_eof = False
        self._lingering = False
        #: Loop time since when the connection has had no request in flight.
        self._idle_since = self._loop.time()
        self._peer = ""

    @property
    def busy(self) -> bool:
        """A request is in flight: its head was read and its response has not ended."""
        return self._current is not None

    # --- the client side of the wire ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.server.connections.add(self)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            host = str(peer[0])
            # An IPv4 client of a dual-stack [::] socket shows as ::ffff:a.b.c.d; log it as IPv4.
            self._peer = host[7:] if host.startswith("::ffff:") and "." in host else host

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # the rest of a request already answered: read and dropped
        if self._tunnel is not None:
            self._tunnel.write(data)
            return
        if self._upgrade_buffer is not None:
            self._upgrade_buffer.append(data)  # frames sent before the upstream's 101
            if sum(map(len, self._upgrade_buffer)) > _READ_LIMIT and self.transport is not None:
                self.transport.pause_reading()  # resumed when the tunnel opens
            return
        try:
            messages, upgraded, tail = self._request_parser.feed_data(data)
        except HttpProcessingError as exc:
            self._refuse(exc)
            return
        if messages:
            self._queue.extend(messages)
        if upgraded:
            self._upgrade_buffer = [tail] if tail else []
        if len(self._queue) > MAX_PIPELINED and self.transport is not None:
            self.transport.pause_reading()
        if self._current is None:
            self._next()

    def eof_received(self) -> bool:
        # Like nginx (proxy_ignore_client_abort off): a client that closes its side has gone
        # away, and its upstream request is cancelled rather than left to run.
        self._client_eof = True
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self.server.connections.discard(self)
        tunnel, self._tunnel = self._tunnel, None
        if tunnel is not None:
            tunnel.close()
        ex, self._current = self._current, None
        if ex is not None and not ex.done:
            if not ex.responded:
                ex.record.status = 499  # the client went away first (nginx's convention)
            self._release(ex, clean=False)
            self._report(ex)
        self._queue.clear()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._tunnel is not None and self._tunnel.transport is not None:
            self._tunnel.transport.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._tunnel is not None and self._tunnel.transport is not None:
            self._tunnel.transport.resume_reading()

    def close_if_idle(self) -> None:
        if self._current is None and self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def _refuse(self, exc: HttpProcessingError) -> None:
        # The message may quote the offending line (a cookie, say): log only its kind.
        if isinstance(exc, LineTooLong):
            self._parse_error = (431, "request_header_too_large")  # RFC 6585 section 5
        else:
            self._parse_error = (400, "bad_request")
        log.info("refused an unparsable request from %s: %s", self._peer, type(exc).__name__)
        if self.transport is not None:
            self.transport.pause_reading()
        if self._current is None:
            self._next()

    # --- request by request -----------------------------------------------------------------

    def _next(self) -> None:
        while self._current is None and self._queue:
            if self.transport is not None and len(self._queue) == MAX_PIPELINED:
                self.transport.resume_reading()
            message, payload = self._queue.popleft()
            self._begin(message, payload)
        if self._current is not None:
            return
        if self._parse_error is not None:
            status, error = self._parse_error
            self._parse_error = None
            request_id = os.urandom(16).hex()
            self._write(json_head(status, {"error": error}, request_id, keep_alive=False))
            # Logged and counted like any request; nothing of it was readable but its fate.
            record = RequestRecord(request_id, self._peer, "-", "-", status, started=time.time())
            self._report_record(record)
            self._close()
        elif self._client_eof or self.server.closing:
            self._close()

    def _close(self, linger: bool = False) -> None:
        transport = self.transport
        if transport is None:
            return
        if linger and not self._client_eof and transport.can_write_eof():
            # Closing a socket with unread request bytes makes the kernel answer them with a
            # reset, which can destroy the response before the client reads it (RFC 9112
            # section 9.6). Half-close instead and drop what still comes for a short while.
            self._lingering = True
            transport.write_eof()
            transport.resume_reading()
            self._loop.call_later(LINGER_SECONDS, transport.close)
            return
        transport.close()

    def _begin(self, message: RawRequestMessage, payload: StreamReader) -> None:
        server = self.server
        state = server.state
        headers_in = message.headers
        url = message.url
        policy = state.headers
        record = RequestRecord(
            request_id=policy.request_id(headers_in),
            client=forwarded_client(
                self._peer, headers_in.getall("X-Forwarded-For", ()), policy.is_trusted
            )
            if policy.trusted
            else self._peer,
            method=message.method,
            path=url.raw_path[:512],
            started=time.time(),
        )
        ex = Exchange(
            message,
            payload,
            record,
            state,
            # A chunked request ends its connection: aiohttp's C parser (3.14) carries trailer
            # fields into the next request's headers, so no request may follow one on it.
            keep_alive=not message.should_close and not server.closing and not message.chunked,
        )
        self._current = ex
        self._idle_since = 0.0
        if message.method == "CONNECT":
            # Never a forward proxy: CONNECT would open a tunnel to a host the config doesn't name.
            self._reply(ex, 405, {"error": "method_not_allowed"})
            return
        # RFC 9112 section 3.2.2: with an absolute-form target the authority in it replaces
        # Host. Either way it only selects among the configured upstreams.
        host = (url.host_port_subcomponent or "") if url.absolute else headers_in.get("Host", "")
        path = normalize_path(url.raw_path)
        route = state.router.route(host, path, url.raw_query_string)
        if route is None:
            self._reply(ex, 404, {"error": "no_route", "path": path[:200]})
            return
        upstream = ex.upstream = route.upstream
        record.upstream = upstream.name

        cookies = _joined(headers_in.getall("Cookie", ()))
        inbound = ex.inbound = state.exchange.inbound(cookies, decode=upstream.forward_session)
        record.session_state = inbound.state.value
        record.session_reason = inbound.reason
        if inbound.reason and log.isEnabledFor(logging.DEBUG):
            # The reason is one of the codec's fixed phrases: it never quotes the cookie.
            log.debug("request %s: session invalid: %s", record.request_id, inbound.reason)
        if inbound.chunk_count:
            record.session_bytes_in = inbound.result.size
            record.session_chunks_in = inbound.chunk_count

        limit = upstream.max_session_header_bytes
        if limit and upstream.forward_session and len(inbound.payload) > limit:
            self._session_too_large(ex, len(inbound.payload), limit)
            return
        refusal = request_head(ex, message, route, host, self._peer)
        if refusal is not None:
            self._reply(ex, refusal.status, refusal.body, refusal.extra)
            return
        key = UpstreamPool.key(upstream)
        conn = None if ex.websocket else server.pool.take_idle(key)
        if conn is not None:
            self._send(ex, conn)
        else:
            ex.connecting = asyncio.ensure_future(self._connect_and_send(ex, key))

    async def _connect_and_send(self, ex: Exchange, key: tuple[str, int, bool]) -> None:
        assert ex.upstream is not None
        started = self._loop.time()
        try:
            async with asyncio.timeout(ex.upstream.timeout):
                conn = await self.server.pool.connect(key)
        except TimeoutError:
            self._fail(ex, "timeout", f"no connection within {ex.upstream.timeout:g}s")
            return
        except OSError as exc:
            self._fail(ex, connect_failure(exc), describe(exc))
            return
        except UnicodeError:  # the IDNA codec refused the name before any lookup
            self._fail(ex, "dns", "the host name is not valid IDNA")
            return
        if ex.done or ex is not self._current:
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
            self._write(_CONTINUE)
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
                self._release(ex, clean=False)
                self._close()
            return
        if not ex.responded and not ex.done:
            self._start_deadline(ex)

    def _start_deadline(self, ex: Exchange) -> None:
        # The timeout counts from the end of the upload: a slow, large upload is not the
        # upstream's fault. The server's sweep enforces it (no timer object per request).
        assert ex.upstream is not None
        ex.deadline = self._loop.time() + ex.upstream.timeout

    def check_deadline(self, now: float) -> None:
        if self._idle_since and now - self._idle_since > self.server.idle_timeout:
            # An idle keep-alive connection, or a request head that never completes (a
            # slow-loris client): close it rather than hold its memory forever.
            self._idle_since = 0.0
            self._close()
            return
        ex = self._current
        if ex is not None and ex.deadline is not None and now >= ex.deadline:
            ex.deadline = None
            if not ex.responded and not ex.done:
                timeout = ex.upstream.timeout if ex.upstream is not None else 0.0
                self._fail(ex, "timeout", f"no response head within {timeout:g}s")

    # --- events from the upstream connection ------------------------------------------------

    def upstream_response(self, message: RawResponseMessage, payload: StreamReader) -> None:
        ex = self._current
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
            self._reply(ex, head.status, head.body)
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
            self._write(head + _frame(body, ex.response_chunked) + last)
            self._finish(ex)
        else:
            self._write(head)
            ex.download = asyncio.ensure_future(self._download(ex, payload))

    async def _download(self, ex: Exchange, payload: StreamReader) -> None:
        try:
            while True:
                chunk = await payload.readany()
                if not chunk:
                    break
                ex.record.bytes_out += len(chunk)
                self._write(_frame(chunk, ex.response_chunked))
                if self._paused:
                    await self._drain_helper()
        except ClientPayloadError:
            self._upstream_broke(ex)
            return
        except ConnectionError:
            return  # the client went away; connection_lost cleans up
        if ex.response_chunked:
            self._write(_LAST_CHUNK)
        self._finish(ex)

    def _upstream_broke(self, ex: Exchange) -> None:
        # The upstream died mid-body. Abort the client's connection so it can never take a
        # truncated body for a complete one.
        ex.record.upstream_error = "reset"
        self._log_failure(ex, "reset", "connection lost mid-body", "client connection aborted")
        self._release(ex, clean=False)
        self._report(ex)
        self.abort()

    def upstream_failed(
        self, kind: str, sizes: tuple[int, int] | None = None, detail: str = ""
    ) -> None:
        ex = self._current
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

    def _session_too_large(self, ex: Exchange, size: int, limit: int) -> None:
        """RFC 6585 section 5: the request's header fields (its session) are too large for
        this upstream. Answered here, with sizes only, so the backend's own 400/413/431, often
        echoing the start of X-Session, never reaches the client."""
        ex.record.upstream_error = "session_too_large"
        log.warning(
            "upstream %s: session header is %d bytes, over its max_session_header_bytes %d;"
            " request %s not sent",
            ex.record.upstream,
            size,
            limit,
            ex.record.request_id,
        )
        body = {"error": "session_too_large_for_upstream", "bytes": size, "limit": limit}
        self._reply(ex, 431, body)

    # --- WebSocket relay ------------------------------------------------------------------

    def _open_tunnel(self, ex: Exchange, message: RawResponseMessage) -> None:
        head = tunnel_head(ex, message)
        if isinstance(head, Refusal):
            self._reply(ex, head.status, head.body)
            return
        self._write(head)
        ex.record.status = 101
        ex.responded = True
        conn = ex.conn
        assert conn is not None
        conn.open_tunnel()
        self._tunnel = conn
        self._upgraded = True  # flow control now pauses the socket, not a parser
        for data in self._upgrade_buffer or ():
            conn.write(data)
        self._upgrade_buffer = None
        if self.transport is not None:
            self.transport.resume_reading()

    def tunnel_data(self, data: bytes) -> None:
        if self._tunnel is not None:
            self._write(data)

    def tunnel_pause(self, pause: bool) -> None:
        if self.transport is not None:
            if pause:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def tunnel_closed(self) -> None:
        self._tunnel = None
        ex = self._current
        if ex is not None and not ex.done:
            ex.done = True
            self._report(ex)
        self._close()

    # --- ending an exchange -------------------------------------------------------------------

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
        self._reply(ex, status, body)

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

    def _reply(
        self,
        ex: Exchange,
        status: int,
        body: Mapping[str, object],
        extra: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Answer with the proxy's own small JSON response; no upstream connection survives
        it (one that carried part of this request is closed, never pooled)."""
        if ex.body_unread:
            ex.keep_alive = False  # the rest of the body would be read as the next request
        self._release(ex, clean=False)
        ex.record.status = status
        ex.responded = True
        self._write(json_head(status, body, ex.record.request_id, ex.keep_alive, extra))
        self._finish(ex)

    def _finish(self, ex: Exchange) -> None:
        if ex.done:
            return
        if ex.body_unread or self.server.closing or self._client_eof:
            ex.keep_alive = False
        # The response has ended; the exchange decides whether the request did too.
        self._release(ex, clean=True)
        self._report(ex)
        self._current = None
        self._idle_since = self._loop.time()
        if not ex.keep_alive:
            self._close(linger=ex.body_unread)
        elif self._queue or self._parse_error is not None:
            # Not from inside the upstream's data_received: the next request may take the
            # very connection that is still delivering this one.
            self._loop.call_soon(self._next)

    def _release(self, ex: Exchange, clean: bool) -> None:
        ex.release(self.server.pool, clean)

    def _report(self, ex: Exchange) -> None:
        ex.done = True
        ex.record.duration = time.perf_counter() - ex.began
        self._report_record(ex.record)

    def _report_record(self, record: RequestRecord) -> None:
        try:
            self.server.observer(record)
        except Exception:  # an observer must never break a connection
            log.exception("request observer failed")


def _frame(data: bytes, chunked: bool) -> bytes:
    # RFC 9112 section 7.1: chunk-size in hex, CRLF, data, CRLF. Empty data is no chunk at all
    # (a zero-size chunk would end the body).
    if not chunked or not data:
        return data
    return b"%x\r\n%b\r\n" % (len(data), data)


def _joined(values: Iterable[str]) -> str | None:
    # HTTP/2 clients may split Cookie over several fields; RFC 9113 section 8.2.3 joins with "; ".
    values = list(values)
    if not values:
        return None
    return values[0] if len(values) == 1 else "; ".join(values)
