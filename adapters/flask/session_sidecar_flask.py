"""Flask sessions behind session-sidecar: ``session["cart"] = ...`` keeps working.

Copy this one file into your app (it needs only Flask) and install the interface::

    from session_sidecar_flask import SidecarSessionInterface
    app.session_interface = SidecarSessionInterface()

The session is read from the ``X-Session`` request header, which the proxy sets on every
request and strips from clients, so it is trusted as is, but only when ``X-Session-Status`` is
``valid``: for every other status (``absent``, ``expired``, ``invalid``, ``revoked``, or one
added later) and without one, the session is empty. At the end of the request the
session is compared with what was read, key by key, by its JSON, so a nested change
(``session["cart"].append(1)``) is seen without ``session.modified = True`` (which is harmless).
Then, only if something changed:

- an emptied session (``session.clear()``) is sent as ``X-Set-Session: {}``;
- a change to some keys as ``X-Patch-Session``, an RFC 7396 merge patch of just those keys
  (a deleted key as ``null``);
- anything a merge patch cannot say (a value set to ``None``), or a patch no shorter than the
  whole session, as a full ``X-Set-Session``.

Values must be plain JSON (dict, list, str, int, float, bool, None; a tuple becomes a list).
JSON is written compact and ASCII only, non-ASCII as ``\\uXXXX``: header values must be ASCII.
A response that already carries ``X-Set-Session`` or ``X-Patch-Session`` is left alone.

Like Flask's own session interface, a response gets ``Vary: Cookie`` whenever the session was
read or written: the session comes from the client's cookies, so a shared cache must key on them.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Flask, Request, Response
from flask.sessions import SessionInterface, SessionMixin
from werkzeug.datastructures import CallbackDict

__all__ = ["SidecarSession", "SidecarSessionInterface", "merge_patch_diff"]

SESSION_HEADER = "X-Session"
STATUS_HEADER = "X-Session-Status"
SET_HEADER = "X-Set-Session"
PATCH_HEADER = "X-Patch-Session"


def dump_json(value: Any) -> str:
    """Compact, ASCII-only JSON: what a header value may carry."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


class SidecarSession(CallbackDict[str, Any], SessionMixin):
    """The session the proxy sent, as a dict. ``modified`` is set by any top-level write."""

    def __init__(self, initial: dict[str, Any], status: str, migrated: bool) -> None:
        def on_update(self: SidecarSession) -> None:
            self.modified = True
            self.accessed = True

        super().__init__(initial, on_update)
        #: ``valid``, or why there is no session (``absent``, ``expired``, ...).
        self.status = status
        #: True when the proxy read this session from a legacy Flask cookie (``migrate:``).
        self.migrated = migrated
        self.new = status != "valid"
        self.modified = False
        #: What was read, kept apart from the live dict, to compare with at the end.
        self.original: dict[str, Any] = json.loads(json.dumps(initial))
        self.accessed = False

    # Flask before 3.1.3 counts a read as these calls, as its SecureCookieSession did; from
    # 3.1.3 on the request context also marks any use of ``flask.session``.
    def __getitem__(self, key: str) -> Any:
        self.accessed = True
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.accessed = True
        return super().get(key, default)

    def setdefault(self, key: str, default: Any = None) -> Any:
        self.accessed = True
        return super().setdefault(key, default)


class SidecarSessionInterface(SessionInterface):
    """A Flask ``SessionInterface`` that reads ``X-Session`` and writes only what changed."""

    def open_session(self, app: Flask, request: Request) -> SidecarSession:
        status = request.headers.get(STATUS_HEADER, "absent")
        data = read_session(status, request.headers.get(SESSION_HEADER))
        migrated = request.headers.get(f"{SESSION_HEADER}-Migrated") is not None
        return SidecarSession(data, status, migrated)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if not isinstance(session, SidecarSession):
            return
        if session.accessed:
            response.vary.add("Cookie")
        if SET_HEADER in response.headers or PATCH_HEADER in response.headers:
            return
        header = session_header(session.original, dict(session))
        if header is not None:
            response.headers[header[0]] = header[1]
            response.vary.add("Cookie")


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
