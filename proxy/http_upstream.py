"""The upstream side of the wire: pooled keep-alive HTTP/1.1 connections to the backends.

aiohttp's ``ClientSession`` does far more per request than a proxy needs (URL handling, cookie
jars, redirects, auto headers, tracing) and costs about as much as the rest of the proxy. This
module keeps only the parts a proxy needs: aiohttp's own response protocol and its C parser
(``ResponseHandler``), a pool of idle connections per upstream, and a request head written in
one piece. The request body streams with back-pressure; the response body is aiohttp's
flow-controlled ``StreamReader``.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from aiohttp.client_exceptions import ServerDisconnectedError
from aiohttp.client_proto import ResponseHandler
from aiohttp.http_parser import RawResponseMessage
from aiohttp.streams import StreamReader

#: An idle connection older than this is closed rather than reused (most servers close idle
#: keep-alive connections after 5 s to 75 s; reusing one the server has just closed fails).
IDLE_SECONDS = 4.0
MAX_IDLE_PER_UPSTREAM = 256
_READ_BUFSIZE = 2**16


class UpstreamConnectError(OSError):
    """No TCP connection could be made to the upstream."""


@dataclass(slots=True)
class UpstreamResponse:
    message: RawResponseMessage
    payload: StreamReader
    connection: _Connection
    #: The request body's upload. It may still be running when the response head is in: a
    #: backend can stream its answer while it reads (an echo, say).
    upload: asyncio.Future[None] | None = None


class _Connection:
    __slots__ = ("idle_since", "key", "protocol")

    def __init__(self, key: tuple[str, int], protocol: ResponseHandler) -> None:
        self.key = key
        self.protocol = protocol
        self.idle_since = 0.0


class UpstreamPool:
    """Keep-alive connections per (host, port). One request at a time per connection."""

    def __init__(self, max_line_size: int, max_field_size: int) -> None:
        self._idle: dict[tuple[str, int], collections.deque[_Connection]] = {}
        self._max_line_size = max_line_size
        self._max_field_size = max_field_size
        self._closed = False

    async def request(
        self,
        host: str,
        port: int,
        head: bytes,
        body: AsyncIterator[bytes] | None,
        chunked: bool,
        skip_payload: bool,
        uploaded: asyncio.Event | None = None,
        timeout: float | None = None,
    ) -> UpstreamResponse:
        """Send ``head`` (the encoded request line and headers) and the body; return once the
        response head is in. ``timeout`` counts from the end of the upload.

        A request without a body that fails on a reused connection before any response byte
        is retried once on a new connection: the server may have closed it while idle
        (RFC 9112 section 9.3.1 lets a client retry then).
        """
        key = (host, port)
        loop = asyncio.get_running_loop()
        connection, reused = self._take_idle(key, loop.time()), True
        if connection is None:
            connection, reused = await self._connect(key), False
        try:
            return await self._exchange(
                connection, head, body, chunked, skip_payload, uploaded, timeout
            )
        except ServerDisconnectedError:
            connection.protocol.close()
            if not reused or body is not None:
                raise
        connection = await self._connect(key)
        try:
            return await self._exchange(
                connection, head, None, chunked, skip_payload, uploaded, timeout
            )
        except BaseException:
            connection.protocol.close()
            raise

    async def _exchange(
        self,
        connection: _Connection,
        head: bytes,
        body: AsyncIterator[bytes] | None,
        chunked: bool,
        skip_payload: bool,
        uploaded: asyncio.Event | None,
        timeout: float | None,
    ) -> UpstreamResponse:
        protocol = connection.protocol
        protocol.set_response_params(
            skip_payload=skip_payload,
            auto_decompress=False,
            read_bufsize=_READ_BUFSIZE,
            max_line_size=self._max_line_size,
            max_field_size=self._max_field_size,
        )
        transport = protocol.transport
        if transport is None or transport.is_closing():
            raise ServerDisconnectedError()
        transport.write(head)
        upload = None
        try:
            if body is None:
                async with asyncio.timeout(timeout):
                    message, payload = await protocol.read()
            else:
                upload = asyncio.ensure_future(_upload(protocol, body, chunked))
                message, payload = await self._read_beside_upload(
                    protocol, upload, uploaded, timeout
                )
            # RFC 9110 section 15.2: interim 1xx responses (other than 101) precede the final one.
            while 100 <= message.code < 200 and message.code != 101:
                async with asyncio.timeout(timeout):
                    message, payload = await protocol.read()
        except BaseException:
            if upload is not None:
                upload.cancel()
            protocol.close()
            raise
        return UpstreamResponse(message, payload, connection, upload)

    async def _read_beside_upload(
        self,
        protocol: ResponseHandler,
        upload: asyncio.Future[None],
        uploaded: asyncio.Event | None,
        timeout: float | None,
    ) -> tuple[RawResponseMessage, StreamReader]:
        # The upload runs beside the wait for the response, and goes on after it: a backend
        # may answer (say 413) before it has read the whole body, or stream while it reads.
        reading = asyncio.ensure_future(protocol.read())
        try:
            await asyncio.wait((upload, reading), return_when=asyncio.FIRST_COMPLETED)
            if upload.done() and upload.exception() is not None and not reading.done():
                raise upload.exception()  # type: ignore[misc]
            if uploaded is not None:
                uploaded.set()
            return await asyncio.wait_for(reading, timeout)
        finally:
            if not reading.done():
                reading.cancel()

    def _take_idle(self, key: tuple[str, int], now: float) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            protocol = connection.protocol
            if now - connection.idle_since < IDLE_SECONDS and protocol.is_connected():
                return connection
            protocol.close()
        return None

    async def _connect(self, key: tuple[str, int]) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await loop.create_connection(
                lambda: ResponseHandler(loop), key[0], key[1]
            )
        except OSError as exc:
            raise UpstreamConnectError(exc.errno, str(exc)) from None
        return _Connection(key, protocol)

    def release(self, response: UpstreamResponse) -> None:
        """Return the connection to the pool if the response ended cleanly, else close it."""
        connection = response.connection
        protocol = connection.protocol
        upload = response.upload
        if upload is not None and not upload.done():
            upload.cancel()  # the response ended first; the request was never sent whole
        body_sent = upload is None or (
            upload.done() and not upload.cancelled() and upload.exception() is None
        )
        if (
            not body_sent
            or self._closed
            or response.message.should_close
            or protocol.should_close
            or not response.payload.is_eof()
            or not protocol.is_connected()
        ):
            protocol.close()
            return
        idle = self._idle.setdefault(connection.key, collections.deque())
        if len(idle) >= MAX_IDLE_PER_UPSTREAM:
            protocol.close()
            return
        connection.idle_since = asyncio.get_running_loop().time()
        idle.append(connection)

    def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            while idle:
                idle.pop().protocol.close()


async def _upload(protocol: ResponseHandler, body: AsyncIterator[bytes], chunked: bool) -> None:
    transport = protocol.transport
    async for chunk in body:
        if transport is None or transport.is_closing():
            raise ServerDisconnectedError()
        if chunked:
            # RFC 9112 section 7.1: chunk-size in hex, CRLF, data, CRLF.
            transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        else:
            transport.write(chunk)
        if protocol.writing_paused:
            await protocol._drain_helper()
    if chunked and transport is not None and not transport.is_closing():
        transport.write(b"0\r\n\r\n")


def encode_head(method: str, target: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """The request line and header section, ready for the wire (RFC 9112 sections 3 and 5).

    Values come from aiohttp's parser or from the proxy itself, so they hold no CR or LF;
    ``surrogateescape`` gives back any non-UTF-8 bytes the client sent, unchanged.
    """
    lines = [f"{method} {target} HTTP/1.1"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    lines.append("\r\n")
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")
