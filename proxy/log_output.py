"""Standard output and standard error that never block the event loop.

A log line must never stall a request: when the reader of stdout or stderr stops (a stuck log
shipper, a full pipe), lines wait in a bounded buffer, are written as the pipe drains, and once
the buffer is full they are dropped and counted (``session_sidecar_log_lines_dropped_total``).
The first drop of an episode is reported on the process log, and so is the recovery, with the
number of lines lost.

How the descriptor is made non-blocking depends on what it is. A pipe or terminal is opened
again through ``/proc/self/fd`` with ``O_NONBLOCK``: a new open file description, so the flag
does not leak to the shell or to other processes sharing the original one. A regular file never
blocks for long and is written as it is. A socket cannot be reopened, so its shared
description is made non-blocking.

Each ``write`` is one ``write(2)`` of at most PIPE_BUF bytes (atomic on a pipe, so processes
sharing it never interleave inside a line), or no system call at all while lines are queued.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import select
import stat
import threading
import time
from typing import Final

#: Bytes a stream may hold back while its reader is stalled; beyond this, lines are dropped.
BUFFER_BYTES: Final = 256 * 1024
#: How long :meth:`LogOutput.close` keeps trying to write what is queued.
CLOSE_SECONDS: Final = 1.0
_PIPE_BUF: Final = select.PIPE_BUF

log = logging.getLogger("session_sidecar.log_output")


class LogOutput:
    """One output stream (``stdout`` or ``stderr``): non-blocking writes, bounded, counted."""

    def __init__(self, fd: int, name: str, buffer_bytes: int = BUFFER_BYTES) -> None:
        self.name = name
        self.fd = _nonblocking(fd)
        self._limit = buffer_bytes
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Lines dropped since the process started, and since metrics last took them.
        self.dropped = 0
        self._untaken = 0
        self._dropping = 0  # lines dropped in the current episode
        self._broken = False
        #: Reports made while the lock was held, sent once it is released (the report may
        #: come back to this very stream through the stderr handler).
        self._notices: list[str] = []

    def write(self, text: str) -> None:
        """Write whole lines (at most PIPE_BUF bytes keep them atomic); never blocks."""
        data = text.encode("utf-8", "replace")
        with self._lock:
            if self._queue and not self._armed():
                self._drain_locked()  # nothing else will drain it: try before queueing more
            if self._queue or not self._write_now(data):
                self._hold(data)
        if self._notices:
            self._send_notices()

    def take_dropped(self) -> int:
        """Lines dropped since the last call (for the metrics)."""
        with self._lock:
            taken, self._untaken = self._untaken, 0
        return taken

    def close(self, timeout: float = CLOSE_SECONDS) -> None:
        """Write what is queued, waiting at most ``timeout`` for a stalled reader."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._disarm()
            while self._queue and not self._broken:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                with contextlib.suppress(OSError, ValueError):
                    select.select([], [self.fd], [], left)
                self._drain_locked()
        self._notices.clear()  # too late to report: the process is exiting

    def _drain(self) -> None:
        with self._lock:
            self._drain_locked()
        if self._notices:
            self._send_notices()

    def _send_notices(self) -> None:
        with self._lock:
            notices, self._notices = self._notices, []
        for notice in notices:
            _report(notice)

    # --- internals (called with the lock held) ----------------------------------------------

    def _hold(self, data: bytes) -> None:
        """Queue ``data`` behind what waits already, or drop it if the queue is full."""
        if self._queued + len(data) <= self._limit:
            self._queue.append(data)
            self._queued += len(data)
            self._arm()
            return
        lines = self._count_dropped(data)
        if not self._dropping:
            self._notices.append(
                f"{self.name} is not being read: dropping log lines until it drains "
                f'(counted in session_sidecar_log_lines_dropped_total{{stream="{self.name}"}})'
            )
        self._dropping += lines

    def _write_now(self, data: bytes) -> bool:
        """Write ``data`` at once; False if the stream is full (nothing written)."""
        if self._broken:
            self._count_dropped(data)  # a closed stdout: nothing to wait for
            return True
        try:
            written = os.write(self.fd, data)
        except BlockingIOError:
            return False
        except OSError as exc:
            self._broken = True
            self._notices.append(
                f"cannot write to {self.name}: {exc.strerror or exc}; its lines are dropped"
            )
            return True
        if written < len(data):  # only above PIPE_BUF: keep the rest, in order
            self._queue.appendleft(data[written:])
            self._queued += len(data) - written
            self._arm()
        return True

    def _count_dropped(self, data: bytes) -> int:
        lines = data.count(b"\n") or 1
        self.dropped += lines
        self._untaken += lines
        return lines

    def _drain_locked(self) -> None:
        while self._queue:
            data = self._queue.popleft()
            self._queued -= len(data)
            if not self._write_now(data):
                self._queue.appendleft(data)
                self._queued += len(data)
                return
        self._disarm()
        if self._dropping:
            lost, self._dropping = self._dropping, 0
            self._notices.append(
                f"{self.name} drains again; {lost} log line(s) were dropped meanwhile"
            )

    def _arm(self) -> None:
        """Drain from the event loop when the descriptor becomes writable."""
        if self._armed():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop in this thread: the next write drains first
        try:
            loop.add_writer(self.fd, self._drain)
        except (OSError, ValueError, NotImplementedError):
            return
        self._loop = loop

    def _armed(self) -> bool:
        if self._loop is not None and self._loop.is_closed():
            self._loop = None  # that loop's run has ended (asyncio.run returned)
        return self._loop is not None

    def _disarm(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None and not loop.is_closed():
            loop.remove_writer(self.fd)


def _nonblocking(fd: int) -> int:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return fd
    if stat.S_ISREG(mode):
        return fd
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
        flags = os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_APPEND
        with contextlib.suppress(OSError):
            return os.open(f"/proc/self/fd/{fd}", flags)
    # A socket (or a pipe that cannot be reopened): the flag goes on the shared description.
    with contextlib.suppress(OSError):
        os.set_blocking(fd, False)
    return fd


def _report(message: str) -> None:
    # After the write in progress (which may be the stderr handler's own), on the loop.
    try:
        asyncio.get_running_loop().call_soon(log.warning, message)
    except RuntimeError:
        log.warning(message)


_outputs: dict[int, LogOutput] = {}


def output_for(fd: int) -> LogOutput:
    """The process's one :class:`LogOutput` for ``fd`` (1 = stdout, 2 = stderr)."""
    output = _outputs.get(fd)
    if output is None:
        output = _outputs[fd] = LogOutput(fd, "stdout" if fd == 1 else "stderr")
    return output


def take_dropped() -> dict[str, int]:
    """Lines each stream dropped since the last call, by stream name."""
    return {out.name: out.take_dropped() for out in _outputs.values()}


def close_all() -> None:
    for output in _outputs.values():
        output.close()
