"""An example backend behind session-sidecar, written with aiohttp.

The sidecar owns the cookies; this app only ever sees and writes JSON:

* Reading: every request carries ``X-Session`` (a compact JSON object, ``{}`` when there is
  no session) and ``X-Session-Status`` (``absent``, ``valid``, ``expired`` or ``invalid``).
  The sidecar removes any copy a client sent, so both can be trusted.
* Writing: answer with ``X-Set-Session: <JSON object>`` to replace the session, or with
  ``{}`` or ``null`` to clear it. The sidecar turns it into cookies and never forwards it.

Run it with ``HOST=127.0.0.1 PORT=8001 python app.py``; it stops cleanly on SIGTERM.
"""

import asyncio
import base64
import hashlib
import json
import os
import re
import signal
from typing import Any

from aiohttp import WSMsgType, web

BACKEND = "python"
CHUNK = 64 * 1024
# A 48 KB X-Session beside a 60 KB Cookie must fit; aiohttp's default limit is 8 KB a line.
MAX_HEADER_BYTES = 128 * 1024
MAX_GROW_KB = 4096
MAX_SLEEP_SECONDS = 600.0
# Bytes that cannot appear in a header value (RFC 9110 section 5.5): controls other than tab.
UNSENDABLE_IN_HEADER = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

JSONObject = dict[str, Any]


def dump_session(session: object) -> str:
    """Serialise for X-Set-Session: compact and ASCII-only, as header values must be."""
    return json.dumps(session, separators=(",", ":"), ensure_ascii=True)


def read_session(request: web.Request) -> JSONObject:
    """The current session from X-Session, or an empty one if it is missing or unreadable."""
    try:
        session = json.loads(request.headers.get("X-Session", "{}"))
    except ValueError:
        return {}
    return session if isinstance(session, dict) else {}


def json_response(body: object, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


def bad_request(message: str) -> web.Response:
    return json_response({"error": message}, status=400)


async def read_json_object(request: web.Request) -> JSONObject | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def int_param(request: web.Request, name: str, default: int, maximum: int) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if 0 <= value <= maximum else None


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def whoami(request: web.Request) -> web.Response:
    raw_session = request.headers.get("X-Session")
    session: object = None
    if raw_session is not None:
        try:
            session = json.loads(raw_session)
        except ValueError:
            session = None
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    cookies = request.headers.getall("Cookie", [])
    return json_response(
        {
            "backend": BACKEND,
            "path": request.raw_path,
            "method": request.method,
            "session": session,
            "session_raw": raw_session,
            "status": request.headers.get("X-Session-Status"),
            "cookie": "; ".join(cookies) if cookies else None,
            "headers": headers,
        }
    )


async def replace_session(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    if body is None:
        return bad_request("body must be a JSON object")
    response = json_response({"ok": True})
    response.headers["X-Set-Session"] = dump_session(body)
    return response


async def merge_session(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    if body is None:
        return bad_request("body must be a JSON object")
    merged = read_session(request) | body
    response = json_response(merged)
    response.headers["X-Set-Session"] = dump_session(merged)
    return response


async def clear_session(request: web.Request) -> web.Response:
    response = json_response({"ok": True})
    response.headers["X-Set-Session"] = "{}"
    return response


async def grow_session(request: web.Request) -> web.Response:
    kb = int_param(request, "kb", default=1, maximum=MAX_GROW_KB)
    if kb is None:
        return bad_request(f"kb must be an integer from 0 to {MAX_GROW_KB}")
    session = read_session(request)
    # 768 random bytes are exactly 1024 base64 characters, none of which compress.
    session[request.query.get("key", "blob")] = base64.urlsafe_b64encode(
        os.urandom(768 * kb)
    ).decode()
    encoded = dump_session(session)
    response = json_response({"bytes": len(encoded)})
    response.headers["X-Set-Session"] = encoded
    return response


async def raw_set_session(request: web.Request) -> web.Response:
    values = request.query.getall("value", [])
    if not values:
        return bad_request("value is required")
    if any(UNSENDABLE_IN_HEADER.search(value) for value in values):
        return bad_request("value cannot be sent in a header")
    response = json_response({"ok": True})
    for value in values:  # Each ?value= becomes its own header line.
        response.headers.add("X-Set-Session", value)
    return response


async def set_cookies(request: web.Request) -> web.Response:
    response = json_response({"ok": True})
    response.headers.add("Set-Cookie", "a=1; Path=/")
    response.headers.add("Set-Cookie", "b=2; Path=/; HttpOnly")
    # The sidecar owns session.* cookies and must drop this one.
    response.headers.add("Set-Cookie", "session.0=evil; Path=/")
    return response


async def slow(request: web.Request) -> web.Response:
    try:
        seconds = float(request.query.get("seconds", "1"))
    except ValueError:
        return bad_request("seconds must be a number")
    if not 0 <= seconds <= MAX_SLEEP_SECONDS:
        return bad_request(f"seconds must be from 0 to {MAX_SLEEP_SECONDS}")
    await asyncio.sleep(seconds)
    return json_response({"slept": seconds})


async def echo(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    if request.content_length is not None:
        response.content_length = request.content_length
    await response.prepare(request)
    async for chunk in request.content.iter_chunked(CHUNK):
        await response.write(chunk)
    await response.write_eof()
    return response


async def upload(request: web.Request) -> web.Response:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_chunked(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return json_response({"bytes": size, "sha256": digest.hexdigest()})


async def download(request: web.Request) -> web.StreamResponse:
    size = int_param(request, "bytes", default=0, maximum=2**40)
    if size is None:
        return bad_request("bytes must be a non-negative integer")
    piece = bytes(range(256)) * (CHUNK // 256)
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = size
    await response.prepare(request)
    remaining = size if request.method != "HEAD" else 0  # HEAD: the same head, no body
    while remaining > 0:
        await response.write(piece[: min(remaining, CHUNK)])  # Waits while the client is slow.
        remaining -= CHUNK
    await response.write_eof()
    return response


async def reset(request: web.Request) -> web.StreamResponse:
    """Promise a megabyte, send a kilobyte, hang up: an upstream dying mid-body."""
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = 1_000_000
    await response.prepare(request)
    await response.write(b"x" * 1000)
    assert request.transport is not None
    request.transport.close()
    return response


async def websocket_echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=("chat", "superchat"))
    await ws.prepare(request)
    handshake_session = request.headers.get("X-Session", "")
    async for message in ws:
        if message.type is WSMsgType.TEXT:
            if message.data == "close":
                await ws.close(code=4001, message=b"bye")
            elif message.data == "session":
                await ws.send_str(handshake_session)
            else:
                await ws.send_str(message.data)
        elif message.type is WSMsgType.BINARY:
            await ws.send_bytes(message.data)
    return ws


async def not_found(request: web.Request) -> web.Response:
    return json_response({"error": "not found"}, status=404)


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/whoami", whoami)
    app.router.add_post("/session", replace_session)
    app.router.add_post("/session/merge", merge_session)
    app.router.add_post("/session/clear", clear_session)
    app.router.add_get("/session/grow", grow_session)
    app.router.add_get("/raw-set-session", raw_set_session)
    app.router.add_get("/set-cookies", set_cookies)
    app.router.add_get("/slow", slow)
    app.router.add_post("/echo", echo)
    app.router.add_post("/upload", upload)
    app.router.add_get("/download", download)
    app.router.add_get("/reset", reset)
    app.router.add_get("/ws", websocket_echo)
    app.router.add_get("/{tail:.*}", whoami)  # Any other GET says who it reached.
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app


async def serve(host: str, port: int) -> None:
    runner = web.AppRunner(
        make_app(),
        max_line_size=MAX_HEADER_BYTES,
        max_field_size=MAX_HEADER_BYTES,
        shutdown_timeout=1.0,  # Let requests in flight finish for a moment, then drop them.
    )
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(f"listening on {host}:{port}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    asyncio.run(serve(os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "8001"))))


if __name__ == "__main__":
    main()
