"""An example Starlette app using session_sidecar_asgi, also driven by
tests/integration/test_adapters.py (example_fastapi.py is the same app in FastAPI).

Routes: ``GET /session`` shows what the app read; ``POST /update`` changes the session with a
JSON body ``{"clear": true, "delete": [k], "set": {k: v}, "append": {k: item},
"nested": [[k, sub, v]]}`` (``append`` and ``nested`` change values in place); ``POST /raw-set``
writes its body as ``X-Set-Session`` itself (the adapter leaves it alone); the WebSocket
``/ws`` sets ``"ws": "accepted"`` in the session before it accepts, says hello and closes.
Every response says in ``X-Adapter-Wrote`` which session header was sent. Run:
``uvicorn --host 127.0.0.1 --port 8001 example_starlette:app``.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from session_sidecar_asgi import (
    PATCH_HEADER,
    SET_HEADER,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    SidecarSession,
    SidecarSessionMiddleware,
)
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket


def describe(request: Request) -> dict[str, Any]:
    session = request.session
    assert isinstance(session, SidecarSession)
    return {
        "status": session.status,
        "migrated": session.migrated,
        "raw": request.headers.get("X-Session"),
        "session": dict(session),
    }


def apply_change(session: MutableMapping[str, Any], change: dict[str, Any]) -> None:
    if change.get("clear"):
        session.clear()
    for key in change.get("delete", []):
        del session[key]
    for key, value in change.get("set", {}).items():
        session[key] = value
    for key, item in change.get("append", {}).items():
        session[key].append(item)
    for key, sub, value in change.get("nested", []):
        session[key][sub] = value


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def show_session(request: Request) -> JSONResponse:
    return JSONResponse(describe(request))


async def update_session(request: Request) -> JSONResponse:
    apply_change(request.session, await request.json())
    return JSONResponse({"ok": True})


async def raw_set(request: Request) -> JSONResponse:
    body = (await request.body()).decode()
    return JSONResponse({"ok": True}, headers={SET_HEADER: body})


async def greet(websocket: WebSocket) -> None:
    websocket.session["ws"] = "accepted"  # goes out on the 101, as a cookie from the proxy
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


class ReportWrites:
    """Copies the session header the adapter wrote into ``X-Adapter-Wrote``, which the proxy
    passes on (it never passes the session headers). Outside the adapter, so it sees it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def report(message: Message) -> None:
            if message["type"] == "http.response.start":
                owned = (PATCH_HEADER.lower().encode(), SET_HEADER.lower().encode())
                headers = list(message.get("headers", []))
                wrote = [f"{n.decode().title()} {v.decode()}" for n, v in headers if n in owned]
                headers.append((b"x-adapter-wrote", (wrote[0] if wrote else "none").encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, report)


app = Starlette(
    routes=[
        Route("/healthz", healthz),
        Route("/session", show_session),
        Route("/update", update_session, methods=["POST"]),
        Route("/raw-set", raw_set, methods=["POST"]),
        WebSocketRoute("/ws", greet),
    ],
    middleware=[Middleware(ReportWrites), Middleware(SidecarSessionMiddleware)],
)
