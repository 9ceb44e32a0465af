"""A deliberately strict HTTP/1.1 message parser for the adversarial suite.

It accepts only what RFC 9112 allows without leeway (CRLF line ends, no obs-fold, token field
names with no space before the colon, one framing: a single digits-only Content-Length or a
lone ``chunked``) and raises :class:`Ambiguous` on anything else. Both the recording upstream
(for what the proxy sends) and the tests (for what the proxy answers) parse with it: a message
it refuses is one that two real parsers could read differently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: RFC 9110 section 5.6.2: tchar.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: RFC 9110 section 5.5: field-value is VCHAR, obs-text, SP and HTAB.
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) HTTP/(1\.[01])")
_STATUS_LINE = re.compile(rb"HTTP/(1\.[01]) ([1-5][0-9][0-9]) ([\t\x20-\x7e\x80-\xff]*)")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})(;[\t\x20-\x7e\x80-\xff]*)?")
MAX_HEAD = 1 << 20


class Ambiguous(ValueError):
    """Bytes a strict parser refuses: another parser might read them differently."""


class Incomplete(Exception):
    """More bytes are needed."""


@dataclass(slots=True)
class Message:
    """One parsed request or response."""

    start: tuple[bytes, bytes, bytes]  # (method, target, version) or (version, status, reason)
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    raw: bytes = b""

    def header(self, name: bytes) -> bytes | None:
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        return values[0] if values else None

    def header_values(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    @property
    def status(self) -> int:
        return int(self.start[1])

    @property
    def target(self) -> str:
        return self.start[1].decode("latin-1")

    @property
    def keep_alive(self) -> bool:
        tokens = b",".join(self.header_values(b"connection")).lower()
        closing = any(t.strip() == b"close" for t in tokens.split(b","))
        version = self.start[0] if self.start[0].startswith(b"HTTP/") else self.start[2]
        if version in (b"1.0", b"HTTP/1.0"):
            return any(t.strip() == b"keep-alive" for t in tokens.split(b",")) and not closing
        return not closing


def parse_head(data: bytes, *, response: bool) -> tuple[Message, int]:
    """Parse a head at the start of ``data``; return it and the offset after its blank line."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > MAX_HEAD:
            raise Ambiguous("head too large")
        # A bare LF or CR anywhere is refused as soon as it is seen, not once the head ends.
        _check_line_ends(data)
        raise Incomplete
    head = data[:end]
    _check_line_ends(head)
    start_line, *lines = head.split(b"\r\n")
    pattern = _STATUS_LINE if response else _REQUEST_LINE
    match = pattern.fullmatch(start_line)
    if match is None:
        raise Ambiguous(f"bad start line {start_line[:80]!r}")
    one, two, three = match.group(1), match.group(2), match.group(3)
    start = (b"HTTP/" + one, two, three) if response else (one, two, three)
    return Message(start, _parse_fields(lines)), end + 4


def _check_line_ends(data: bytes) -> None:
    stripped = data.replace(b"\r\n", b"")
    if b"\r" in stripped or b"\n" in stripped:
        raise Ambiguous("bare CR or LF")


def _parse_fields(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    fields = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            raise Ambiguous("obs-fold")  # RFC 9112 section 5.2
        name, colon, value = line.partition(b":")
        if not colon or _TOKEN.fullmatch(name) is None:
            raise Ambiguous(f"bad field name {name[:60]!r}")  # space before colon included
        value = value.strip(b" \t")
        if _FIELD_VALUE.fullmatch(value) is None:
            raise Ambiguous(f"control byte in {name!r}")
        fields.append((name, value))
    return fields


def body_framing(message: Message, *, response: bool, method: bytes = b"GET") -> str | int:
    """``"chunked"``, a length, or ``"close"`` (a response read to EOF). RFC 9112 section 6."""
    encodings = message.header_values(b"transfer-encoding")
    lengths = message.header_values(b"content-length")
    if encodings and lengths:
        raise Ambiguous("both Transfer-Encoding and Content-Length")
    if response:
        status = message.status
        if method == b"HEAD" or status in (204, 304) or 100 <= status < 200:
            if (status == 204 or 100 <= status < 200) and (encodings or lengths):
                raise Ambiguous(f"framing on a {status}")
            return 0
    if encodings:
        if len(encodings) != 1 or encodings[0].lower() != b"chunked":
            raise Ambiguous(f"transfer-encoding {encodings!r}")
        return "chunked"
    if lengths:
        if len(lengths) != 1 or re.fullmatch(rb"[0-9]{1,15}", lengths[0]) is None:
            raise Ambiguous(f"content-length {lengths!r}")
        return int(lengths[0])
    return "close" if response else 0


def parse_chunked(data: bytes, offset: int) -> tuple[bytes, list[tuple[bytes, bytes]], int]:
    """Decode a chunked body starting at ``offset``; return body, trailers and the end offset."""
    body = bytearray()
    while True:
        line_end = data.find(b"\r\n", offset)
        if line_end < 0:
            if len(data) - offset > 1024:
                raise Ambiguous("chunk-size line too long")
            _check_line_ends(data[offset:])
            raise Incomplete
        line = data[offset:line_end]
        match = _CHUNK_SIZE.fullmatch(line)
        if match is None:
            raise Ambiguous(f"bad chunk size {line[:40]!r}")
        size = int(match.group(1), 16)
        offset = line_end + 2
        if size == 0:
            trailer_end = data.find(b"\r\n", offset)
            if trailer_end == offset:
                return bytes(body), [], offset + 2
            end = data.find(b"\r\n\r\n", offset)
            if end < 0:
                _check_line_ends(data[offset:])
                raise Incomplete
            section = data[offset:end]
            _check_line_ends(section)
            return bytes(body), _parse_fields(section.split(b"\r\n")), end + 4
        if len(data) < offset + size + 2:
            raise Incomplete
        body += data[offset : offset + size]
        if data[offset + size : offset + size + 2] != b"\r\n":
            raise Ambiguous("chunk data not followed by CRLF")
        offset += size + 2


def parse_message(
    data: bytes, *, response: bool, method: bytes = b"GET", eof: bool = False
) -> tuple[Message, int]:
    """Parse one whole message at the start of ``data``. Raises Incomplete or Ambiguous."""
    message, offset = parse_head(data, response=response)
    framing = body_framing(message, response=response, method=method)
    if framing == "chunked":
        message.body, message.trailers, offset = parse_chunked(data, offset)
    elif framing == "close":
        if not eof:
            raise Incomplete
        message.body, offset = data[offset:], len(data)
    else:
        assert isinstance(framing, int)
        if len(data) < offset + framing:
            raise Incomplete
        message.body, offset = data[offset : offset + framing], offset + framing
    message.raw = data[:offset]
    return message, offset


def parse_responses(data: bytes, method: bytes = b"GET", eof: bool = True) -> list[Message]:
    """Every complete response in ``data`` (interim 1xx included); Ambiguous on any bad one,
    or on trailing bytes that are not the start of a response."""
    out: list[Message] = []
    offset = 0
    while offset < len(data):
        try:
            message, used = parse_message(data[offset:], response=True, method=method, eof=eof)
        except Incomplete:
            raise Ambiguous(
                f"truncated response after {len(out)}: {data[offset:][:80]!r}"
            ) from None
        out.append(message)
        offset += used
        if message.status == 101:
            break
    return out
