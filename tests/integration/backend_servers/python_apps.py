"""The WSGI and ASGI apps behind gunicorn, uvicorn, Hypercorn and gunicorn's uvicorn workers.

``/unicode?ascii=0`` writes ``{"name":"€"}`` as a header of raw text, the way a WSGI app would
with ``json.dumps(..., ensure_ascii=False)``; ``ascii=1`` writes the ``\\u20ac`` escape.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

#: The largest session /session/grow writes, so a stray request cannot exhaust memory.
MAX_GROW_KB = 1024

Route = tuple[int, list[tuple[str, str]], bytes]


def respond(path: str, query: str, headers: dict[str, str]) -> Route:
    """Status, response headers (text) and body for one request; ``headers`` lower-cased."""
    params = parse_qs(query)
    if path == "/healthz":
        return 200, [("Content-Type", "text/plain")], b"ok"
    if path == "/session/grow":
        kb = min(int(params.get("kb", ["1"])[0]), MAX_GROW_KB)
        encoded = json.dumps({"blob": "x" * (kb * 1024)}, separators=(",", ":"))
        body = json.dumps({"bytes": len(encoded)}).encode()
        return 200, [("Content-Type", "application/json"), ("X-Set-Session", encoded)], body
    if path == "/unicode":
        escape = params.get("ascii", ["1"])[0] == "1"
        encoded = json.dumps({"name": "\u20ac"}, ensure_ascii=escape, separators=(",", ":"))
        return 200, [("Content-Type", "application/json"), ("X-Set-Session", encoded)], b"{}"
    body = json.dumps(
        {"status": headers.get("x-session-status"), "session_raw": headers.get("x-session")}
    ).encode()
    return 200, [("Content-Type", "application/json")], body


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    headers = {
        key[5:].replace("_", "-").lower(): str(value)
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    status, response_headers, body = respond(
        environ.get("PATH_INFO", "/"), environ.get("QUERY_STRING", ""), headers
    )
    response_headers.append(("Content-Length", str(len(body))))
    start_response(f"{status} OK", response_headers)
    return [body]


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": message["type"] + ".complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "http":
        return
    headers = {n.decode("latin-1"): v.decode("latin-1") for n, v in scope["headers"]}
    status, response_headers, body = respond(
        scope["path"], scope["query_string"].decode("latin-1"), headers
    )
    # ASGI headers are bytes: the app chooses the encoding, here UTF-8 for the raw-text case.
    raw = [(n.lower().encode(), v.encode("utf-8")) for n, v in response_headers]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
