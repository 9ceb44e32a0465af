"""Logging set-up and the access log: one line per request on standard output.

The process log (start, stop, warnings) goes to stderr; the access log goes to stdout, one
line per finished request, so the two can be routed apart. Both use the configured
``log_format``: ``json`` (one object per line) or ``text``.

The access line is built from a :class:`RequestRecord`, which holds no secret, cookie value or
session content. The path is cut at any query string or fragment, and path parameters
(``;jsessionid=...``) are masked, in case a record ever carries one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import select
import time
from typing import Final, Protocol

from proxy.log_output import LogOutput, output_for
from proxy.request_record import RequestRecord

#: The longest an access line waits to be written.
FLUSH_SECONDS: Final = 0.05
#: POSIX guarantees writes of up to 512 bytes to a pipe are atomic; Linux gives 4096.
_PIPE_BUF: Final = select.PIPE_BUF

LOG_LEVEL_ENV: Final = "SESSION_SIDECAR_LOG_LEVEL"
#: Names the stderr handler configure_logging installs, so a second call replaces it.
_HANDLER_NAME: Final = "session-sidecar"

#: ``json.encoder``'s C string quoter: escapes quotes, backslashes, control and non-ASCII
#: characters, so no field can break a line or forge another key.
_quote: Final = json.encoder.encode_basestring_ascii

#: RFC 3986 section 3.3: a segment's parameters run from ";" to the next "/".
_PATH_PARAMETERS: Final = re.compile(r";[^/]*")

log = logging.getLogger("session_sidecar.access_log")


def configure_logging(log_format: str, level: int = logging.INFO) -> None:
    """Send the process's logs to stderr in ``log_format``.

    ``SESSION_SIDECAR_LOG_LEVEL`` (DEBUG, INFO, WARNING, ERROR) overrides ``level``. aiohttp's
    own access logger is silenced: the access log is written by :class:`AccessLog` alone.
    Calling it again replaces the handler it installed before.
    """
    handler = OutputHandler(output_for(2))
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    env_level = os.environ.get(LOG_LEVEL_ENV, "").strip().upper()
    named = logging.getLevelName(env_level) if env_level else level
    root.setLevel(named if isinstance(named, int) else level)
    if not isinstance(named, int):
        log.warning(
            "%s=%r is not a log level; using %s",
            LOG_LEVEL_ENV,
            env_level[:20],
            logging.getLevelName(level),
        )
    aiohttp_access = logging.getLogger("aiohttp.access")
    aiohttp_access.setLevel(logging.CRITICAL + 1)
    aiohttp_access.propagate = False


class OutputHandler(logging.Handler):
    """A logging handler that writes each record as one line through a :class:`LogOutput`.

    Unlike ``logging.StreamHandler`` it never blocks: a stalled stderr drops lines instead of
    stopping the event loop.
    """

    def __init__(self, output: LogOutput) -> None:
        super().__init__()
        self.output = output

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # a bad format string must not take the proxy down
            self.handleError(record)
            return
        self.output.write(line + "\n")


class LineSink(Protocol):
    """Where access lines go: a :class:`LogOutput` (stdout) in the proxy, a StringIO in tests."""

    def write(self, text: str, /) -> object: ...


class _UtcClock:
    """ISO 8601 UTC timestamps with milliseconds; the seconds part is formatted once a second."""

    _MILLIS: Final = tuple(f".{ms:03d}Z" for ms in range(1000))

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def iso(self, timestamp: float) -> str:
        second = int(timestamp)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return self._prefix + self._MILLIS[int((timestamp - second) * 1000)]


class JsonFormatter(logging.Formatter):
    """Process log records as one JSON object per line: time, level, logger, message."""

    def __init__(self) -> None:
        super().__init__()
        self._clock = _UtcClock()

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self._clock.iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=True, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """Process log records as ``<UTC time> <LEVEL> <logger>: <message>``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._clock = _UtcClock()

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self._clock.iso(record.created)


def loggable_path(path: str) -> str:
    """``path`` without query string or fragment, and with path parameters masked."""
    if "?" in path or "#" in path:
        path = path.split("?", 1)[0].split("#", 1)[0]
    if ";" in path:
        # ";jsessionid=..." style parameters may carry a session id: keep only that one was there.
        path = _PATH_PARAMETERS.sub(";...", path)
    return path


class AccessLog:
    """An observer that writes one access line per finished request to ``stream`` (stdout).

    Lines are written within 50 ms of their request's end, so ``docker logs`` shows them at
    once, in whole-line batches of at most PIPE_BUF bytes, so lines from several workers sharing
    stdout never interleave. The writes never block (see :mod:`proxy.log_output`): a stalled
    or broken stdout costs lines, counted and reported, never a request's time.
    """

    def __init__(self, log_format: str, stream: LineSink | None = None) -> None:
        self.log_format = log_format
        self.stream = output_for(1) if stream is None else stream
        self._format = self.json_line if log_format == "json" else self.text_line
        self._clock = _UtcClock()
        self._pending: list[str] = []
        self._pending_size = 0

    def __call__(self, record: RequestRecord) -> None:
        line = self._format(record)
        # Lines go out together, at most FLUSH_SECONDS after the first of them or as soon as
        # they fill a pipe-atomic write: one write() for many requests under load. Only the
        # first line of a batch looks up the loop (CPython 3.11's get_running_loop() is a
        # getpid() syscall).
        if not self._pending:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._write(line)
                return
            loop.call_later(FLUSH_SECONDS, self.flush)
        self._pending.append(line)
        self._pending_size += len(line)
        if self._pending_size >= _PIPE_BUF:
            self.flush()

    def flush(self) -> None:
        lines, self._pending = self._pending, []
        self._pending_size = 0
        batch: list[str] = []
        size = 0
        for line in lines:
            # A write to a pipe is atomic up to PIPE_BUF (POSIX): batches stay below it, so
            # workers sharing stdout never interleave inside a line.
            if batch and size + len(line) > _PIPE_BUF:
                self._write("".join(batch))
                batch, size = [], 0
            batch.append(line)
            size += len(line)
        if batch:
            self._write("".join(batch))

    def _write(self, text: str) -> None:
        self.stream.write(text)

    def json_line(self, r: RequestRecord) -> str:
        error = f',"upstream_error":{_quote(r.upstream_error)}' if r.upstream_error else ""
        return (
            f'{{"time":"{self._clock.iso(r.started or time.time())}"'
            f',"request_id":{_quote(r.request_id)}'
            f',"client":{_quote(r.client)}'
            f',"method":{_quote(r.method)}'
            f',"path":{_quote(loggable_path(r.path))}'
            f',"status":{r.status:d}'
            f',"upstream":{_quote(r.upstream) if r.upstream else "null"}'
            f',"duration_ms":{r.duration * 1000:.3f}'
            f',"bytes_in":{r.bytes_in:d}'
            f',"bytes_out":{r.bytes_out:d}'
            f',"session":{_quote(r.session_state)}'
            f',"session_change":{_quote(r.session_change)}'
            f"{error}}}\n"
        )

    def text_line(self, r: RequestRecord) -> str:
        # Quoted fields use JSON escaping, so a space or quote in them cannot shift columns.
        error = f" upstream_error={r.upstream_error}" if r.upstream_error else ""
        upstream = _quote(r.upstream) if r.upstream else "-"
        return (
            f"{self._clock.iso(r.started or time.time())} {r.client or '-'}"
            f" {_quote(f'{r.method} {loggable_path(r.path)}')} {r.status:d}"
            f" upstream={upstream} {r.duration * 1000:.3f}ms"
            f" in={r.bytes_in:d} out={r.bytes_out:d}"
            f" session={r.session_state} change={r.session_change}"
            f"{error} id={_quote(r.request_id)}\n"
        )
