"""Raw-socket attackers for the bounds tests: connections that send a request head (often an
unfinished one) and then hold the socket open, recording what the proxy did with each.

API::

    with HeldConnections(port, count=24, data=head_bytes) as held:   # one thread each
        held.wait_sent(10)                 # every sender done (or stopped by the proxy)
        held.replies()                     # what each connection got back so far
    reply, ended = send_while_reading(port, data)  # one connection: send all, read meanwhile

Helpers build the heads: :func:`head_of_fields` (many large fields), :func:`cookie_lines`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType
from typing import Self

#: A field value this long fits under the proxy's default limits.max_header_bytes (128 KiB).
LARGE_FIELD = 130_000


def head_of_fields(count: int, size: int, target: str = "/held", finished: bool = True) -> bytes:
    """A GET head with ``count`` filler fields of ``size`` bytes each; without its final empty
    line when ``finished`` is False (the head never ends)."""
    start = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
    fields = b"".join(b"X-Filler-%04d: %s\r\n" % (i, b"f" * size) for i in range(count))
    return start + fields + (b"\r\n" if finished else b"")


def cookie_lines(lines: int, line_bytes: int, extra: str = "") -> list[tuple[str, str]]:
    """``lines`` Cookie fields, each about ``line_bytes`` of tiny pairs ``a0=1; a1=1; ...``
    (``extra`` is added to the first line, e.g. a chunk cookie that makes the proxy split)."""
    pairs: list[str] = []
    size = 0
    while size < line_bytes:
        pair = f"a{len(pairs)}=1"
        pairs.append(pair)
        size += len(pair) + 2
    line = "; ".join(pairs)
    return [("Cookie", f"{extra}; {line}" if extra and i == 0 else line) for i in range(lines)]


def request_bytes(target: str, headers: list[tuple[str, str]], close: bool = True) -> bytes:
    lines = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _read_all(sock: socket.socket, into: bytearray, timeout: float) -> str:
    """Read until the peer ends the connection; return "eof", "reset" or "" (timed out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(1 << 16)
        except TimeoutError:
            return ""
        except OSError:
            return "reset"
        if not data:
            return "eof"
        into += data
    return ""


def send_while_reading(port: int, data: bytes, timeout: float = 15.0) -> tuple[bytes, str]:
    """Send ``data`` on a new connection from one thread while another reads: a client that
    reads the answer while it is still sending. Returns what came back and how it ended."""
    reply = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:

        def send() -> None:
            with contextlib.suppress(OSError):  # the proxy closed: expected past a limit
                sock.sendall(data)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        ended = _read_all(sock, reply, timeout)
        sender.join(timeout)
    return bytes(reply), ended


class HeldConnections:
    """``count`` connections, each sending ``data`` from its own thread and then holding the
    socket open (reading whatever comes back) until the block ends."""

    def __init__(self, port: int, count: int, data: bytes, connect_timeout: float = 10.0) -> None:
        self.port = port
        self.data = data
        self.socks: list[socket.socket] = []
        self._replies = [bytearray() for _ in range(count)]
        self._ended = [""] * count
        self._sent = [threading.Event() for _ in range(count)]
        self._stop = threading.Event()
        self._threads = []
        for i in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=connect_timeout)
            self.socks.append(sock)
            thread = threading.Thread(target=self._run, args=(i, sock), daemon=True)
            self._threads.append(thread)

    def _run(self, i: int, sock: socket.socket) -> None:
        reader = threading.Thread(target=self._read, args=(i, sock), daemon=True)
        reader.start()
        with contextlib.suppress(OSError):
            sock.sendall(self.data)
        self._sent[i].set()
        reader.join()

    def _read(self, i: int, sock: socket.socket) -> None:
        while not self._stop.is_set() and not self._ended[i]:
            self._ended[i] = _read_all(sock, self._replies[i], 0.2)

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def wait_sent(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(event.wait(max(0.0, deadline - time.monotonic())) for event in self._sent)

    def replies(self) -> list[bytes]:
        return [bytes(reply) for reply in self._replies]

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        for sock in self.socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(5)
