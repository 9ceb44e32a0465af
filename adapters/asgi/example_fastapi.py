"""The example app of example_starlette.py in FastAPI, also driven by
tests/integration/test_adapters.py: the same routes and the same ``X-Adapter-Wrote``, with
the adapter added by ``app.add_middleware``. Run:
``uvicorn --host 127.0.0.1 --port 8001 example_fastapi:app``.
"""

from __future__ import annotations

from typing import Annotated, Any

from example_starlette import ReportWrites, apply_change, describe, greet
from fastapi import Body, FastAPI, Request, Response, WebSocket
from session_sidecar_asgi import SET_HEADER, SidecarSessionMiddleware

app = FastAPI()
app.add_middleware(SidecarSessionMiddleware)
app.add_middleware(ReportWrites)  # added last, so it is outside the adapter


@app.get("/healthz")
async def healthz() -> Response:
    return Response("ok", media_type="text/plain")


@app.get("/session")
async def show_session(request: Request) -> dict[str, Any]:
    return describe(request)


@app.post("/update")
async def update_session(
    request: Request, change: Annotated[dict[str, Any], Body()]
) -> dict[str, bool]:
    apply_change(request.session, change)
    return {"ok": True}


@app.post("/raw-set")
async def raw_set(request: Request, response: Response) -> dict[str, bool]:
    response.headers[SET_HEADER] = (await request.body()).decode()
    return {"ok": True}


@app.websocket("/ws")
async def websocket(websocket: WebSocket) -> None:
    await greet(websocket)
