"""Clients that drive the proxy in integration tests.

:class:`CookieClient` is aiohttp's client with a cookie store of its own, so a test can see and
choose what a browser would send: by default it forgets a cookie that is expired
(``Max-Age=0``); with ``ignore_deletions=True`` it behaves like a client that ignores expiry,
keeping the cookie but still taking the emptied value. :class:`RawConnection` speaks HTTP/1.1
over a plain socket, for what a client library would normalise away: header spellings,
absolute-form and network-path targets, ``CONNECT``, ``Expect: 100-continue``, and truncated
bodies.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from tests.integration.log_watch import WATCH

#: The proxy's default cookie name (``cookie.name``).
SESSION_COOKIE = "session"


def compact(value: object) -> str:
    """JSON the way the proxy hands a session to a backend: compact, ASCII only."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)


# --- Set-Cookie -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetCookie:
    """One ``Set-Cookie`` header, split into name, value and attributes (lower-case keys)."""

    raw: str
    name: str
    value: str
    attributes: dict[str, str]

    @property
    def expired(self) -> bool:
        return self.attributes.get("max-age") == "0"

    @property
    def chunk_index(self) -> int | None:
        """``N`` for a session chunk cookie ``session.N``, else None."""
        prefix, _, index = self.name.partition(".")
        return int(index) if prefix == SESSION_COOKIE and index.isdigit() else None


def parse_set_cookie(raw: str) -> SetCookie:
    pair, *attrs = raw.split(";")
    name, _, value = pair.strip().partition("=")
    attributes: dict[str, str] = {}
    for attr in attrs:
        key, _, attr_value = attr.strip().partition("=")
        attributes[key.lower()] = attr_value
    return SetCookie(raw, name, value, attributes)


def chunk_cookies(set_cookies: Sequence[SetCookie]) -> dict[int, SetCookie]:
    """The session chunk cookies among ``set_cookies``, by index."""
    return {c.chunk_index: c for c in set_cookies if c.chunk_index is not None}


# --- aiohttp client with its own cookie store ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def set_cookies(self) -> list[SetCookie]:
        return [parse_set_cookie(v) for v in self.headers.getall("Set-Cookie", [])]


class CookieClient:
    """A synchronous facade over ``aiohttp.ClientSession`` that keeps its own cookies.

    Cookies are sent in the order they were first set, as one ``Cookie`` header. Every
    session cookie value seen is registered with the log watch.
    """

    def __init__(self, base_url: str, *, ignore_deletions: bool = False) -> None:
        self.base_url = base_url
        self.ignore_deletions = ignore_deletions
        self.cookies: dict[str, str] = {}
        self._runner = asyncio.Runner()
        self._session: aiohttp.ClientSession | None = None

    # --- cookies ----------------------------------------------------------------------------

    def cookie_header(self) -> str | None:
        if not self.cookies:
            return None
        return "; ".join(f"{name}={value}" for name, value in self.cookies.items())

    def session_chunks(self) -> dict[int, str]:
        """Session chunk cookies held now, by index (emptied ones included)."""
        out = {}
        for name, value in self.cookies.items():
            prefix, _, index = name.partition(".")
            if prefix == SESSION_COOKIE and index.isdigit():
                out[int(index)] = value
        return out

    def live_chunk_count(self) -> int:
        return sum(1 for value in self.session_chunks().values() if value)

    def take(self, set_cookies: Sequence[SetCookie]) -> None:
        for cookie in set_cookies:
            if cookie.chunk_index is not None and cookie.value:
                WATCH.sensitive(cookie.value)
            if cookie.expired and not self.ignore_deletions:
                self.cookies.pop(cookie.name, None)
            else:
                self.cookies[cookie.name] = cookie.value

    # --- requests ---------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: object = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    ) -> Reply:
        return self._runner.run(self._request(method, path, json, data, headers))

    def get(
        self, path: str, headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None
    ) -> Reply:
        return self.request("GET", path, headers=headers)

    def post(self, path: str, json: object = None, data: bytes | None = None) -> Reply:
        return self.request("POST", path, json=json, data=data)

    def whoami(self, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        """What the backend saw of a ``GET /whoami``: session, status, cookie, headers."""
        reply = self.get("/whoami", headers)
        assert reply.status == 200, reply.body[:300]
        seen: dict[str, Any] = reply.json()
        if seen["session_raw"] not in (None, "{}"):
            WATCH.sensitive(seen["session_raw"])
        return seen

    def set_session(self, session: object) -> Reply:
        WATCH.sensitive(compact(session))
        reply = self.post("/session", json=session)
        assert reply.status == 200, reply.body[:300]
        return reply

    async def _request(
        self,
        method: str,
        path: str,
        json_body: object,
        data: bytes | None,
        headers: Mapping[str, str] | Sequence[tuple[str, str]] | None,
    ) -> Reply:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=60),
            )
        all_headers: CIMultiDict[str] = CIMultiDict(headers or {})
        cookie = self.cookie_header()
        if cookie is not None and "Cookie" not in all_headers:
            all_headers["Cookie"] = cookie
        async with self._session.request(
            method, self.base_url + path, json=json_body, data=data, headers=all_headers
        ) as response:
            body = await response.read()
            reply = Reply(response.status, response.headers, body)
        self.take(reply.set_cookies)
        return reply

    # --- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        if self._session is not None:
            self._runner.run(self._session.close())
            self._session = None
        self._runner.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


# --- raw sockets ------------------------------------------------------------------------------


@dataclass(slots=True)
class RawResponse:
    status: int
    reason: str
    #: Header lines as received, in order, names spelled as sent.
    headers: list[tuple[str, str]]
    body: bytes = b""
    #: True when the body's framing (Content-Length or the last chunk) was satisfied.
    complete: bool = True
    #: How the connection ended while reading the body: "" (still open), "eof" or "reset".
    ended: str = ""
    interim: list[RawResponse] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        values = self.header_values(name)
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        lowered = name.lower()
        return [v for n, v in self.headers if n.lower() == lowered]

    def json(self) -> Any:
        return json.loads(self.body)


class RawConnection:
    """One client connection to the proxy, written and read byte by byte."""

    def __init__(self, port: int, timeout: float = 15.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self._buffer = b""
        self._eof = ""

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode("latin-1") if isinstance(data, str) else data)

    def _fill(self) -> bool:
        if self._eof:
            return False
        try:
            data = self.sock.recv(1 << 16)
        except ConnectionResetError:
            self._eof = "reset"
            return False
        if not data:
            self._eof = "eof"
            return False
        self._buffer += data
        return True

    def _read_until(self, marker: bytes) -> bytes | None:
        while marker not in self._buffer:
            if not self._fill():
                return None
        data, _, self._buffer = self._buffer.partition(marker)
        return data

    def _read_exactly(self, size: int) -> bytes:
        while len(self._buffer) < size and self._fill():
            pass
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def read_head(self) -> RawResponse:
        """Read one response head (interim 1xx responses included)."""
        head = self._read_until(b"\r\n\r\n")
        if head is None:
            raise ConnectionError(f"connection ended ({self._eof}) before a response head")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        _, status, *reason = status_line.split(" ", 2)
        headers = []
        for line in lines:
            name, _, value = line.partition(":")
            headers.append((name, value.strip()))
        return RawResponse(int(status), reason[0] if reason else "", headers)

    def read_response(self, method: str = "GET") -> RawResponse:
        """Read the next final response and its body, as its framing says."""
        interim = []
        response = self.read_head()
        while 100 <= response.status < 200 and response.status != 101:
            interim.append(response)
            response = self.read_head()
        response.interim = interim
        if method == "HEAD" or response.status in (101, 204, 304):
            return response
        encoding = (response.header("Transfer-Encoding") or "").lower()
        length = response.header("Content-Length")
        if encoding == "chunked":
            self._read_chunked(response)
        elif length is not None:
            response.body = self._read_exactly(int(length))
            response.complete = len(response.body) == int(length)
        else:
            while self._fill():
                pass
            response.body, self._buffer = self._buffer, b""
            response.complete = self._eof == "eof"
        response.ended = self._eof
        return response

    def _read_chunked(self, response: RawResponse) -> None:
        body = bytearray()
        while True:
            size_line = self._read_until(b"\r\n")
            if size_line is None:
                response.complete = False
                break
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                response.complete = self._read_until(b"\r\n") is not None  # no trailers sent
                break
            data = self._read_exactly(size + 2)
            body += data[:size]
            if len(data) < size + 2:
                response.complete = False
                break
        response.body = bytes(body)

    def wait_closed(self, timeout: float) -> str:
        """Wait for the peer to close; return "eof", "reset" or "" if still open."""
        deadline = time.monotonic() + timeout
        while not self._eof and time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                self._fill()
            except TimeoutError:
                break
        return self._eof

    def leftover(self) -> bytes:
        """Bytes received but not read as part of a response."""
        return self._buffer

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def raw_request(
    port: int,
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    host: str = "127.0.0.1",
) -> RawResponse:
    """Send one request exactly as spelled (``Connection: close`` added) and read the answer.

    ``Host`` is added first unless ``headers`` has one; ``Content-Length`` is added for a body.
    """
    lines = [f"{method} {target} HTTP/1.1"]
    if not any(name.lower() == "host" for name, _ in headers):
        lines.append(f"Host: {host}")
    lines += [f"{name}: {value}" for name, value in headers]
    if body and not any(name.lower() == "content-length" for name, _ in headers):
        lines.append(f"Content-Length: {len(body)}")
    if not any(name.lower() == "connection" for name, _ in headers):
        lines.append("Connection: close")
    with RawConnection(port) as connection:
        connection.send("\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body)
        return connection.read_response(method)


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident set size (``VmHWM``), from /proc."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")
