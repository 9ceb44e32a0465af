"""One request on its way through the proxy, and the one rule for giving its upstream back.

An upstream connection is a byte stream shared by every request that is ever sent on it. It
may serve the next client only when this request is over on *both* halves of the wire: the
proxy wrote the whole request (for a chunked upload, the ``0\\r\\n\\r\\n`` terminator too) and
read the whole response. Anything in between - an early answer while the upload still runs, an
upload task cancelled mid-body, a client gone mid-download - leaves the stream in a state the
next request would be parsed against, so the connection is closed instead. The states are
explicit flags here, and :meth:`Exchange.release` alone applies the rule.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader

from proxy.config import Upstream
from proxy.proxy_state import ProxyState
from proxy.request_record import RequestRecord
from proxy.session_exchange import Inbound
from proxy.upstream_connection import UpstreamConnection, UpstreamPool


class Exchange:
    """One request: what was parsed, what has crossed each half of the wire, what runs."""

    __slots__ = (
        "began",
        "chunked",
        "conn",
        "connecting",
        "deadline",
        "done",
        "download",
        "expect_continue",
        "head",
        "inbound",
        "keep_alive",
        "message",
        "payload",
        "record",
        "request_sent",
        "responded",
        "response_chunked",
        "retried",
        "state",
        "upload",
        "upstream",
        "websocket_key",
    )

    def __init__(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        record: RequestRecord,
        state: ProxyState,
        keep_alive: bool,
    ) -> None:
        self.message = message
        self.payload = payload
        self.record = record
        self.began = time.perf_counter()
        self.state = state
        self.upstream: Upstream | None = None
        self.inbound: Inbound | None = None
        self.head = b""
        self.chunked = False
        self.expect_continue = False
        #: The client's Sec-WebSocket-Key for a validated handshake, else "" (no tunnel).
        self.websocket_key = ""
        self.keep_alive = keep_alive
        self.conn: UpstreamConnection | None = None
        #: When the upstream's response head is overdue (loop time), or None.
        self.deadline: float | None = None
        self.connecting: asyncio.Task[None] | None = None
        self.upload: asyncio.Task[None] | None = None
        self.download: asyncio.Task[None] | None = None
        self.retried = False
        #: The whole request, head, body and chunked terminator, was written upstream.
        self.request_sent = False
        #: The client has been sent a response head (the backend's or the proxy's own).
        self.responded = False
        self.response_chunked = False
        self.done = False

    @property
    def websocket(self) -> bool:
        return bool(self.websocket_key)

    @property
    def has_body(self) -> bool:
        return self.payload is not EMPTY_PAYLOAD

    @property
    def body_unread(self) -> bool:
        return self.payload is not EMPTY_PAYLOAD and not self.payload.is_eof()

    def release(self, pool: UpstreamPool, clean: bool) -> None:
        """Stop this exchange's tasks and give up its upstream connection.

        ``clean`` says the caller saw the response end; the connection still goes back to the
        pool only if the request was wholly written too (the pool checks the response side:
        body read to its end, no error, no second response)."""
        self.deadline = None
        if self.connecting or self.upload or self.download:
            # Only then: current_task() looks up the running loop, a getpid() in CPython 3.11.
            current = asyncio.current_task()
            for task in (self.connecting, self.upload, self.download):
                if task is not None and task is not current and not task.done():
                    task.cancel()
        conn, self.conn = self.conn, None
        if conn is None:
            return
        if clean and self.request_sent:
            pool.release(conn)
        else:
            conn.abort()
