"""One echo backend for gunicorn (WSGI) and uvicorn (ASGI): it records what it parsed.

``/__requests`` returns (and forgets) every request this worker parsed: method, target and
headers as the server handed them over. Any other target answers JSON with ``?id=``. Run one
worker, so one process holds the whole record.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

SEEN: list[dict[str, Any]] = []


def _answer(method: str, target: str, query: str, headers: list[tuple[str, str]]) -> bytes:
    if target == "/__requests":
        body = json.dumps(SEEN)
        SEEN.clear()
        return body.encode()
    SEEN.append(
        {"method": method, "url": target + ("?" + query if query else ""), "headers": headers}
    )
    return json.dumps({"id": parse_qs(query).get("id", [None])[0], "target": target}).encode()


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    stream = environ["wsgi.input"]
    while stream.read(65536):
        pass
    headers = [(k[5:], str(v)) for k, v in environ.items() if k.startswith("HTTP_")]
    for key in ("CONTENT_LENGTH", "CONTENT_TYPE"):
        if environ.get(key):
            headers.append((key, environ[key]))
    body = _answer(
        environ["REQUEST_METHOD"],
        environ.get("PATH_INFO", ""),
        environ.get("QUERY_STRING", ""),
        headers,
    )
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


Scope = MutableMapping[str, Any]


async def asgi_app(
    scope: Scope,
    receive: Callable[[], Awaitable[Scope]],
    send: Callable[[Scope], Awaitable[None]],
) -> None:
    if scope["type"] != "http":
        return
    while True:
        message = await receive()
        if not message.get("more_body"):
            break
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
    body = _answer(scope["method"], scope["path"], scope["query_string"].decode("latin-1"), headers)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
