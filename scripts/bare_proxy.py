"""The floor for ``make bench``: a bare HTTP/1.1 reverse proxy on the sidecar's own stack.

It does only what every proxy on uvloop and aiohttp's C parsers must do: parse each request and
response head with those parsers, forward the heads as bytes, frame bodies by Content-Length,
and keep connections to the one upstream alive in a pool. Nothing else: no header hygiene, no
sessions, no log, no limits, no timeouts, no chunked bodies, no HEAD. A benchmark reference,
never a server to put in front of anything.

    python scripts/bare_proxy.py LISTEN_PORT UPSTREAM_PORT [WORKERS]
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections import deque
from typing import Any

import uvloop
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_parser import HttpRequestParser, HttpResponseParser

LIMIT = 1 << 16
FIELD = 1 << 17  # 40 KB session cookies arrive in one Cookie field


def head(first: bytes, raw_headers: tuple[tuple[bytes, bytes], ...]) -> bytes:
    return first + b"".join(b"%s: %s\r\n" % field for field in raw_headers) + b"\r\n"


class Upstream(BaseProtocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, client: Client) -> None:
        super().__init__(loop)
        self.client: Client | None = client
        self._parser = HttpResponseParser(
            self, loop, LIMIT, max_field_size=FIELD, read_until_eof=True, auto_decompress=False
        )

    def data_received(self, data: bytes) -> None:
        for message, payload in self._parser.feed_data(data)[0]:
            if self.client is not None:
                self.client.respond(self, message, payload)

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        if self in POOL:
            POOL.remove(self)
        if self.client is not None and self.client.transport is not None:
            self.client.transport.close()


class Client(BaseProtocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, upstream_port: int) -> None:
        super().__init__(loop)
        self.upstream_port = upstream_port
        self._parser = HttpRequestParser(
            self, loop, LIMIT, max_field_size=FIELD, auto_decompress=False
        )
        self.queue: deque[tuple[Any, Any]] = deque()
        self.busy = False
        self.keep_alive = True

    def data_received(self, data: bytes) -> None:
        self.queue.extend(self._parser.feed_data(data)[0])
        if not self.busy:
            self.next()

    def next(self) -> None:
        if not self.queue or self.transport is None:
            self.busy = False
            return
        self.busy = True
        message, payload = self.queue.popleft()
        self.keep_alive = not message.should_close
        first = f"{message.method} {message.path} HTTP/1.1\r\n".encode("latin-1")
        data = head(first, message.raw_headers)
        if POOL:
            upstream = POOL.pop()
            upstream.client = self
            self.send(upstream, data, payload)
        else:
            self._loop.create_task(self.connect(data, payload))

    async def connect(self, data: bytes, payload: Any) -> None:
        _, upstream = await self._loop.create_connection(
            lambda: Upstream(self._loop, self), "127.0.0.1", self.upstream_port
        )
        self.send(upstream, data, payload)

    def send(self, upstream: Upstream, data: bytes, payload: Any) -> None:
        assert upstream.transport is not None
        if payload.is_eof():
            upstream.transport.write(data + payload.read_nowait(-1))
        else:
            upstream.transport.write(data)
            self._loop.create_task(relay(payload, upstream.transport))

    def respond(self, upstream: Upstream, message: Any, payload: Any) -> None:
        if self.transport is None:  # the client went away first
            upstream.client = None
            if upstream.transport is not None:
                upstream.transport.close()
            return
        first = b"HTTP/1.1 %d %s\r\n" % (message.code, message.reason.encode("latin-1"))
        data = head(first, message.raw_headers)
        if payload.is_eof():
            self.transport.write(data + payload.read_nowait(-1))
            self.done(upstream, message.should_close)
        else:
            self.transport.write(data)
            task = self._loop.create_task(relay(payload, self.transport))
            task.add_done_callback(lambda _: self.done(upstream, message.should_close))

    def done(self, upstream: Upstream, upstream_closes: bool) -> None:
        upstream.client = None
        if upstream_closes and upstream.transport is not None:
            upstream.transport.close()
        else:
            POOL.append(upstream)
        if not self.keep_alive and self.transport is not None:
            self.transport.close()
        self.next()


async def relay(payload: Any, transport: asyncio.Transport) -> None:
    while chunk := await payload.readany():
        transport.write(chunk)


async def serve(listener: socket.socket, upstream_port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_server(lambda: Client(loop, upstream_port), sock=listener, backlog=1024)
    await asyncio.Event().wait()


#: Idle keep-alive connections to the upstream (one worker process each).
POOL: list[Upstream] = []

if __name__ == "__main__":
    listen_port, upstream_port = int(sys.argv[1]), int(sys.argv[2])
    sock = socket.create_server(("127.0.0.1", listen_port), backlog=1024)
    for _ in range(int(sys.argv[3]) - 1 if len(sys.argv) > 3 else 0):
        if os.fork() == 0:
            break  # a worker: all of them accept on the one socket, as the sidecar's do
    uvloop.run(serve(sock, upstream_port))
