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
proxy_heads.py, and the upstream half of each exchange (connect, send, relay, fail) runs in
proxy_upstream.py; this module is the client's side: it parses, keeps requests in order,
routes, reads the session and writes what goes back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping

from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.http_parser import HttpRequestParser, RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader

from proxy.http_headers import new_request_id
from proxy.proxy_exchange import Exchange
from proxy.proxy_heads import json_answer, request_head
from proxy.proxy_state import ProxyState
from proxy.proxy_upstream import UpstreamLeg
from proxy.request_record import Observer, RequestRecord, forwarded_client
from proxy.routing import normalize_path, valid_host
from proxy.upstream_connection import UpstreamConnection, UpstreamPool

log = logging.getLogger("session_sidecar.proxy")

#: How often overdue upstream responses are looked for: the precision of upstream timeouts.
SWEEP_SECONDS = 0.1
#: How long, and how much of, the rest of an answered request is read and dropped before the
#: socket closes.
LINGER_SECONDS = 2.0
LINGER_BYTES = 1 << 20
#: Requests a client may pipeline before the proxy stops reading from it.
MAX_PIPELINED = 16
#: Bytes a client may send ahead of the request in flight (pipelined requests) before the
#: proxy stops reading from it until it has caught up.
MAX_READ_AHEAD = 2**16
_READ_LIMIT = 2**16
#: A read this small that ends a head is not searched for the start of the next one: a head is
#: measured to within these many bytes (see ProxyConnection.data_received).
_UNCOUNTED_READ = 4096


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
        body_timeout: float = 60.0,
        max_head_size: int = 81_792,
        max_connections: int = 1 << 20,
    ) -> None:
        self.state = state
        self.idle_timeout = idle_timeout
        self.body_timeout = body_timeout
        self.pool = pool
        self.observer = observer
        self.max_line_size = max_line_size
        self.max_field_size = max_field_size
        self.max_head_size = max_head_size
        self.max_connections = max_connections
        self.connections: set[ProxyConnection] = set()
        #: Connections with no request in flight, each in the order it got there: idle
        #: keep-alive ones (a response ended), and new ones whose first head has not ended.
        #: At the cap, the oldest idle one, else the oldest new one, is closed for a newcomer.
        self.idle: OrderedDict[ProxyConnection, None] = OrderedDict()
        self.heads: OrderedDict[ProxyConnection, None] = OrderedDict()
        self.closing = False
        #: Made inside the worker's loop; kept, since get_running_loop() costs a syscall.
        self.loop = asyncio.get_running_loop()
        self._sweeping: asyncio.TimerHandle | None = None

    def load(self) -> tuple[int, int]:
        """Requests in flight and open client connections, for the metrics."""
        connections = self.connections
        return sum(1 for c in connections if c.busy), len(connections)

    def __call__(self) -> ProxyConnection:
        if self._sweeping is None:
            self._sweep()
        return ProxyConnection(self)

    def admit(self) -> bool:
        """Make room for a new connection: at max_connections, close the oldest one with no
        request in flight. False when every connection has one."""
        if len(self.connections) < self.max_connections:
            return True
        idle, heads = self.idle, self.heads
        while idle:
            victim = idle.popitem(last=False)[0]
            if victim.head_begun:  # its next head has begun since: it is one of the heads now
                victim.listed_in(heads)
                continue
            break
        else:
            if not heads:
                return False
            victim = heads.popitem(last=False)[0]
        victim.listed = None
        self.connections.discard(victim)
        victim.close()
        return True

    def _sweep(self) -> None:
        """Every SWEEP_SECONDS: answer 504 for each upstream response head that is overdue."""
        loop = self.loop
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
        loop = server.loop
        super().__init__(loop)
        self.server = server
        self._request_parser = HttpRequestParser(
            self,
            loop,
            _READ_LIMIT,
            max_line_size=server.max_line_size,
            max_field_size=server.max_field_size,
            auto_decompress=False,  # Content-Encoding passes through untouched
            # The parser stops between messages once this many are unconsumed and keeps the
            # rest as bytes: one read of tiny requests is never thousands of parsed ones. One
            # more than the queue holds, because the C parser counts a request at its end
            # and a request whose body is still coming is consumed (begun) before that.
            max_msg_queue_size=MAX_PIPELINED + 1,
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
        self._lingered = 0
        #: Bytes of the request head being read (see data_received), and the request body
        #: being read, if any.
        self._head_bytes = 0
        self._max_head_size = server.max_head_size
        self._body: StreamReader | None = None
        #: The server's ``idle`` or ``heads`` while this connection is in it.
        self.listed: OrderedDict[ProxyConnection, None] | None = None
        #: Loop time since when the connection has had no request in flight.
        self._idle_since = self._loop.time()
        self._peer = ""
        self._upstream = UpstreamLeg(self, server.pool)
        #: Bytes read ahead of the request in flight since the proxy last caught up.
        self._ahead = 0
        self._next_pending = False
        #: limits.body_timeout: the upload watched, its body bytes at the last sweep, and
        #: since when (loop time) they have not changed while the proxy was reading.
        self._body_exchange: Exchange | None = None
        self._body_received = 0
        self._body_since = 0.0

    @property
    def busy(self) -> bool:
        """A request is in flight: its head was read and its response has not ended."""
        return self._current is not None

    @property
    def head_begun(self) -> bool:
        """Bytes of a request head that has not ended have been read."""
        return self._head_bytes > 0

    def listed_in(self, bucket: OrderedDict[ProxyConnection, None] | None) -> None:
        """Move this connection to the end of ``bucket`` (the server's idle or heads), or off."""
        if self.listed is not None:
            self.listed.pop(self, None)
        if bucket is not None:
            bucket[self] = None
        self.listed = bucket

    # --- the client side of the wire ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        server = self.server
        admitted = server.admit()
        server.connections.add(self)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            host = str(peer[0])
            # An IPv4 client of a dual-stack [::] socket shows as ::ffff:a.b.c.d; log it as IPv4.
            self._peer = host[7:] if host.startswith("::ffff:") and "." in host else host
        if admitted:
            self.listed_in(server.heads)
        else:
            # RFC 9110 section 15.6.4: every connection of this worker is serving a request.
            self._answer_and_close(503, "too_many_connections", (("Retry-After", "1"),))

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            # The rest of a request already answered: read and dropped, up to a point.
            self._lingered += len(data)
            if self._lingered > LINGER_BYTES and self.transport is not None:
                self.transport.close()
            return
        if self._tunnel is not None:
            self._tunnel.write(data)
            return
        if self._upgrade_buffer is not None:
            self._upgrade_buffer.append(data)  # frames sent before the upstream's 101
            if sum(map(len, self._upgrade_buffer)) > _READ_LIMIT and self.transport is not None:
                self.transport.pause_reading()  # resumed when the tunnel opens
            return
        if self._queue or ((ex := self._current) is not None and not ex.body_unread):
            self._ahead += len(data)  # pipelined requests, not the body of the one in flight
        if self._parse(data) and self._current is None:
            self._next()

    def _parse(self, data: bytes) -> bool:
        """Feed the parser and queue what it parsed; False if it refused the request."""
        # The head being read is counted as it comes, to refuse it once past max_head_size:
        # every read while no body is being read, and what may begin a head after one that
        # ended (see _measure_heads). A small GET ending in its read costs the one test below.
        body = self._body
        body_before = 0 if body is None else body.total_bytes
        try:
            messages, upgraded, tail = self._request_parser.feed_data(data)
        except HttpProcessingError as exc:
            self._refuse(exc)
            return False
        if messages:
            self._queue.extend(messages)
            if (
                body is not None
                or self._head_bytes
                or len(data) > _UNCOUNTED_READ
                or messages[-1][1] is not EMPTY_PAYLOAD
            ):
                self._measure_heads(data, messages)
        elif body is None:
            self._head_bytes += len(data)
            if self._head_bytes > self._max_head_size:
                self._refuse_head()
        elif body.is_eof():  # the body ended in this read; what follows it begins a head
            self._body = None
            self._head_bytes = _tail_size(data, body.total_bytes - body_before)
            if self._head_bytes > self._max_head_size:
                self._refuse_head()
        if upgraded:
            self._upgrade_buffer = [tail] if tail else []
        if len(self._queue) >= MAX_PIPELINED or self._ahead > MAX_READ_AHEAD:
            self._pause_reading_for_buffer()  # _catch_up() reads on
        return True

    def eof_received(self) -> bool:
        # Like nginx (proxy_ignore_client_abort off): a client that closes its side has gone
        # away, and its upstream request is cancelled rather than left to run.
        self._client_eof = True
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self.server.connections.discard(self)
        self.listed_in(None)
        tunnel, self._tunnel = self._tunnel, None
        if tunnel is not None:
            tunnel.close()
        ex, self._current = self._current, None
        if ex is not None and not ex.done:
            if not ex.responded:
                ex.record.status = 499  # the client went away first (nginx's convention)
            self.release(ex, clean=False)
            self.report(ex)
        self._queue.clear()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._tunnel is not None:
            if self._tunnel.transport is not None:
                self._tunnel.transport.pause_reading()
        elif not self._lingering:
            # The client is not reading its answers: read no more of its requests, and start
            # none of those already queued, until it does (resume_writing).
            self._pause_reading_for_buffer()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._tunnel is not None:
            if self._tunnel.transport is not None:
                self._tunnel.transport.resume_reading()
        elif self._current is None:
            self._next()
        elif self._buffer_paused:
            self._catch_up()

    @property
    def current(self) -> Exchange | None:
        """The exchange in flight, if any; the one the upstream's events belong to."""
        return self._current

    async def drain(self) -> None:
        """Wait while the client's socket buffer is full (back-pressure on a download)."""
        if self._paused:
            await self._drain_helper()

    def open_tunnel(self, conn: UpstreamConnection) -> None:
        """The upstream accepted the handshake: from now on bytes go straight to ``conn``."""
        self._tunnel = conn
        self._upgraded = True  # flow control now pauses the socket, not a parser
        for data in self._upgrade_buffer or ():
            conn.write(data)
        self._upgrade_buffer = None
        if self.transport is not None:
            self.transport.resume_reading()

    def relay(self, data: bytes) -> None:
        """Tunnel bytes from the upstream."""
        if self._tunnel is not None:
            self.write(data)

    def tunnel_pause(self, pause: bool) -> None:
        """Back-pressure from the tunnel's upstream side."""
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
            self.report(ex)
        self.close()

    def close_if_idle(self) -> None:
        if self._current is None and self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def write(self, data: bytes) -> None:
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
        self._stop_reading()

    def _refuse_head(self) -> None:
        """RFC 6585 section 5: the whole head is over limits.max_request_head_bytes. Nothing
        more of it is parsed; what still comes is dropped (a bounded linger) once answered."""
        self._parse_error = (431, "request_header_too_large")
        log.info(
            "refused a request head over max_request_head_bytes (%d) from %s",
            self._max_head_size,
            self._peer,
        )
        self._stop_reading()

    def _stop_reading(self) -> None:
        self._lingering = True  # whatever still comes is dropped, never parsed
        if self.transport is not None:
            self.transport.pause_reading()
        if self._current is None:
            self._next()

    def _measure_heads(
        self, data: bytes, messages: list[tuple[RawRequestMessage, StreamReader]]
    ) -> None:
        """After a read that ended ``messages``' heads (queued): refuse the first head over the
        cap, measured by what was parsed of it (it may have begun in an earlier read), and
        count what follows the last one as the next head, unless its body is being read."""
        if self._head_bytes + len(data) > self._max_head_size:
            for i, (message, _) in enumerate(messages):
                if _head_size(message) > self._max_head_size:
                    for _ in messages[i:]:
                        self._queue.pop()
                    self._refuse_head()
                    return
        payload = messages[-1][1]
        if payload is EMPTY_PAYLOAD:
            self._body = None
            self._head_bytes = _tail_size(data, 0) if len(data) > _UNCOUNTED_READ else 0
        elif payload.is_eof():
            self._body = None
            self._head_bytes = _tail_size(data, payload.total_bytes)
        else:
            self._body = payload
            self._head_bytes = 0
        if self._head_bytes > self._max_head_size:
            self._refuse_head()

    # --- request by request -----------------------------------------------------------------

    def _next(self) -> None:
        # Not while the client leaves its answers unread: resume_writing() goes on.
        while self._current is None and self._queue and not self._paused:
            message, payload = self._queue.popleft()
            self._request_parser.message_consumed()
            self._begin(message, payload)
        if self._buffer_paused and self._catch_up() and self._current is None:
            # More requests, parsed from what the parser kept: they start on the loop's next
            # pass, so that a long pipeline of answers the proxy makes itself (404s, say)
            # never holds the loop for long.
            self._next_soon()
        if self._current is not None or self._queue:
            return
        if self._parse_error is not None:
            status, error = self._parse_error
            self._parse_error = None
            self._answer_and_close(status, error)
        elif self._client_eof or self.server.closing:
            self.close()

    def _catch_up(self) -> bool:
        """Read the client again once its answers are being read and few of its requests
        wait: first the bytes the parser kept back. True if that queued requests."""
        if not self._queue:
            self._ahead = 0
        if (
            self._paused
            or self._parse_error is not None
            # After an upgrade the parser has nothing more to give (fed again, it would answer
            # "upgraded" with no tail); open_tunnel() reads on.
            or self._upgrade_buffer is not None
            or len(self._queue) > MAX_PIPELINED // 2
            or self._ahead > MAX_READ_AHEAD
        ):
            return False
        queued = len(self._queue)
        if not self._parse(b""):
            return False
        if len(self._queue) < MAX_PIPELINED:
            self._resume_reading_for_buffer()
        return len(self._queue) > queued

    def _answer_and_close(
        self, status: int, error: str, extra: Iterable[tuple[str, str]] = ()
    ) -> None:
        """Answer before any request could be read (a refused head, a connection over the
        cap), then close, dropping what still comes for a while."""
        request_id = new_request_id()
        answer, size = json_answer(status, {"error": error}, request_id, False, extra)
        self.write(answer)
        # Logged and counted like any request; nothing of it was readable but its fate.
        record = RequestRecord(request_id, self._peer, "-", "-", status, started=time.time())
        record.bytes_out = size
        self._report_record(record)
        self.close(linger=True)

    def close(self, linger: bool = False) -> None:
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
        listed = self.listed
        if listed is not None:
            del listed[self]
            self.listed = None
        if message.method == "CONNECT":
            # Never a forward proxy: CONNECT would open a tunnel to a host the config doesn't name.
            self.reply(ex, 405, {"error": "method_not_allowed"})
            return
        # RFC 9112 section 3.2.2: with an absolute-form target the authority in it replaces
        # Host. Either way it only selects among the configured upstreams. Section 3.2: an
        # invalid Host (or authority) is a 400, never a route; an HTTP/1.0 request may lack it.
        host = headers_in.get("Host")
        if (host is not None and not valid_host(host)) or (
            url.absolute and not valid_host(url.raw_authority)
        ):
            ex.keep_alive = False
            self.reply(ex, 400, {"error": "bad_host"})
            return
        host = (url.host_port_subcomponent or "") if url.absolute else host or ""
        path = normalize_path(url.raw_path)
        route = state.router.route(host, path, url.raw_query_string)
        if route is None:
            self.reply(ex, 404, {"error": "no_route", "path": path[:200]})
            return
        upstream = ex.upstream = route.upstream
        record.upstream = upstream.name

        cookies = _joined(headers_in.getall("Cookie", ()))
        inbound = ex.inbound = state.exchange.inbound(cookies, decode=upstream.forward_session)
        record.session_state = inbound.state._value_  # not .value: a Python-level property
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
            self.reply(ex, refusal.status, refusal.body, refusal.extra)
            return
        self._upstream.send(ex)

    def check_deadline(self, now: float) -> None:
        if self._idle_since and now - self._idle_since > self.server.idle_timeout:
            # An idle keep-alive connection, or a request head that never completes (a
            # slow-loris client): close it rather than hold its memory forever. A client
            # that leaves its answers unread is reset: a close would wait for it to read.
            self._idle_since = 0.0
            if self._paused:
                self.abort()
            else:
                self.close()
            return
        ex = self._current
        if ex is not None and ex.upload is not None and not ex.upload.done():
            self._check_body(ex, now)
        self._upstream.check_deadline(now)

    def _check_body(self, ex: Exchange, now: float) -> None:
        """limits.body_timeout, like nginx's client_body_timeout: how long an upload may wait
        for the client's next body byte. Time the proxy itself was not reading (an upstream
        slow to take the body, a client not reading its answers) does not count."""
        received = ex.payload.total_bytes
        if (
            ex is not self._body_exchange
            or received != self._body_received
            or self._reading_paused
            or self._buffer_paused
            or ex.payload.is_eof()
        ):
            self._body_exchange, self._body_received, self._body_since = ex, received, now
        elif now - self._body_since > self.server.body_timeout:
            self._body_exchange = None
            self._body_timed_out(ex)

    def _body_timed_out(self, ex: Exchange) -> None:
        log.info(
            "request %s: no byte of its body for %gs; connections closed",
            ex.record.request_id,
            self.server.body_timeout,
        )
        if not ex.responded:
            # RFC 9110 section 15.5.9. reply() closes the client connection (the body is
            # unread) and aborts the upstream one, never pooled with half a body in it.
            self.reply(ex, 408, {"error": "body_timeout"})
            return
        # Too late for a 408: a reset tells the client its response is cut short.
        self.release(ex, clean=False)
        self.report(ex)
        self.abort()

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
        self.reply(ex, 431, body)

    # --- WebSocket relay ------------------------------------------------------------------

    # --- ending an exchange -------------------------------------------------------------------

    def reply(
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
        self.release(ex, clean=False)
        ex.record.status = status
        ex.responded = True
        answer, ex.record.bytes_out = json_answer(
            status, body, ex.record.request_id, ex.keep_alive, extra
        )
        self.write(answer)
        self.finish(ex)

    def finish(self, ex: Exchange) -> None:
        if ex.done:
            return
        if ex.body_unread or self.server.closing or self._client_eof:
            ex.keep_alive = False
        # The response has ended; the exchange decides whether the request did too.
        self.release(ex, clean=True)
        self.report(ex)
        self._current = None
        self._idle_since = self._loop.time()
        if not ex.keep_alive:
            self._queue.clear()  # pipelined requests behind it die with the connection
            self.close(linger=ex.body_unread)
            return
        self.listed = idle = self.server.idle
        idle[self] = None
        if self._queue or self._parse_error is not None or self._buffer_paused:
            # Not from inside the upstream's data_received: the next request may take the
            # very connection that is still delivering this one. Reading held back (the
            # client ahead, maybe mid-head) goes on from there too.
            self._next_soon()

    def _next_soon(self) -> None:
        """Run _next() on the loop's next pass, once however often this is asked."""
        if not self._next_pending:
            self._next_pending = True
            self._loop.call_soon(self._next_scheduled)

    def _next_scheduled(self) -> None:
        self._next_pending = False
        self._next()

    def release(self, ex: Exchange, clean: bool) -> None:
        ex.release(self.server.pool, clean)

    def report(self, ex: Exchange) -> None:
        ex.done = True
        ex.record.duration = time.perf_counter() - ex.began
        self._report_record(ex.record)

    def _report_record(self, record: RequestRecord) -> None:
        try:
            self.server.observer(record)
        except Exception:  # an observer must never break a connection
            log.exception("request observer failed")


def _tail_size(data: bytes, body_bytes: int) -> int:
    """How many bytes at the end of ``data``, a read in which a head or a body ended, may
    belong to a head that has not: those after its last empty line (a head has none before
    it ends), and no more than what ``body_bytes`` of body leave over."""
    return max(0, min(len(data) - data.rfind(b"\r\n\r\n") - 4, len(data) - body_bytes))


def _head_size(message: RawRequestMessage) -> int:
    """The size of a parsed request head, spaces around field values aside."""
    size = len(message.method) + len(message.path) + 13  # " ", " HTTP/1.1\r\n"
    for name, value in message.raw_headers:
        size += len(name) + len(value) + 4  # ": ", "\r\n"
    return size + 2


def _joined(values: Iterable[str]) -> str | None:
    # HTTP/2 clients may split Cookie over several fields; RFC 9113 section 8.2.3 joins with "; ".
    values = list(values)
    if not values:
        return None
    return values[0] if len(values) == 1 else "; ".join(values)
