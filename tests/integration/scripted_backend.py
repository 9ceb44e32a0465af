"""A bare HTTP/1.1 server on a thread, for what the example backends cannot do.

It answers each path with canned bytes (odd header spellings, hop-by-hop response headers, a
gzip body), records every connection and request head that reaches it (so it can stand as an
"attacker" host that must receive nothing), on ``/hang`` never answers and on ``/endless``
sends a body that never ends, noting in both cases when the peer gives up and closes.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Self

HANG_PATH = "/hang"
ENDLESS_PATH = "/endless"
_ENDLESS_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n" + (
    b"Content-Length: 1099511627776\r\n\r\n"
)


def canned_response(
    headers: Sequence[tuple[str, str]], body: bytes = b"{}", status: str = "200 OK"
) -> bytes:
    """A complete response that closes the connection after itself."""
    lines = [f"HTTP/1.1 {status}", *(f"{name}: {value}" for name, value in headers)]
    lines += [f"Content-Length: {len(body)}", "Connection: close"]
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body


class _Recording(socket.socket):
    """A socket whose recv() also keeps what it returned."""

    def __init__(self, conn: socket.socket, into: list[bytes]) -> None:
        super().__init__(conn.family, conn.type, conn.proto, fileno=conn.detach())
        self._into = into

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        self._into.append(data)
        return data


class ScriptedBackend:
    def __init__(self, responses: Mapping[str, bytes] | None = None) -> None:
        self.responses = dict(responses or {})
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self.connections = 0
        self.heads: list[bytes] = []
        #: Every byte each finished connection received, in the order connections ended.
        self.received: list[bytes] = []
        self._active = 0
        #: Set when a /hang or /endless request has arrived, and when its connection was closed.
        self.hanging = threading.Event()
        self.hung_up = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._active += 1
            threading.Thread(target=self._serve_recorded, args=(conn,), daemon=True).start()

    def _serve_recorded(self, conn: socket.socket) -> None:
        received: list[bytes] = []
        try:
            self._serve(_Recording(conn, received))
        finally:
            with self._lock:
                self.received.append(b"".join(received))
                self._active -= 1

    def wait_idle(self, timeout: float) -> None:
        """Wait until every connection so far has ended (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        while self._active and time.monotonic() < deadline:
            time.sleep(0.01)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    piece = conn.recv(65536)
                    if not piece:
                        return
                    data += piece
            except OSError:
                return
            head = data.split(b"\r\n\r\n", 1)[0]
            with self._lock:
                self.heads.append(head)
            target = head.split(b" ", 2)[1].decode("latin-1") if b" " in head else "/"
            path = target.split("?", 1)[0]
            if path == HANG_PATH:
                self.hanging.set()
                try:
                    while conn.recv(65536):
                        pass
                except OSError:
                    pass
                self.hung_up.set()
                return
            if path == ENDLESS_PATH:
                self.hanging.set()
                try:
                    conn.sendall(_ENDLESS_HEAD)
                    while True:
                        conn.sendall(bytes(65536))
                except OSError:
                    pass
                self.hung_up.set()
                return
            response = self.responses.get(
                path,
                canned_response([("Content-Type", "text/plain")], b"no script", "404 Not Found"),
            )
            try:
                conn.sendall(response)
                conn.shutdown(socket.SHUT_WR)
                while conn.recv(65536):  # let the peer read everything before closing
                    pass
            except OSError:
                pass

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
