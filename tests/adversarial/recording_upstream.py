"""A raw upstream on 127.0.0.1 that keeps every byte of every connection it accepts.

It parses requests with :mod:`tests.adversarial.strict_http` and answers each one with JSON
naming it (``{"id": <?id= of the target>, "target", "method", "conn", "index"}``), so a client
can tell whether a response is its own. Anything the strict parser refuses closes the
connection and is kept in :attr:`Connection.rejected`: the proxy sent bytes that two parsers
could read differently. A ``?respond=<name>`` in the target picks a canned behaviour from
:data:`BEHAVIOURS` (an unsolicited 101, an early answer, a reset, ...).

API, for the suite and the lead's modules::

    with RecordingUpstream() as upstream:          # .port, .url
        ...
        upstream.wait_idle(5)
        upstream.requests()                        # every parsed request (strict_http.Message)
        upstream.targets()                         # their targets, in order
        upstream.request_to("/x?id=1")             # the one request for that target
        upstream.all_bytes()                       # every byte of every connection
        upstream.rejections()                      # reasons the strict parser closed a connection
        assert_clean(upstream, MARKER)             # the invariants below
        upstream.reset()                           # forget everything seen so far
"""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, Self
from urllib.parse import parse_qs, urlsplit

from tests.adversarial.strict_http import Ambiguous, Incomplete, Message, parse_head, parse_message

#: The folded spelling (lower-case, non-alphanumerics removed) of every header the proxy owns.
OWNED_FOLDED: Final = frozenset({"xsession", "xsessionstatus", "xsetsession", "xpatchsession"})
#: What the proxy itself writes: its own X-Session and X-Session-Status, in this spelling.
PROXY_WRITTEN: Final = frozenset({b"X-Session", b"X-Session-Status"})
_CHUNK_COOKIE: Final = re.compile(rb"(?:^|[;,\s\"])session\.[0-9]+\s*=", re.IGNORECASE)


def fold(name: bytes | str) -> str:
    text = name.decode("latin-1") if isinstance(name, bytes) else name
    return re.sub(r"[^0-9a-z]", "", text.lower())


def _json_response(
    payload: dict[str, object], status: str = "200 OK", close: bool = False, extra: str = ""
) -> bytes:
    body = json.dumps(payload).encode()
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    if close:
        head += "Connection: close\r\n"
    return head.encode() + extra.encode("latin-1") + b"\r\n" + body


Responder = Callable[["Connection", Message, dict[str, object]], bytes | None]


def _early(conn: Connection, request: Message, payload: dict[str, object]) -> bytes:
    return _json_response({**payload, "early": True})


def _unsolicited_101(conn: Connection, request: Message, payload: dict[str, object]) -> bytes:
    conn.tunnelled = True  # from here on the connection is raw bytes: only recorded
    return b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


def _set_session(conn: Connection, request: Message, payload: dict[str, object]) -> bytes:
    """``?respond=set-session&session=<json>``: the backend sets that session."""
    session = parse_qs(urlsplit(request.target).query).get("session", ["{}"])[0]
    return _json_response(payload, extra=f"X-Set-Session: {session}\r\n")


def _reset(conn: Connection, request: Message, payload: dict[str, object]) -> None:
    conn.reset_now = True
    return None


#: Canned behaviours selected with ``?respond=<name>``. An early answer is written as soon as
#: the head is parsed, before the body (see :meth:`RecordingUpstream._serve`).
BEHAVIOURS: Final[dict[str, Responder]] = {
    "early": _early,
    "early413": lambda c, r, p: _json_response({**p, "early": True}, "413 Payload Too Large"),
    "101": _unsolicited_101,
    "reset": _reset,
    "set-session": _set_session,
}


@dataclass(slots=True)
class Connection:
    number: int
    received: bytearray = field(default_factory=bytearray)
    requests: list[Message] = field(default_factory=list)
    #: reset() hides what came before these offsets (the serving thread keeps its place).
    first_request: int = 0
    first_byte: int = 0
    rejected: str | None = None
    tunnelled: bool = False
    reset_now: bool = False
    closed: bool = False


class RecordingUpstream:
    def __init__(self, responder: Responder | None = None, read_timeout: float = 30.0) -> None:
        self.responder = responder
        self.read_timeout = read_timeout
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self.connections: list[Connection] = []
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    # --- what was seen ------------------------------------------------------------------------

    def requests(self) -> list[Message]:
        with self._lock:
            return [r for c in self.connections for r in c.requests[c.first_request :]]

    def targets(self) -> list[str]:
        return [r.target for r in self.requests()]

    def request_to(self, target: str, timeout: float = 5.0) -> Message:
        """The one request that came for ``target`` (give each request a unique ``?id=``)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.requests() if r.target == target]
            if found or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert len(found) == 1, f"{len(found)} requests for {target}"
        return found[0]

    def all_bytes(self) -> bytes:
        with self._lock:
            return b"".join(bytes(c.received[c.first_byte :]) for c in self.connections)

    def rejections(self) -> list[str]:
        with self._lock:
            return [
                f"conn {c.number}: {c.rejected} after {bytes(c.received[-200:])!r}"
                for c in self.connections
                if c.rejected
            ]

    def reset(self) -> None:
        with self._lock:
            for c in self.connections:
                c.first_request, c.first_byte = len(c.requests), len(c.received)
                if c.closed:
                    c.rejected = None
                    c.tunnelled = False

    def wait_idle(self, timeout: float) -> None:
        """Wait until no connection has received a byte for a short while (bounded)."""
        deadline = time.monotonic() + timeout
        last = -1
        while time.monotonic() < deadline:
            size = len(self.all_bytes())
            if size == last:
                return
            last = size
            time.sleep(0.05)

    # --- serving ------------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stopped:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                conn = Connection(len(self.connections) + 1)
                self.connections.append(conn)
            threading.Thread(target=self._serve_closing, args=(sock, conn), daemon=True).start()

    def _serve_closing(self, sock: socket.socket, conn: Connection) -> None:
        try:
            with sock:
                sock.settimeout(self.read_timeout)
                self._serve(sock, conn)
        except OSError:
            pass
        finally:
            conn.closed = True

    def _recv(self, sock: socket.socket, conn: Connection) -> bool:
        data = sock.recv(65536)
        if not data:
            return False
        with self._lock:
            conn.received += data
        return True

    def _serve(self, sock: socket.socket, conn: Connection) -> None:
        offset = 0
        while True:
            if conn.tunnelled:
                while self._recv(sock, conn):
                    pass
                return
            early_sent = False
            while True:
                data = bytes(conn.received[offset:])
                try:
                    request, used = parse_message(data, response=False)
                    break
                except Incomplete:
                    early_sent = early_sent or self._maybe_early(sock, conn, data)
                    if not self._recv(sock, conn):
                        return
                except Ambiguous as error:
                    conn.rejected = str(error)
                    return
            offset += used
            with self._lock:
                conn.requests.append(request)
            if early_sent:
                if not request.keep_alive:
                    return
                continue
            response = self._respond(conn, request)
            if conn.reset_now:
                if response:  # a partial answer, then the reset
                    sock.sendall(response)
                    time.sleep(0.01)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            if response is not None:
                sock.sendall(response)
            if not request.keep_alive:
                sock.shutdown(socket.SHUT_WR)
                while self._recv(sock, conn):
                    pass
                return

    def _payload(self, conn: Connection, request: Message) -> tuple[dict[str, object], str]:
        query = parse_qs(urlsplit(request.target).query)
        payload: dict[str, object] = {
            "id": query.get("id", [None])[0],
            "target": request.target,
            "method": request.start[0].decode("latin-1"),
            "conn": conn.number,
            "index": len(conn.requests),
            "bytes": len(request.body),
        }
        return payload, query.get("respond", [""])[0]

    def _maybe_early(self, sock: socket.socket, conn: Connection, data: bytes) -> bool:
        """Answer ``?respond=early*`` once its head is in, before its body has arrived."""
        try:
            head, _ = parse_head(data, response=False)
        except (Incomplete, Ambiguous):
            return False
        payload, behaviour = self._payload(conn, head)
        if behaviour == "reset-early":  # the head is in, the body is not: reset mid-upload
            conn.reset_now = True
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            return True
        if not behaviour.startswith("early"):
            return False
        sock.sendall(BEHAVIOURS[behaviour](conn, head, payload) or b"")
        return True

    def _respond(self, conn: Connection, request: Message) -> bytes | None:
        payload, behaviour = self._payload(conn, request)
        if self.responder is not None:
            answer = self.responder(conn, request, payload)
            if answer is not None:
                return answer
        if behaviour in BEHAVIOURS:
            return BEHAVIOURS[behaviour](conn, request, payload)
        if request.start[0] == b"HEAD":
            return _json_response(payload).split(b"\r\n\r\n")[0] + b"\r\n\r\n"
        return _json_response(payload)

    def stop(self) -> None:
        self._stopped = True
        self._listener.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


# --- the invariants ----------------------------------------------------------------------------


def violations(upstream: RecordingUpstream, marker: str) -> list[str]:
    """Every way what reached ``upstream`` breaks the suite's invariants:

    - the strict parser refused bytes (the proxy sent something ambiguous);
    - an owned header, in any spelling, arrived other than as the proxy's own X-Session /
      X-Session-Status, or more than once, or carrying ``marker`` (a client-forged value);
    - a ``session.N`` chunk cookie arrived;
    - ``marker`` appears in a head or trailer, or anywhere in bytes no request was parsed from.
    """
    found = [f"rejected: {r}" for r in upstream.rejections()]
    token = marker.encode()
    for request in upstream.requests():
        seen: dict[str, int] = {}
        for name, value in [*request.headers, *request.trailers]:
            folded = fold(name)
            where = f"{request.target}: {name!r}"
            if folded in OWNED_FOLDED:
                seen[folded] = seen.get(folded, 0) + 1
                if name not in PROXY_WRITTEN or (name, value) in request.trailers:
                    found.append(f"{where} owned header arrived in a client spelling")
            if token in value or token in name:
                found.append(f"{where} carries the client's forged marker")
            if name.lower() == b"cookie" and _CHUNK_COOKIE.search(b" " + value):
                found.append(f"{where} a session.N cookie was forwarded")
        found += [f"{request.target}: {n} copies of {f}" for f, n in seen.items() if n > 1]
    with upstream._lock:
        for conn in upstream.connections:
            received = bytes(conn.received[conn.first_byte :])
            if token in received and not _only_in_bodies(conn, token):
                found.append(f"conn {conn.number}: marker outside any parsed body")
    return found


def _only_in_bodies(conn: Connection, token: bytes) -> bool:
    """True when every copy of ``token`` in the connection lies inside a parsed body."""
    total = bytes(conn.received[conn.first_byte :]).count(token)
    in_bodies = sum(r.body.count(token) for r in conn.requests[conn.first_request :])
    return total == in_bodies


def assert_clean(upstream: RecordingUpstream, marker: str) -> None:
    problems = violations(upstream, marker)
    assert not problems, "\n".join(problems)
