"""ASGI sessions behind session-sidecar: ``request.session`` in Starlette and FastAPI.

Install it with ``pip install ./adapters/asgi`` (or copy this one file: it needs nothing but
the standard library), and add it where Starlette's own ``SessionMiddleware`` would go::

    app = Starlette(routes=..., middleware=[Middleware(SidecarSessionMiddleware)])
    app = FastAPI(); app.add_middleware(SidecarSessionMiddleware)

Like Starlette's middleware it puts the session in ``scope["session"]``, which is what
``request.session`` returns: a dict, here a :class:`SidecarSession` that also says
``.status`` and ``.migrated``. It holds the ``X-Session`` JSON when ``X-Session-Status`` is
``valid``, and is empty for every other status (``absent``, ``expired``, ``invalid``,
``revoked``, or one added later): only ``valid`` is a session. WebSocket connections get one
too. It is plain ASGI, so any ASGI framework that reads ``scope["session"]`` can use it.

When the response starts (``http.response.start``, or ``websocket.accept``, whose header the
proxy writes on its ``101``), the session is compared with what was read, key by key, by its
JSON, so a nested change (``request.session["cart"].append(1)``) counts. Then, only if
something changed, one header is set:

- an emptied session (``request.session.clear()``) as ``X-Set-Session: {}``;
- a change to some keys as ``X-Patch-Session``, an RFC 7396 merge patch of just those keys
  (a deleted key as ``null``);
- anything a merge patch cannot say (a value set to ``None``), or a patch no shorter than the
  whole session, as a full ``X-Set-Session``.

A response to a request that had a session, or that changes it, gets ``Cookie`` in its
``Vary``, merged with the app's own (RFC 9110 section 12.5.5), so that no shared cache serves
one user's page to another. Values must be plain JSON; JSON is written compact and ASCII only,
non-ASCII as ``\\uXXXX``. A response that already carries ``X-Set-Session`` or
``X-Patch-Session`` is left alone.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["SidecarSession", "SidecarSessionMiddleware", "merge_patch_diff"]

SESSION_HEADER = "X-Session"
STATUS_HEADER = "X-Session-Status"
SET_HEADER = "X-Set-Session"
PATCH_HEADER = "X-Patch-Session"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_OWNED = {SET_HEADER.lower().encode(), PATCH_HEADER.lower().encode()}
_STARTS = {"http.response.start", "websocket.accept"}


class SidecarSession(dict[str, Any]):
    """The session the proxy sent, as a dict."""

    def __init__(self, data: dict[str, Any], status: str, migrated: bool) -> None:
        super().__init__(data)
        #: ``valid``, or why there is no session (``absent``, ``expired``, ...).
        self.status = status
        #: True when the proxy read this session from a legacy Flask cookie (``migrate:``).
        self.migrated = migrated
        #: What was read, kept apart from the live dict, to compare with at the end.
        self.original: dict[str, Any] = json.loads(dump_json(data))

    @classmethod
    def from_headers(cls, headers: dict[bytes, bytes]) -> SidecarSession:
        """The session in a request's headers (lower-case names); empty unless ``valid``."""
        status = headers.get(STATUS_HEADER.lower().encode(), b"absent").decode("latin-1")
        data = read_session(status, headers.get(SESSION_HEADER.lower().encode()))
        migrated = f"{SESSION_HEADER}-Migrated".lower().encode() in headers
        return cls(data, status, migrated)


class SidecarSessionMiddleware:
    """ASGI middleware: ``scope["session"]`` in, the session header out when it changed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        session = SidecarSession.from_headers(dict(scope["headers"]))
        scope["session"] = session

        async def send_with_session(message: Message) -> None:
            if message["type"] in _STARTS:
                message["headers"] = with_session_headers(message.get("headers", []), session)
            await send(message)

        await self.app(scope, receive, send_with_session)


def with_session_headers(headers: Any, session: SidecarSession) -> list[tuple[bytes, bytes]]:
    """The response's headers with the session header, if the session changed, and Vary."""
    result = [(bytes(name), bytes(value)) for name, value in headers]
    names = {name.lower() for name, _ in result}
    header = None if names & _OWNED else session_header(session.original, dict(session))
    if header is not None:
        result.append((header[0].lower().encode(), header[1].encode()))  # ASGI: lower case
    if header is not None or session.original:
        result = vary_on_cookie(result)
    return result


def vary_on_cookie(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` whose ``Vary`` names ``Cookie`` (or is ``*``), the app's own fields kept."""
    tokens = [
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"vary"
        for token in value.split(b",")
    ]
    if b"cookie" in tokens or b"*" in tokens:
        return headers
    return [*headers, (b"vary", b"Cookie")]


def dump_json(value: Any) -> str:
    """Compact, ASCII-only JSON: what a header value may carry."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


# The rules below are session_sidecar_flask's, word for word, so that each adapter stays one
# file with one dependency; tests/unit/test_python_adapters.py keeps the copies the same.


def read_session(status: str, raw: str | bytes | None) -> dict[str, Any]:
    """The session in ``X-Session`` when ``X-Session-Status`` is ``valid``; ``{}`` for any other
    status (``absent``, ``expired``, ``invalid``, ``revoked``, one added later, or none), and
    for a value that is not a JSON object: only ``valid`` is a session."""
    if status != "valid" or raw is None:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def session_header(old: dict[str, Any], new: dict[str, Any]) -> tuple[str, str] | None:
    """The header that turns session ``old`` into ``new``, or None when they are the same."""
    new = json.loads(dump_json(new))  # plain JSON from here on: a tuple is a list
    if not new:
        return (SET_HEADER, "{}") if old else None
    patch = merge_patch_diff(old, new)
    if patch == {}:
        return None
    full = dump_json(new)
    if patch is not None and len(patch_json := dump_json(patch)) < len(full):
        return PATCH_HEADER, patch_json
    return SET_HEADER, full


def merge_patch_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any] | None:
    """An RFC 7396 merge patch that turns ``old`` into ``new``, or None if none can.

    A removed member is ``null``; a member that is an object on both sides is diffed in turn
    (a whole object would merge, not replace); a member whose new value is, or holds in an
    object, a ``null`` cannot be said by a merge patch.
    """
    patch: dict[str, Any] = {}
    for name in old.keys() - new.keys():
        patch[name] = None
    for name, value in new.items():
        before = old.get(name, _MISSING)
        if before is not _MISSING and dump_json(before) == dump_json(value):
            continue
        if isinstance(value, dict) and isinstance(before, dict):
            inner = merge_patch_diff(before, value)
            if inner is None:
                return None
            patch[name] = inner
        elif value is None or (isinstance(value, dict) and _holds_member_null(value)):
            return None
        else:
            patch[name] = value
    return patch


_MISSING: Any = object()


def _holds_member_null(value: dict[str, Any]) -> bool:
    """True if a merge patch of ``value`` would drop a member: a ``null`` in an object."""
    return any(v is None or (isinstance(v, dict) and _holds_member_null(v)) for v in value.values())
