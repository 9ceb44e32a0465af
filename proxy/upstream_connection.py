"""Connections to the upstreams: keep-alive HTTP/1.1, one exchange at a time, pooled.

Each connection is an asyncio protocol with aiohttp's C response parser (llhttp). Events go
straight to the client connection that owns the exchange (:class:`UpstreamOwner`); no task
runs per request. After a ``101 Switching Protocols`` that the owner has checked and accepted
(:meth:`UpstreamConnection.open_tunnel`), the connection becomes a byte tunnel.

A response head is bounded in total, not only per field: 128 fields of just under the field
limit would otherwise be a 16 MB head held in memory and relayed to the client.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
from typing import Protocol

from aiohttp.base_protocol import BaseProtocol
from aiohttp.client_exceptions import ClientPayloadError
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.http_parser import HttpResponseParser, RawResponseMessage
from aiohttp.streams import StreamReader

from proxy.config import Upstream
from proxy.upstream_errors import describe

#: An idle connection older than this is closed rather than reused. Servers close idle
#: keep-alive connections after 5 s (Node.js) to 75 s (nginx); reusing one the server is
#: closing at that moment fails, so stay under the shortest common default.
IDLE_SECONDS = 4.0
MAX_IDLE_PER_UPSTREAM = 256
_READ_LIMIT = 2**16


class UpstreamOwner(Protocol):
    """What a client connection hears from the upstream connection serving its request."""

    def upstream_response(self, message: RawResponseMessage, payload: StreamReader) -> None: ...

    def upstream_failed(
        self, kind: str, sizes: tuple[int, int] | None = None, detail: str = ""
    ) -> None:
        """``kind`` is a cause of :mod:`proxy.upstream_errors` (reset, bad_response or
        header_too_large from here); for the last, ``sizes`` is (bytes received for the head,
        the limit). ``detail`` says more for the log, never in the upstream's own bytes."""

    def tunnel_data(self, data: bytes) -> None: ...

    def tunnel_closed(self) -> None: ...

    def tunnel_pause(self, pause: bool) -> None: ...


class UpstreamConnection(BaseProtocol):
    """One TCP connection to an upstream."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        key: tuple[str, int, bool],
        limits: tuple[int, int, int],
    ) -> None:
        super().__init__(loop)
        self.key = key
        self.owner: UpstreamOwner | None = None
        self.idle_since = 0.0
        self.reused = False
        self.tunnel = False
        self._limits = limits
        self._response_parser: HttpResponseParser | None = None
        self._parses_head = False
        self._payload: StreamReader | None = None
        self._responded = False
        self._broken = False
        #: The last response was chunked: its trailers may be in the parser (see start()).
        self._after_chunked = False
        #: Bytes received since the request was sent, until its final response head.
        self._head_bytes = 0

    # --- one exchange -----------------------------------------------------------------------

    def start(self, owner: UpstreamOwner, head_request: bool) -> None:
        """Prepare for a new request from ``owner``; the caller then writes the request."""
        self.owner = owner
        self._responded = False
        self._payload = None
        self._head_bytes = 0
        # aiohttp's C parser (3.14) carries a chunked message's trailer fields into the next
        # message's headers: a backend's trailing Set-Cookie would reach the next client. A
        # parser that read a chunked response is never used again.
        fresh = self._response_parser is None or self._after_chunked
        if not fresh and self._parses_head == head_request:
            return  # a pooled connection ended its last exchange cleanly: the parser is ready
        self._after_chunked = False
        self._parses_head = head_request
        self._response_parser = HttpResponseParser(
            self,
            self._loop,
            _READ_LIMIT,
            response_with_body=not head_request,
            # RFC 9112 section 6.3: no Content-Length and not chunked -> read until close.
            read_until_eof=True,
            auto_decompress=False,
            max_line_size=self._limits[0],
            max_field_size=self._limits[1],
        )
        self._parser = self._response_parser  # for BaseProtocol's flow control

    def write(self, data: bytes) -> bool:
        """Write to the upstream; False if the connection is already gone."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        transport.write(data)
        return True

    @property
    def reusable(self) -> bool:
        return (
            not self._broken
            and not self.tunnel
            and self._payload is not None
            and self._payload.is_eof()
            and self._payload.exception() is None
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        if self.tunnel:
            if owner is not None:
                owner.tunnel_data(data)
            return
        if owner is None or self._response_parser is None:
            self._broken = True  # data while idle: the stream is out of step; never reuse
            self.close()
            return
        limit = self._limits[2]
        if not self._responded:
            self._head_bytes += len(data)
        try:
            messages, upgraded, tail = self._response_parser.feed_data(data)
        except HttpProcessingError as exc:
            self._broken = True
            self.close()
            if not self._responded:
                self._responded = True
                if isinstance(exc, LineTooLong):
                    field_limit = exc.args[1] if isinstance(exc.args[1], int) else 0
                    sizes = (self._head_bytes, field_limit or self._limits[1])
                    owner.upstream_failed("header_too_large", sizes)
                else:
                    # The class only (BadStatusLine, InvalidHeader): its message quotes the
                    # upstream's bytes, which may hold a cookie.
                    owner.upstream_failed("bad_response", detail=type(exc).__name__)
            return
        for message, payload in messages:
            if 100 <= message.code < 200 and message.code != 101:
                continue  # RFC 9110 section 15.2: interim responses precede the final one
            if self._responded:
                self._broken = True  # a second response to one request: never reuse
                continue
            self._responded = True
            self._payload = payload
            self._after_chunked = message.chunked
            # Cheap first: only a response whose bytes so far exceed the limit can have a head
            # that does; then measure the head itself (RFC 9112 section 2.1 field lines).
            if self._head_bytes > limit and (size := _head_size(message)) > limit:
                self._broken = True
                self.close()
                owner.upstream_failed("header_too_large", (size, limit))
                return
            if message.should_close:
                self._broken = True
            owner.upstream_response(message, payload)
        if not self._responded and self._head_bytes > limit:
            self._responded = True
            self._broken = True
            self.close()
            owner.upstream_failed("header_too_large", (self._head_bytes, limit))
            return
        if upgraded and self.tunnel and tail and self.owner is owner:
            owner.tunnel_data(tail)

    def open_tunnel(self) -> None:
        """The owner checked this connection's 101 and accepted it: relay bytes from now on."""
        self.tunnel = True
        self._upgraded = True  # flow control now pauses the socket, not a parser

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self._broken = True
        owner, self.owner = self.owner, None
        payload = self._payload
        if self._response_parser is not None and payload is not None and not payload.is_eof():
            with contextlib.suppress(HttpProcessingError):
                self._response_parser.feed_eof()  # completes a read-until-close body
            if not payload.is_eof():
                payload.set_exception(ClientPayloadError("upstream closed mid-body"))
        if owner is None:
            return
        if self.tunnel:
            owner.tunnel_closed()
        elif not self._responded:
            detail = describe(exc) if exc is not None else "closed before a response head"
            owner.upstream_failed("reset", detail=detail)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.tunnel and self.owner is not None:
            self.owner.tunnel_pause(True)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.tunnel and self.owner is not None:
            self.owner.tunnel_pause(False)

    async def drain(self) -> None:
        if self._paused:
            await self._drain_helper()

    def close(self) -> None:
        self._broken = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self._broken = True
        self.owner = None
        if self.transport is not None:
            self.transport.abort()


def _head_size(message: RawResponseMessage) -> int:
    """The response head's size on the wire, near enough: status line and field lines."""
    size = len(message.reason) + 15
    for name, value in message.raw_headers:
        size += len(name) + len(value) + 4
    return size


class UpstreamPool:
    """Idle keep-alive connections per upstream; new ones made on demand."""

    def __init__(self, max_line_size: int, max_field_size: int, max_head_size: int) -> None:
        #: Made inside the worker's loop; kept, since get_running_loop() costs a syscall.
        self._loop = asyncio.get_running_loop()
        self._idle: dict[tuple[str, int, bool], collections.deque[UpstreamConnection]] = {}
        self._limits = (max_line_size, max_field_size, max_head_size)
        self._tls: ssl.SSLContext | None = None  # made on first use: it reads the CA store
        self.closed = False

    @staticmethod
    def key(upstream: Upstream) -> tuple[str, int, bool]:
        return (upstream.host, upstream.port, upstream.scheme == "https")

    def take_idle(self, key: tuple[str, int, bool]) -> UpstreamConnection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        now = self._loop.time()
        while idle:
            connection = idle.pop()
            transport = connection.transport
            if (
                now - connection.idle_since < IDLE_SECONDS
                and transport is not None
                and not transport.is_closing()
            ):
                connection.reused = True
                return connection
            connection.close()
        return None

    async def connect(self, key: tuple[str, int, bool]) -> UpstreamConnection:
        """A new connection; raises OSError when the upstream cannot be reached."""
        loop = self._loop
        host, port, tls = key
        if tls and self._tls is None:
            self._tls = ssl.create_default_context()
        _, connection = await loop.create_connection(
            lambda: UpstreamConnection(loop, key, self._limits),
            host,
            port,
            ssl=self._tls if tls else None,
            server_hostname=host if tls else None,
        )
        return connection

    def release(self, connection: UpstreamConnection) -> None:
        """Keep the connection for the next request if its exchange ended cleanly."""
        connection.owner = None
        if self.closed or not connection.reusable:
            connection.close()
            return
        idle = self._idle.setdefault(connection.key, collections.deque())
        if len(idle) >= MAX_IDLE_PER_UPSTREAM:
            connection.close()
            return
        connection.idle_since = self._loop.time()
        idle.append(connection)

    def close(self) -> None:
        self.closed = True
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
