"""Send sessions of an exact size through the proxy and find the size a backend first refuses.

The session is minted with the proxy's own codec (from the configuration file the proxy runs
with), so a probe costs one request and no backend write. ``{"blob":"xxx..."}`` compresses to a
few cookies of any size, so only the backend's request-header limit is tried.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final

from proxy.config import load_config
from proxy.proxy_state import codec_from_config
from proxy.session_codec import SessionCodec

#: The 10 bytes of ``{"blob":""}`` around the padding.
_FRAME: Final = len('{"blob":""}')
#: A run this long of the padding in a reply means the server quoted the session back.
ECHO_RUN: Final = "x" * 64


#: Appended to a body that ended before its Content-Length: the connection was cut.
CUT_SHORT: Final = b"<cut short>"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the client got for one request through the proxy."""

    size: int
    status: int
    content_type: str
    body: bytes

    @property
    def echoes_session(self) -> bool:
        return ECHO_RUN.encode() in self.body or b'{"blob"' in self.body

    def summary(self) -> str:
        """Status and the start of the body, with any quoted session cut out."""
        text = self.body[:160].decode("latin-1").replace("\r", "").replace("\n", " ")
        if self.echoes_session:
            text = text.split('{"blob"')[0].split("xxxxxxxx")[0] + "<session...>"
        return f"{self.status} {self.content_type} {text!r}"


def session_of(size: int) -> str:
    """Compact session JSON of exactly ``size`` bytes."""
    return json.dumps({"blob": "x" * (size - _FRAME)}, separators=(",", ":"))


@cache
def _codec(config_path: Path) -> SessionCodec:
    return codec_from_config(load_config(config_path))


def cookie_header(config_path: Path, session: str) -> str:
    """The Cookie header a browser holding ``session`` sends to the proxy run from that file."""
    encoded = _codec(config_path).encode(session)
    return "; ".join(f"{c.name}={c.value}" for c in encoded.cookies)


def get(port: int, path: str, cookie: str | None = None) -> tuple[int, str, bytes, list[str]]:
    """GET ``path`` from the proxy: status, content type, body and the Set-Cookie values."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        response = connection.getresponse()
        try:
            body = response.read()
        except http.client.IncompleteRead as cut:
            body = cut.partial + CUT_SHORT
        cookies = response.headers.get_all("Set-Cookie") or []
        return response.status, response.headers.get("Content-Type", ""), body, cookies
    finally:
        connection.close()


def probe(port: int, config_path: Path, size: int, path: str = "/whoami") -> Outcome:
    """Send a session of ``size`` bytes; the outcome's status is 200 only if it arrived whole."""
    session = session_of(size)
    status, content_type, body, _ = get(port, path, cookie_header(config_path, session))
    if (
        status == 200
        and json.loads(body.removesuffix(CUT_SHORT) or b"{}").get("session_raw") != session
    ):
        status = -1  # answered, but the session did not arrive as sent
    return Outcome(size, status, content_type, body)


def first_failure(
    port: int, config_path: Path, steps: tuple[int, ...], max_bisections: int = 20
) -> Outcome | None:
    """The outcome at the smallest size that fails, or None if every step passes.

    Coarse ``steps`` find the first failing step; bisection between it and the step before
    finds the exact byte in at most ``max_bisections`` more requests.
    """
    passed = 0
    failed: Outcome | None = None
    for size in steps:
        outcome = probe(port, config_path, size)
        if outcome.status != 200:
            failed = outcome
            break
        passed = size
    if failed is None:
        return None
    for _ in range(max_bisections):
        if failed.size - passed <= 1:
            break
        middle = (passed + failed.size) // 2
        outcome = probe(port, config_path, middle)
        if outcome.status == 200:
            passed = middle
        else:
            failed = outcome
    return failed
