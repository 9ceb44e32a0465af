"""The request smuggling and desync corpus: request byte-strings by attack class.

Each case is the bytes a client sends first; the suite then sends a benign request on the same
connection and another on a fresh one. A smuggled request always targets ``/smuggled?...``
and carries :data:`MARKER` in a forged header, so a backend that sees the marker outside a body
shows up in the recording. Owned headers written by the client carry the marker too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MARKER: Final = "smug-4b1d-marker"
SMUGGLED: Final = f"GET /smuggled?id=smuggled HTTP/1.1\r\nHost: app\r\nX-Session: {MARKER}\r\n\r\n"
FORGED: Final = '{"user":"admin","m":"' + MARKER + '"}'


@dataclass(frozen=True, slots=True)
class Case:
    cls: str
    name: str
    data: bytes

    @property
    def id(self) -> str:
        return f"{self.cls}-{self.name}"


def _req(head: str, body: str = "", method: str = "POST", target: str = "/c?id=first") -> bytes:
    text = f"{method} {target} HTTP/1.1\r\nHost: app\r\n{head}\r\n{body}"
    return (
        text.encode("utf-8")
        if not text.isascii() and max(text) > "\xff"
        else text.encode("latin-1")
    )


def _chunk(data: str) -> str:
    return f"{len(data):x}\r\n{data}\r\n"


CASES: list[Case] = []


def _add(cls: str, name: str, data: bytes | str) -> None:
    CASES.append(Case(cls, name, data.encode("latin-1") if isinstance(data, str) else data))


# --- CL.TE and TE.CL: both framings, each read by one side ---------------------------------
_TE_SPELLINGS = {
    "plain": "Transfer-Encoding: chunked",
    "upper": "Transfer-Encoding: CHUNKED",
    "space-before-value": "Transfer-Encoding:  chunked",
    "tab": "Transfer-Encoding:\tchunked",
    "trailing-space": "Transfer-Encoding: chunked ",
    "name-case": "transfer-encoding: chunked",
}
for key, te in _TE_SPELLINGS.items():
    body = "0\r\n\r\n" + SMUGGLED
    _add("CL.TE", key, _req(f"Content-Length: {len(body)}\r\n{te}\r\n", body))
    body = _chunk(SMUGGLED) + "0\r\n\r\n"
    _add("TE.CL", key, _req(f"{te}\r\nContent-Length: 4\r\n", body))
_add(
    "CL.TE",
    "te-first",
    _req("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", "0\r\n\r\n" + SMUGGLED),
)
_add(
    "TE.CL",
    "cl-zero",
    _req("Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", _chunk(SMUGGLED) + "0\r\n\r\n"),
)
_add(
    "TE.CL",
    "cl-huge",
    _req("Content-Length: 100000\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n" + SMUGGLED),
)

# --- TE.TE: obfuscated Transfer-Encoding values and names ------------------------------------
_TE_OBFUSCATED = {
    "xchunked": "Transfer-Encoding: xchunked",
    "chunked-identity": "Transfer-Encoding: chunked, identity",
    "identity-chunked": "Transfer-Encoding: identity, chunked",
    "gzip-chunked": "Transfer-Encoding: gzip, chunked",
    "chunked-gzip": "Transfer-Encoding: chunked, gzip",
    "quoted": 'Transfer-Encoding: "chunked"',
    "chunk": "Transfer-Encoding: chunk",
    "chunked-param": "Transfer-Encoding: chunked;q=1",
    "vtab": "Transfer-Encoding:\x0bchunked",
    "ff": "Transfer-Encoding: chunked\x0c",
    "nul": "Transfer-Encoding: chun\x00ked",
    "two-lines": "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity",
    "two-lines-rev": "Transfer-Encoding: identity\r\nTransfer-Encoding: chunked",
    "dup-chunked": "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
    "empty-then": "Transfer-Encoding:\r\nTransfer-Encoding: chunked",
    "space-before-colon": "Transfer-Encoding : chunked",
    "underscore": "Transfer_Encoding: chunked",
    "leading-space-name": " Transfer-Encoding: chunked",
    "obs-fold": "X-Pad: 1\r\n Transfer-Encoding: chunked",
    "folded-value": "Transfer-Encoding:\r\n chunked",
    "non-ascii": "Transfer-Encoding: ch\xfcnked",
    "comma-empty": "Transfer-Encoding: ,chunked",
}
for key, te in _TE_OBFUSCATED.items():
    body = "0\r\n\r\n" + SMUGGLED
    _add("TE.TE", key, _req(f"{te}\r\nContent-Length: {len(body)}\r\n", body))
    _add("TE.TE", key + "-alone", _req(f"{te}\r\n", body))

# --- Content-Length: duplicated, signed, hex, padded, huge --------------------------------------
_CL_VALUES = {
    "dup-same": "Content-Length: 5\r\nContent-Length: 5",
    "dup-differ": "Content-Length: 5\r\nContent-Length: 60",
    "list-same": "Content-Length: 5, 5",
    "list-differ": "Content-Length: 5, 60",
    "plus": "Content-Length: +5",
    "minus": "Content-Length: -5",
    "hex": "Content-Length: 0x5",
    "leading-zero": "Content-Length: 005",
    "space-inside": "Content-Length: 5 5",
    "trailing-tab": "Content-Length: 5\t",
    "decimal": "Content-Length: 5.0",
    "exponent": "Content-Length: 5e0",
    "huge": "Content-Length: 99999999999999999999999",
    "empty": "Content-Length: ",
    "letters": "Content-Length: five",
    "underscore-name": "Content_Length: 60",
    "space-before-colon": "Content-Length : 60",
    "nul": "Content-Length: 5\x00",
    "non-ascii-digit": "Content-Length: \u0665",
}
for key, cl in _CL_VALUES.items():
    _add("CL", key, _req(f"{cl}\r\n", "hello" + SMUGGLED))

# --- chunk-size and chunk framing tricks ---------------------------------------------------------
_CHUNKS = {
    "hex-prefix": f"0x5\r\nhello\r\n0\r\n\r\n{SMUGGLED}",
    "size-space": f"5 \r\nhello\r\n0\r\n\r\n{SMUGGLED}",
    "space-size": f" 5\r\nhello\r\n0\r\n\r\n{SMUGGLED}",
    "ext": f"5;x=y\r\nhello\r\n0\r\n\r\n{SMUGGLED}",
    "ext-quoted": f'5;x="a\\"b"\r\nhello\r\n0\r\n\r\n{SMUGGLED}',
    "ext-bare-lf": f"5;x\nhello\r\n0\r\n\r\n{SMUGGLED}",
    "overflow": f"fffffffffffffffff5\r\nhello\r\n0\r\n\r\n{SMUGGLED}",
    "overflow-to-zero": f"10000000000000000\r\n\r\n{SMUGGLED}",
    "negative": f"-5\r\nhello\r\n0\r\n\r\n{SMUGGLED}",
    "bare-lf-size": f"5\nhello\r\n0\r\n\r\n{SMUGGLED}",
    "bare-lf-data": f"5\r\nhello\n0\r\n\r\n{SMUGGLED}",
    "cr-cr-lf": f"5\r\r\nhello\r\n0\r\n\r\n{SMUGGLED}",
    "data-too-long": f"3\r\nhello\r\n0\r\n\r\n{SMUGGLED}",
    "data-too-short": f"8\r\nhello\r\n0\r\n\r\n{SMUGGLED}",
    "no-crlf-after-data": f"5\r\nhello0\r\n\r\n{SMUGGLED}",
    "last-chunk-lf": f"5\r\nhello\r\n0\n\n{SMUGGLED}",
    "last-chunk-ext": f"5\r\nhello\r\n0;x=1\r\n\r\n{SMUGGLED}",
    "long-ext": "5;" + "x" * 9000 + f"\r\nhello\r\n0\r\n\r\n{SMUGGLED}",
    "upper-hex": f"A\r\nhelloworld\r\n0\r\n\r\n{SMUGGLED}",
    "leading-zeros": f"0005\r\nhello\r\n0\r\n\r\n{SMUGGLED}",
    "empty-size": f"\r\nhello\r\n0\r\n\r\n{SMUGGLED}",
    "smuggle-in-chunk": _chunk(SMUGGLED) + "0\r\n\r\n",
}
for key, body in _CHUNKS.items():
    _add("chunk", key, _req("Transfer-Encoding: chunked\r\n", body))

# --- bare LF and bare CR line ends ----------------------------------------------------------------
_add("line-end", "all-lf", f"GET /c?id=first HTTP/1.1\nHost: app\nX-Session: {FORGED}\n\n")
_add("line-end", "request-line-lf", "GET /c?id=first HTTP/1.1\nHost: app\r\n\r\n")
_add("line-end", "header-lf", f"GET /c?id=first HTTP/1.1\r\nHost: app\nX-Session: {FORGED}\r\n\r\n")
_add(
    "line-end",
    "bare-cr-header",
    f"GET /c?id=first HTTP/1.1\r\nHost: app\rX-Session: {FORGED}\r\n\r\n",
)
_add("line-end", "bare-cr-request-line", "GET /c?id=first HTTP/1.1\rHost: app\r\n\r\n")
_add("line-end", "bare-cr-end", f"GET /c?id=first HTTP/1.1\r\nHost: app\r\n\r{SMUGGLED}")
_add(
    "line-end",
    "lf-cl-body",
    f"POST /c?id=first HTTP/1.1\nHost: app\nContent-Length: 5\n\nhello{SMUGGLED}",
)
_add("line-end", "cr-in-value", "GET /c?id=first HTTP/1.1\r\nHost: app\r\nX-A: a\rb\r\n\r\n")
_add(
    "line-end",
    "lf-in-value-owned",
    f"GET /c?id=first HTTP/1.1\r\nHost: app\r\nX-A: a\nX-Session: {FORGED}\r\n\r\n",
)
_add("line-end", "crlf-crlf-crlf", "GET /c?id=first HTTP/1.1\r\nHost: app\r\n\r\n\r\n")
_add("line-end", "leading-crlf", "\r\nGET /c?id=first HTTP/1.1\r\nHost: app\r\n\r\n")

# --- obs-fold ---------------------------------------------------------------------------------------
_add(
    "obs-fold",
    "owned",
    f"GET /c?id=first HTTP/1.1\r\nHost: app\r\nX-A: 1\r\n X-Session: {FORGED}\r\n\r\n",
)
_add(
    "obs-fold",
    "owned-tab",
    f"GET /c?id=first HTTP/1.1\r\nHost: app\r\nX-A: 1\r\n\tX-Session: {FORGED}\r\n\r\n",
)
_add(
    "obs-fold",
    "owned-value",
    f"GET /c?id=first HTTP/1.1\r\nHost: app\r\nX-Session:\r\n {FORGED}\r\n\r\n",
)
_add(
    "obs-fold",
    "cl",
    f"POST /c?id=first HTTP/1.1\r\nHost: app\r\nContent-Length:\r\n 5\r\n\r\nhello{SMUGGLED}",
)
_add("obs-fold", "host", "GET /c?id=first HTTP/1.1\r\nHost:\r\n app\r\n\r\n")
_add("obs-fold", "first-line", "GET /c?id=first HTTP/1.1\r\n Host: app\r\n\r\n")

# --- control bytes, NUL, odd names --------------------------------------------------------------------
for key, line in {
    "nul-value": "X-A: a\x00b",
    "nul-name": "X-\x00A: b",
    "ctl-value": "X-A: a\x01b",
    "del-value": "X-A: a\x7fb",
    "esc-value": "X-A: a\x1b[31mb",
    "owned-nul": f"X-Session\x00: {FORGED}",
    "owned-space-colon": f"X-Session : {FORGED}",
    "owned-tab-colon": f"X-Session\t: {FORGED}",
    "owned-leading-space": f" X-Session: {FORGED}",
    "empty-name": f": {FORGED}",
    "no-colon": f"X-Session {FORGED}",
    "colon-in-name": f"X-Session:X: {FORGED}",
    "non-ascii-name": f"X-Sessi\xf6n: {FORGED}",
    "owned-dot": f"X.Session: {FORGED}",
    "owned-tilde": f"X~Session~Status: {MARKER}",
    "owned-plus": f"X+Set+Session: {FORGED}",
}.items():
    _add("ctl", key, f"GET /c?id=first HTTP/1.1\r\nHost: app\r\n{line}\r\n\r\n")

# --- request targets -----------------------------------------------------------------------------------
for key, target in {
    "absolute-http": "http://evil.example/c?id=first",
    "absolute-https": "https://evil.example/c?id=first",
    "absolute-userinfo": "http://app@evil.example/c?id=first",
    "absolute-port": "http://app:1/c?id=first",
    "asterisk": "*",
    "double-slash": "//evil.example/c?id=first",
    "fragment": "/c?id=first#frag",
    "dot-segments": "/a/../c?id=first",
    "encoded-dots": "/%2e%2e/c?id=first",
    "backslash": "/\\evil/c?id=first",
    "nul": "/c\x00?id=first",
    "space-in-target": "/c id=first",
    "non-ascii": "/c\xe9?id=first",
    "crlf-in-target": f"/c?id=first HTTP/1.1\r\nX-Session: {FORGED}\r\nX-A:",
    "long": "/c?id=first&p=" + "a" * 7000,
    "empty": "",
}.items():
    _add("target", key, f"GET {target} HTTP/1.1\r\nHost: app\r\n\r\n")
_add("target", "connect", "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n")
_add("target", "options-asterisk", "OPTIONS * HTTP/1.1\r\nHost: app\r\n\r\n")

# --- pipelining ------------------------------------------------------------------------------------------
_add(
    "pipeline",
    "two",
    "GET /c?id=first HTTP/1.1\r\nHost: app\r\n\r\nGET /c?id=second HTTP/1.1\r\nHost: app\r\n\r\n",
)
_add(
    "pipeline",
    "three-forged",
    "".join(
        f"GET /c?id=p{i} HTTP/1.1\r\nHost: app\r\nX-Session: {FORGED}\r\n\r\n" for i in range(3)
    ),
)
_add(
    "pipeline",
    "get-with-body",
    f"GET /c?id=first HTTP/1.1\r\nHost: app\r\nContent-Length: {len(SMUGGLED)}\r\n\r\n{SMUGGLED}",
)
_add(
    "pipeline",
    "head-then-get",
    "HEAD /c?id=first HTTP/1.1\r\nHost: app\r\n\r\nGET /c?id=second HTTP/1.1\r\nHost: app\r\n\r\n",
)
_add(
    "pipeline",
    "post-then-get",
    "POST /c?id=first HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\r\nhelloGET /c?id=second HTTP/1.1\r\nHost: app\r\n\r\n",
)
_add(
    "pipeline",
    "chunked-then-forged",
    "POST /c?id=first HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    f"GET /c?id=second HTTP/1.1\r\nHost: app\r\nX_Session: {FORGED}\r\n\r\n",
)
_add(
    "pipeline", "many", "".join(f"GET /c?id=m{i} HTTP/1.1\r\nHost: app\r\n\r\n" for i in range(20))
)
_add(
    "pipeline",
    "close-then-more",
    f"GET /c?id=first HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n{SMUGGLED}",
)

# --- HTTP versions --------------------------------------------------------------------------------------
_add(
    "version",
    "1.0-keep-alive",
    "GET /c?id=first HTTP/1.0\r\nHost: app\r\nConnection: keep-alive\r\n\r\nGET /c?id=second HTTP/1.0\r\nHost: app\r\n\r\n",
)
_add("version", "1.0-default-close", f"GET /c?id=first HTTP/1.0\r\nHost: app\r\n\r\n{SMUGGLED}")
_add(
    "version",
    "1.0-chunked",
    f"POST /c?id=first HTTP/1.0\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}",
)
_add("version", "1.0-no-host", "GET /c?id=first HTTP/1.0\r\n\r\n")
_add("version", "0.9", "GET /c?id=first\r\n\r\n")
_add("version", "1.2", "GET /c?id=first HTTP/1.2\r\nHost: app\r\n\r\n")
_add("version", "2.0", "GET /c?id=first HTTP/2.0\r\nHost: app\r\n\r\n")
_add("version", "lower", "GET /c?id=first http/1.1\r\nHost: app\r\n\r\n")
_add("version", "h2-preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
_add("version", "1.1-no-host", "GET /c?id=first HTTP/1.1\r\n\r\n")
_add("version", "two-hosts", "GET /c?id=first HTTP/1.1\r\nHost: app\r\nHost: evil.example\r\n\r\n")

# --- Expect ---------------------------------------------------------------------------------------------
for key, head in {
    "continue": "Expect: 100-continue\r\nContent-Length: 5",
    "continue-case": "Expect: 100-Continue\r\nContent-Length: 5",
    "continue-no-body": "Expect: 100-continue",
    "other": "Expect: 200-ok\r\nContent-Length: 5",
    "continue-chunked": "Expect: 100-continue\r\nTransfer-Encoding: chunked",
    "two": "Expect: 100-continue\r\nExpect: 100-continue\r\nContent-Length: 5",
}.items():
    body = "5\r\nhello\r\n0\r\n\r\n" if "chunked" in head else "hello"
    _add("expect", key, _req(head + "\r\n", body + SMUGGLED))

# --- upgrades of every kind --------------------------------------------------------------------------------
_WS = "Upgrade: websocket\r\nConnection: Upgrade\r\n"
for key, head in {
    "h2c": "Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n",
    "ws-no-key": _WS + "Sec-WebSocket-Version: 13\r\n",
    "ws-short-key": _WS + "Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n",
    "ws-bad-version": _WS
    + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n",
    "ws-no-version": _WS + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    "ws-two-keys": _WS
    + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
    "connection-only": "Connection: Upgrade\r\n",
    "upgrade-only": "Upgrade: websocket\r\n",
    "ws-and-h2c": "Upgrade: websocket, h2c\r\nConnection: Upgrade\r\n",
    "tls": "Upgrade: TLS/1.0\r\nConnection: Upgrade\r\n",
    "ws-forged-session": _WS
    + f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Session: {FORGED}\r\n",
}.items():
    _add("upgrade", key, f"GET /c?id=first HTTP/1.1\r\nHost: app\r\n{head}\r\n{SMUGGLED}")
_add(
    "upgrade",
    "ws-with-body",
    _req(
        _WS
        + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nContent-Length: 5\r\n",
        "hello" + SMUGGLED,
        method="GET",
    ),
)
_add(
    "upgrade",
    "post-ws",
    _req(
        _WS + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
        SMUGGLED,
    ),
)
_add(
    "upgrade",
    "http10-ws",
    f"GET /c?id=first HTTP/1.0\r\nHost: app\r\n{_WS}Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n{SMUGGLED}",
)

# --- trailers --------------------------------------------------------------------------------------------
for key, trailer in {
    "owned": f"X-Session: {FORGED}",
    "owned-underscore": f"X_Session_Status: {MARKER}",
    "owned-dot": f"X.Set.Session: {FORGED}",
    "cookie-chunk": f"Cookie: session.0={MARKER}",
    "content-length": "Content-Length: 60",
    "transfer-encoding": "Transfer-Encoding: chunked",
    "host": "Host: evil.example",
    "declared": f"Trailer: X-Session\r\nX-Session: {FORGED}",
}.items():
    _add(
        "trailer",
        key,
        _req(
            "Transfer-Encoding: chunked\r\nTrailer: X-Session\r\n",
            f"5\r\nhello\r\n0\r\n{trailer}\r\n\r\n",
        ),
    )

# --- methods ---------------------------------------------------------------------------------------------
for key, line in {
    "double-space": "GET  /c?id=first HTTP/1.1",
    "lower": "get /c?id=first HTTP/1.1",
    "nul": "G\x00T /c?id=first HTTP/1.1",
    "unknown-with-body": "BREW /c?id=first HTTP/1.1",
    "trace": "TRACE /c?id=first HTTP/1.1",
    "long": "A" * 5000 + " /c?id=first HTTP/1.1",
    "tab-separator": "GET\t/c?id=first HTTP/1.1",
    "trailing-space": "GET /c?id=first HTTP/1.1 ",
}.items():
    _add("method", key, f"{line}\r\nHost: app\r\nContent-Length: 5\r\n\r\nhello{SMUGGLED}")

# --- session chunk cookies in disguise --------------------------------------------------------------------
for key, cookie in {
    "comma": f"a=1, session.0={MARKER}",
    "quoted-name": f'"session.0"={MARKER}',
    "upper": f"SESSION.0={MARKER}",
    "leading-zero": f"session.00={MARKER}",
    "two-headers": f"a=1\r\nCookie: session.1={MARKER}",
    "nameless": "a=1; session.0",
}.items():
    _add("cookie", key, f"GET /c?id=first HTTP/1.1\r\nHost: app\r\nCookie: {cookie}\r\n\r\n")

CLASS_COUNTS: Final[dict[str, int]] = {}
for _case in CASES:
    CLASS_COUNTS[_case.cls] = CLASS_COUNTS.get(_case.cls, 0) + 1
