"""An example Flask app using session_sidecar_flask, also driven by
tests/integration/test_adapters.py.

Routes: ``GET /session`` shows what the app read; ``POST /update`` changes the session with a
JSON body ``{"clear": true, "delete": [k], "set": {k: v}, "append": {k: item},
"nested": [[k, sub, v]]}`` (``append`` and ``nested`` change values in place, without
``session.modified``); ``POST /raw-set`` writes its body as ``X-Set-Session`` itself (the
adapter leaves it alone). Every response says in ``X-Adapter-Wrote`` which session header was
sent. Run: ``gunicorn -b 127.0.0.1:8001 example_app:app``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Response, jsonify, request, session
from session_sidecar_flask import PATCH_HEADER, SET_HEADER, SidecarSession, SidecarSessionInterface

app = Flask(__name__)
app.session_interface = SidecarSessionInterface()


@app.get("/healthz")
def healthz() -> str:
    return "ok"


@app.get("/session")
def show_session() -> Response:
    assert isinstance(session, SidecarSession)
    return jsonify(
        status=session.status,
        migrated=session.migrated,
        raw=request.headers.get("X-Session"),
        session=dict(session),
    )


@app.post("/update")
def update_session() -> Response:
    change: dict[str, Any] = request.get_json()
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
    return jsonify(ok=True)


@app.post("/raw-set")
def raw_set() -> Response:
    response = jsonify(ok=True)
    response.headers[SET_HEADER] = request.get_data(as_text=True)
    return response


StartResponse = Callable[..., Any]


def report_writes(wsgi_app: Callable[[dict[str, Any], StartResponse], Iterable[bytes]]) -> Any:
    """Copy the session header the adapter wrote into ``X-Adapter-Wrote``, which the proxy
    passes on (it never passes the session headers)."""

    def wrapped(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
            wrote = [f"{n} {v}" for n, v in headers if n in (PATCH_HEADER, SET_HEADER)]
            headers.append(("X-Adapter-Wrote", wrote[0] if wrote else "none"))
            return start_response(status, headers, *args)

        return wsgi_app(environ, start)

    return wrapped


app.wsgi_app = report_writes(app.wsgi_app)  # type: ignore[method-assign]
