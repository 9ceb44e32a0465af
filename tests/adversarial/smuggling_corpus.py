"""The smuggling and desync corpus of issue 7: raw request byte-strings, by attack class.

Each :class:`Case` is the bytes one client writes in one go. Placeholders are filled in per
case by :func:`render`: ``@A@`` / ``@B@`` / ``@S@`` become request ids (the first request, the
benign follow-up, a request hidden in a body) and ``@M@`` the forged marker that must never
reach a backend outside a body. Every case ends with :data:`BENIGN`, a ``Connection: close``
request carrying ``?id=@B@``, so a proxy that keeps the connection open answers it and closes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

CRLF: Final = b"\r\n"
BENIGN: Final = b"GET /next?id=@B@ HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n"
#: A complete request a front end may read as body and a back end as a request of its own.
SMUGGLED: Final = (
    b"GET /smuggled?id=@S@ HTTP/1.1\r\nHost: app\r\n"
    b'X-Session: {"user":"admin","m":"@M@"}\r\nX-Session-Status: valid\r\n\r\n'
)
FORGED: Final = b'{"user":"admin","m":"@M@"}'


@dataclass(frozen=True, slots=True)
class Case:
    cls: str
    data: bytes

    def render(self, a: str, b: str, s: str, marker: str) -> bytes:
        return render(self.data, a, b, s, marker)


def render(data: bytes, a: str, b: str, s: str, marker: str) -> bytes:
    for key, value in ((b"@A@", a), (b"@B@", b), (b"@S@", s), (b"@M@", marker)):
        data = data.replace(key, value.encode())
    return data


def head(
    lines: list[bytes],
    *,
    method: bytes = b"POST",
    target: bytes = b"/c?id=@A@",
    version: bytes = b"HTTP/1.1",
    eol: bytes = CRLF,
    host: bool = True,
) -> bytes:
    start = [method + b" " + target + b" " + version] + ([b"Host: app"] if host else [])
    return eol.join(start + lines) + eol + eol


def chunked(body: bytes) -> bytes:
    return b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n" if body else b"0\r\n\r\n"


CORPUS: list[Case] = []


def add(cls: str, *cases: bytes, benign: bool = True) -> None:
    CORPUS.extend(Case(cls, data + (BENIGN if benign else b"")) for data in cases)


# --- CL.TE: the front end reads Content-Length, the back end chunked ---------------------------
_TERMINATED = b"0\r\n\r\n" + SMUGGLED
add(
    "CL.TE",
    head([b"Content-Length: %d" % len(_TERMINATED), b"Transfer-Encoding: chunked"]) + _TERMINATED,
    head([b"Transfer-Encoding: chunked", b"Content-Length: %d" % len(_TERMINATED)]) + _TERMINATED,
    head([b"Content-Length: 6", b"Transfer-Encoding: chunked"]) + b"0\r\n\r\nG",
    head([b"Content-Length: 4", b"Transfer-Encoding: chunked"]) + b"5c\r\n" + SMUGGLED[:92],
    head([b"Content-Length: 0", b"Transfer-Encoding: chunked"]) + _TERMINATED,
    head([b"Content-Length: %d" % len(_TERMINATED), b"Transfer-Encoding: Chunked"]) + _TERMINATED,
    head([b"Content-Length: %d" % len(_TERMINATED), b"Transfer-Encoding:chunked"]) + _TERMINATED,
    head([b"Content-Length: %d" % len(_TERMINATED), b"transfer-encoding: chunked"]) + _TERMINATED,
    head(
        [
            b"Content-Length: %d" % len(_TERMINATED),
            b"Transfer-Encoding: chunked",
            b"Transfer-Encoding: chunked",
        ]
    )
    + _TERMINATED,
    head(
        [
            b"Content-Length: 5",
            b"Content-Length: %d" % len(_TERMINATED),
            b"Transfer-Encoding: chunked",
        ]
    )
    + _TERMINATED,
    head([b"Content-Length: %d" % len(_TERMINATED), b"Transfer-Encoding: chunked"], method=b"GET")
    + _TERMINATED,
    head(
        [b"Content-Length: %d" % len(_TERMINATED), b"Transfer-Encoding: chunked"],
        version=b"HTTP/1.0",
    )
    + _TERMINATED,
)

# --- TE.CL: the front end reads chunked, the back end Content-Length ---------------------------
_IN_CHUNK = b"%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n"
add(
    "TE.CL",
    head([b"Transfer-Encoding: chunked", b"Content-Length: 4"]) + _IN_CHUNK,
    head([b"Content-Length: 4", b"Transfer-Encoding: chunked"]) + _IN_CHUNK,
    head([b"Transfer-Encoding: chunked", b"Content-Length: 0"]) + _IN_CHUNK,
    head([b"Transfer-Encoding: chunked", b"Content-Length: 3"]) + b"8\r\nSMUGGLED\r\n0\r\n\r\n",
    head([b"Transfer-Encoding: chunked", b"Content-Length: 6"]) + _IN_CHUNK,
    head([b"Transfer-Encoding: chunked", b"Content-Length: 4"], method=b"GET") + _IN_CHUNK,
    head([b"Transfer-Encoding: chunked", b"Content-Length: 4", b"Connection: keep-alive"])
    + _IN_CHUNK,
    head([b"Transfer-Encoding: chunked", b"Content-Length: 4"], version=b"HTTP/1.0") + _IN_CHUNK,
    head([b"Transfer-Encoding: chunked"]) + _IN_CHUNK,  # honest: the request is inside a chunk
    head([b"Content-Length: %d" % len(SMUGGLED)]) + SMUGGLED,  # honest: a body that looks like one
)

# --- TE.TE: obfuscated Transfer-Encoding, alone and beside a Content-Length --------------------
TE_OBFUSCATIONS: Final = [
    b"Transfer-Encoding: xchunked",
    b"Transfer-Encoding:  chunked",
    b"Transfer-Encoding : chunked",
    b" Transfer-Encoding: chunked",
    b"Transfer-Encoding: chunked, identity",
    b"Transfer-Encoding: identity, chunked",
    b"Transfer-Encoding: gzip, chunked",
    b"Transfer-Encoding: chunked, chunked",
    b"Transfer-Encoding:\tchunked",
    b"Transfer-Encoding: chunked\t",
    b"Transfer-Encoding: \x0bchunked",
    b"Transfer-Encoding: chunked\x0b",
    b"Transfer-Encoding: \x0cchunked",
    b"Transfer-Encoding: CHUNKED",
    b"Transfer-Encoding: cHuNkEd",
    b'Transfer-Encoding: "chunked"',
    b"Transfer-Encoding: chunked;q=1",
    b"Transfer-Encoding: chunked,",
    b"Transfer-Encoding: ,chunked",
    b"Transfer-Encoding: x-chunked",
    b"Transfer-Encoding: identity",
    b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity",
    b"Transfer-Encoding: identity\r\nTransfer-Encoding: chunked",
    b"Transfer-Encoding: chunked\r\nTransfer-Encoding: x",
    b"Transfer_Encoding: chunked",
    b"Transfer-Encoding\x00: chunked",
    b"Transfer-Encoding: chunk\x00ed",
    b"Transfer-Encoding: ch\xfcnked",
    b"Transfer-Encoding: chunked\r\n : identity",
]
for _te in TE_OBFUSCATIONS:
    add(
        "TE.TE",
        head([_te]) + _TERMINATED,
        head([_te, b"Content-Length: %d" % len(_IN_CHUNK)]) + _IN_CHUNK,
    )

# --- Content-Length: duplicated, conflicting, odd spellings ------------------------------------
CL_SPELLINGS: Final = [
    b"Content-Length: 5, 5",
    b"Content-Length: 5,5",
    b"Content-Length: 5\r\nContent-Length: 5",
    b"Content-Length: 5\r\nContent-Length: 6",
    b"Content-Length: 6\r\nContent-Length: 5",
    b"Content-Length: +5",
    b"Content-Length: -5",
    b"Content-Length: 0x5",
    b"Content-Length: 005",
    b"Content-Length: 5.0",
    b"Content-Length: 5e0",
    b"Content-Length: 5 ",
    b"Content-Length: 5\t",
    b"Content-Length:  5",
    b"Content-Length: 5 5",
    b'Content-Length: "5"',
    b"Content-Length: \xd9\xa5",  # ARABIC-INDIC DIGIT FIVE
    b"Content-Length: 99999999999999999999999999",
    b"Content-Length: 18446744073709551621",
    b"Content-Length : 5",
    b"Content_Length: 5",
    b"Content-Length: 5\r\n Content-Length: 50",
    b"Content-Length:",
    b"Content-Length: 5\x00",
]
for _cl in CL_SPELLINGS:
    add("Content-Length", head([_cl]) + b"hello" + SMUGGLED)

# --- chunk-size tricks -------------------------------------------------------------------------
CHUNK_TRICKS: Final = [
    b"5;ext=1\r\nhello\r\n0\r\n\r\n",
    b'5;ext="a\r\nb"\r\nhello\r\n0\r\n\r\n',
    b"5 \r\nhello\r\n0\r\n\r\n",
    b" 5\r\nhello\r\n0\r\n\r\n",
    b"5\t\r\nhello\r\n0\r\n\r\n",
    b"0x5\r\nhello\r\n0\r\n\r\n",
    b"+5\r\nhello\r\n0\r\n\r\n",
    b"-5\r\nhello\r\n0\r\n\r\n",
    b"0005\r\nhello\r\n0\r\n\r\n",
    b"10000000000000005\r\nhello\r\n0\r\n\r\n",  # 64-bit wrap to 5
    b"ffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    b"5\r\nhello0\r\n\r\n",  # missing CRLF after the data
    b"5\r\nhelloXX0\r\n\r\n",
    b"5\nhello\n0\n\n",
    b"5\r\nhello\r\n0\r\nX-Trailer: 1\n\r\n",
    b"5\rhello\r\n0\r\n\r\n",
    b"3\r\nhello\r\n0\r\n\r\n",  # the chunk is longer than its size
    b"g\r\nhello\r\n0\r\n\r\n",
    b"5;\x00\r\nhello\r\n0\r\n\r\n",
    b"5;" + b"e" * 9000 + b"\r\nhello\r\n0\r\n\r\n",
    b"0\r\n\r\n",
    b"00\r\n\r\n",
    b"0;ext\r\n\r\n",
]
for _chunk in CHUNK_TRICKS:
    add("chunk-size", head([b"Transfer-Encoding: chunked"]) + _chunk)

# --- bare LF and bare CR line ends -------------------------------------------------------------
add(
    "bare-LF",
    head([b"X-A: 1"], method=b"GET", eol=b"\n"),
    b"GET /c?id=@A@ HTTP/1.1\nHost: app\r\n\r\n",
    b"GET /c?id=@A@ HTTP/1.1\r\nHost: app\nX-Session: " + FORGED + b"\r\n\r\n",
    b"GET /c?id=@A@ HTTP/1.1\r\nHost: app\r\nX-A: 1\n\r\n",
    b"GET /c?id=@A@ HTTP/1.1\r\nHost: app\r\n\n",
    b"POST /c?id=@A@ HTTP/1.1\r\nHost: app\r\nContent-Length: 5\nTransfer-Encoding: chunked\r\n\r\n"
    + _TERMINATED,
)
add(
    "bare-CR",
    head([b"X-A: 1"], method=b"GET", eol=b"\r"),
    b"GET /c?id=@A@ HTTP/1.1\rHost: app\r\n\r\n",
    b"GET /c?id=@A@ HTTP/1.1\r\nHost: app\rX-Session: " + FORGED + b"\r\n\r\n",
    b"GET /c?id=@A@ HTTP/1.1\r\nHost: app\r\nX-A: 1\r\r\n\r\n",
    b"POST /c?id=@A@ HTTP/1.1\r\nHost: app\r\nContent-Length: 5\rTransfer-Encoding: chunked\r\n\r\n"
    + _TERMINATED,
    b"GET /c?id=@A@ HTTP/1.1\r\nHost: app\r\nX-A: a\rb\r\n\r\n",
)

# --- obs-fold ----------------------------------------------------------------------------------
add(
    "obs-fold",
    head([b"X-A: 1", b" continued"], method=b"GET"),
    head([b"X-A: 1", b"\tcontinued"], method=b"GET"),
    head([b"X-A: 1", b" X-Session: " + FORGED], method=b"GET"),
    head([b"X-Session: x", b" " + FORGED], method=b"GET"),
    head([b"Content-Length: 0", b" 5"]) + b"hello",
    head([b"Transfer-Encoding: identity", b" chunked"]) + _TERMINATED,
)

# --- control bytes and NUL in names and values -------------------------------------------------
for _line in [
    b"X-A\x00: 1",
    b"X-A: 1\x00",
    b"X-A: a\x00b",
    b"X-\x7fA: 1",
    b"X-A: \x7f",
    b"X-A: \x01",
    b"X-A: \x1b[31m",
    b"X-Session\x00: " + FORGED,
    b"X-Session: " + FORGED + b"\x00",
    b"\x00X-Session: " + FORGED,
    b"X-Session\x0b: " + FORGED,
    b"X-Session\x7f: " + FORGED,
]:
    add("control-bytes", head([_line], method=b"GET"))

# --- space (and others) before the colon -------------------------------------------------------
for _line in [
    b"X-Session : " + FORGED,
    b"X-Session\t: " + FORGED,
    b"X-Session-Status : valid",
    b"Host : evil",
    b"Cookie : session.0=@M@",
    b"X-Session\x0c: " + FORGED,
]:
    add("space-before-colon", head([_line], method=b"GET"))

# --- absolute-form and odd targets -------------------------------------------------------------
for _target in [
    b"http://evil/c?id=@A@",
    b"http://app/c?id=@A@",
    b"https://evil:443/c?id=@A@",
    b"HTTP://EVIL/c?id=@A@",
    b"http://evil@app/c?id=@A@",
    b"*",
    b"//evil/c?id=@A@",
    b"/c?id=@A@#frag",
    b"/c?id=@A@#/../smuggled",
    b"/../../etc/passwd?id=@A@",
    b"/c%00?id=@A@",
    b"/c\x00?id=@A@",
    b"c?id=@A@",
    b"/c?id=@A@ HTTP/1.1\r\nX-Session: " + FORGED + b"\r\nX-Pad:",
]:
    add("odd-target", head([], method=b"GET", target=_target))
add(
    "odd-target",
    head([], method=b"OPTIONS", target=b"*"),
    head([], method=b"CONNECT", target=b"evil:443"),
)

# --- pipelining: 2-3 requests in one write -----------------------------------------------------
_P2 = b"GET /p2?id=@S@ HTTP/1.1\r\nHost: app\r\n\r\n"
add(
    "pipelining",
    head([], method=b"GET") + _P2,
    head([], method=b"GET") + _P2 + _P2.replace(b"/p2", b"/p3"),
    head([b"Content-Length: 5"]) + b"hello" + _P2,
    head([b"Transfer-Encoding: chunked"]) + chunked(b"hello") + _P2,
    head([b"X-Session: " + FORGED], method=b"GET")
    + _P2.replace(b"\r\n\r\n", b"\r\nX-Session-Status: valid\r\n\r\n"),
    head([], method=b"OPTIONS") + _P2,
    head([b"Content-Length: 5"], method=b"GET") + b"hello" + _P2,
)

# --- HTTP/1.0 keep-alive -----------------------------------------------------------------------
add(
    "http-1.0",
    head([b"Connection: keep-alive"], method=b"GET", version=b"HTTP/1.0"),
    head([b"Connection: keep-alive", b"Content-Length: 5"], version=b"HTTP/1.0") + b"hello",
    head([b"Connection: keep-alive", b"Transfer-Encoding: chunked"], version=b"HTTP/1.0")
    + _TERMINATED,
    head([], method=b"GET", version=b"HTTP/1.0", host=False),
    head([b"Connection: keep-alive"], method=b"GET", version=b"HTTP/1.0", host=False),
    head([b"Connection: Keep-Alive, X-Session"], method=b"GET", version=b"HTTP/1.0"),
    head([], method=b"GET", version=b"HTTP/0.9"),
    head([], method=b"GET", version=b"HTTP/1.2"),
    head([], method=b"GET", version=b"HTTP/2.0"),
    head([], method=b"GET", version=b"http/1.1"),
)

# --- Expect: 100-continue ----------------------------------------------------------------------
add(
    "expect",
    head([b"Expect: 100-continue", b"Content-Length: 5"]) + b"hello",
    head([b"Expect: 100-Continue", b"Content-Length: 5"]) + b"hello",
    head([b"Expect: 100-continue", b"Transfer-Encoding: chunked"]) + chunked(b"hello"),
    head([b"Expect: 100-continue"], method=b"GET"),
    head([b"Expect: 200-ok", b"Content-Length: 5"]) + b"hello",
    head([b"Expect: 100-continue, x", b"Content-Length: 5"]) + b"hello",
    head([b"Expect: 100-continue", b"Expect: 100-continue", b"Content-Length: 5"]) + b"hello",
    head([b"Expect: 100-continue", b"Content-Length: %d" % len(SMUGGLED)]) + SMUGGLED,
)

# --- upgrades of every kind --------------------------------------------------------------------
_WS_KEY = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="
_WS = [b"Upgrade: websocket", b"Connection: Upgrade", _WS_KEY, b"Sec-WebSocket-Version: 13"]
_FOLLOW = b"GET /after?id=@S@ HTTP/1.1\r\nHost: app\r\nX-Session: " + FORGED + b"\r\n\r\n"
add(
    "upgrade",
    head(
        [
            b"Upgrade: h2c",
            b"Connection: Upgrade, HTTP2-Settings",
            b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA",
        ],
        method=b"GET",
    ),
    head([b"Upgrade: h2c", b"Connection: Upgrade"], method=b"GET")
    + b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    head(_WS, method=b"GET"),
    head(_WS, method=b"GET", target=b"/c?id=@A@&respond=101") + _FOLLOW,
    head([*_WS[:2], b"Sec-WebSocket-Version: 13"], method=b"GET", target=b"/c?id=@A@&respond=101")
    + _FOLLOW,
    head(_WS[:2], method=b"GET", target=b"/c?id=@A@&respond=101") + _FOLLOW,
    head(
        [*_WS[:2], b"Sec-WebSocket-Key: short", b"Sec-WebSocket-Version: 13"],
        method=b"GET",
        target=b"/c?id=@A@&respond=101",
    )
    + _FOLLOW,
    head([*_WS[:3], b"Sec-WebSocket-Version: 8"], method=b"GET", target=b"/c?id=@A@&respond=101")
    + _FOLLOW,
    head([*_WS, b"Content-Length: %d" % len(_FOLLOW)], target=b"/c?id=@A@&respond=101") + _FOLLOW,
    head([b"Connection: upgrade"], method=b"GET", target=b"/c?id=@A@&respond=101") + _FOLLOW,
    head([b"Upgrade: websocket"], method=b"GET", target=b"/c?id=@A@&respond=101") + _FOLLOW,
    head(
        [b"Upgrade: foo/1", b"Connection: upgrade"], method=b"GET", target=b"/c?id=@A@&respond=101"
    )
    + _FOLLOW,
    head(
        [b"Upgrade: websocket, h2c", b"Connection: upgrade", _WS_KEY, b"Sec-WebSocket-Version: 13"],
        method=b"GET",
    ),
    head(
        [
            b"Upgrade: WebSocket",
            b"Connection: keep-alive, Upgrade",
            _WS_KEY,
            b"Sec-WebSocket-Version: 13",
        ],
        method=b"GET",
    ),
    head([*_WS, b"Transfer-Encoding: chunked"], method=b"GET") + chunked(SMUGGLED),
    head(_WS, target=b"/c?id=@A@&respond=101", version=b"HTTP/1.0") + _FOLLOW,
    head([b"Upgrade: TLS/1.0", b"Connection: Upgrade"], method=b"OPTIONS", target=b"*"),
)

# --- trailers carrying owned headers -----------------------------------------------------------
for _trailer in [
    b"X-Session: " + FORGED,
    b"x-session-status: valid",
    b"X-Set-Session: " + FORGED,
    b"X-Patch-Session: " + FORGED,
    b"X_Session: " + FORGED,
    b"X.Session: " + FORGED,
    b"Cookie: session.0=@M@",
    b"Content-Length: 50",
    b"Transfer-Encoding: chunked",
    b"Host: evil",
]:
    add(
        "trailers",
        head([b"Transfer-Encoding: chunked", b"Trailer: x"])
        + b"5\r\nhello\r\n0\r\n"
        + _trailer
        + b"\r\n\r\n",
    )

# --- owned headers in heads --------------------------------------------------------------------
for _name in [
    b"X-Session",
    b"X_Session",
    b"X.Session",
    b"x-session",
    b"X-SESSION",
    b"X--Session",
    b"XSession",
    b"x-session-status",
    b"X_Session_Status",
    b"X.Session.Status",
    b"X-Set-Session",
    b"X.Set.Session",
    b"X_SET_SESSION",
    b"X-Patch-Session",
    b"X.Patch.Session",
    b"X_Patch_Session",
]:
    add("owned-head", head([_name + b": " + FORGED], method=b"GET"))
add(
    "owned-head",
    head([b"X-Session: " + FORGED, b"X-Session: " + FORGED], method=b"GET"),
    head([b"Connection: X-Session", b"X-Session: " + FORGED], method=b"GET"),
    head([b"Connection: close, X-Session-Status"], method=b"GET", target=b"/c?id=@A@"),
)

# --- session.N chunk cookies punctuated --------------------------------------------------------
for _cookie in [
    b"Cookie: session.0=@M@",
    b"Cookie: a=1; session.0=@M@",
    b"Cookie: a=1, session.0=@M@",
    b"Cookie: a=1,session.0=@M@",
    b'Cookie: a="1; session.0=@M@"',
    b'Cookie: "session.0"=@M@',
    b"Cookie: SESSION.0=@M@",
    b"Cookie: Session.1=@M@",
    b"Cookie: session.00=@M@",
    b"Cookie: session.0 =@M@",
    b"Cookie: a=1\r\nCookie: session.0=@M@",
    b"Cookie: a=1;session.0=@M@;b=2",
    b"Cookie:session.0=@M@",
    b"Cookie: \tsession.0=@M@",
]:
    add("chunk-cookie", head([_cookie], method=b"GET"))


def _counts() -> dict[str, int]:
    counts: dict[str, int] = {}
    for case in CORPUS:
        counts[case.cls] = counts.get(case.cls, 0) + 1
    return counts


#: How many cases each attack class holds.
CLASS_COUNTS: Final = _counts()


def case_ids() -> list[str]:
    """Readable ids, ``class-n``."""
    seen: dict[str, int] = {}
    out = []
    for case in CORPUS:
        seen[case.cls] = seen.get(case.cls, 0) + 1
        out.append(f"{case.cls}-{seen[case.cls]}")
    return out
