"""Django sessions behind session-sidecar: ``request.session`` keeps working.

Install it with ``pip install ./adapters/django`` (or copy this one file; it needs only Django),
then change one line of ``settings.MIDDLEWARE``, in the same place::

    MIDDLEWARE = [
        ...
        # was "django.contrib.sessions.middleware.SessionMiddleware":
        "session_sidecar_django.SidecarSessionMiddleware",
        ...
    ]

It replaces Django's session middleware rather than adding a session engine, because an engine
only ever sees the ``sessionid`` cookie and cannot write response headers. It subclasses
``SessionMiddleware``, so ``django.contrib.admin``'s check and ``AuthenticationMiddleware``
accept it, and ``django.contrib.sessions`` need not be installed (no table, no
``SESSION_ENGINE``).

``request.session`` is a Django session (``SessionBase``): item access, ``get``, ``pop``,
``setdefault``, ``items``, ``flush()`` (what ``logout()`` calls), ``cycle_key()`` (``login()``;
it keeps the data, and the proxy signs anew anyway), ``modified`` and ``accessed``. It holds the
``X-Session`` JSON when ``X-Session-Status`` is ``valid``, and is empty for every other status
(``absent``, ``expired``, ``invalid``, ``revoked``, or one added later): only ``valid`` is a
session. ``request.session.status`` and ``request.session.migrated`` say what the proxy saw.
There is no ``session_key``: the session lives in the proxy's cookies, which also decide its
expiry (``cookie.max_age``), not ``SESSION_COOKIE_AGE`` or ``set_expiry``.

At the end of the request, as Django's own middleware does, a response whose session was
accessed gets ``Vary: Cookie``, and nothing is saved for a 5xx response except a logout. The
session is compared with what was read, key by key, by its JSON, so a nested change
(``request.session["cart"].append(1)``) counts without ``request.session.modified = True``.
Then, only if something changed, one header is set:

- an emptied session (``flush()``, ``clear()``) as ``X-Set-Session: {}``;
- a change to some keys as ``X-Patch-Session``, an RFC 7396 merge patch of just those keys
  (a deleted key as ``null``);
- anything a merge patch cannot say (a value set to ``None``), or a patch no shorter than the
  whole session, as a full ``X-Set-Session``.

Values must be plain JSON (dict, list, str, int, float, bool, None; a tuple becomes a list).
JSON is written compact and ASCII only, non-ASCII as ``\\uXXXX``: header values must be ASCII.
A response that already carries ``X-Set-Session`` or ``X-Patch-Session`` is left alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from django.contrib.sessions.backends.base import SessionBase  # type: ignore[import-untyped]
from django.contrib.sessions.middleware import SessionMiddleware  # type: ignore[import-untyped]
from django.http import HttpRequest, HttpResponse  # type: ignore[import-untyped]
from django.utils.cache import patch_vary_headers  # type: ignore[import-untyped]
from django.utils.deprecation import MiddlewareMixin  # type: ignore[import-untyped]

__all__ = ["SidecarSession", "SidecarSessionMiddleware", "merge_patch_diff"]

SESSION_HEADER = "X-Session"
STATUS_HEADER = "X-Session-Status"
SET_HEADER = "X-Set-Session"
PATCH_HEADER = "X-Patch-Session"


class SidecarSession(SessionBase):  # type: ignore[misc]
    """The session the proxy sent, with Django's session API. Nothing is stored here: the
    middleware sends what changed back to the proxy as a header."""

    def __init__(self, data: dict[str, Any], status: str, migrated: bool) -> None:
        super().__init__(session_key=None)
        self._session_cache = data
        #: ``valid``, or why there is no session (``absent``, ``expired``, ...).
        self.status = status
        #: True when the proxy read this session from a legacy Flask cookie (``migrate:``).
        self.migrated = migrated
        #: What was read, kept apart from the live dict, to compare with at the end.
        self.original: dict[str, Any] = json.loads(dump_json(data))

    @classmethod
    def from_headers(cls, meta: Mapping[str, Any]) -> SidecarSession:
        """The session in a WSGI or ASGI request's ``META``; empty unless ``valid``."""
        status = str(meta.get(_meta_name(STATUS_HEADER), "absent"))
        data = read_session(status, meta.get(_meta_name(SESSION_HEADER)))
        migrated = _meta_name(f"{SESSION_HEADER}-Migrated") in meta
        return cls(data, status, migrated)

    # Django's storage methods: there is no store, so there is nothing to load or keep.

    def exists(self, session_key: str | None) -> bool:
        return False

    def create(self) -> None:
        self.modified = True

    def save(self, must_create: bool = False) -> None:
        pass

    def delete(self, session_key: str | None = None) -> None:
        pass

    def load(self) -> dict[str, Any]:
        return {}


class SidecarSessionMiddleware(SessionMiddleware):  # type: ignore[misc]
    """Django's ``SessionMiddleware``, with the proxy's headers in place of a store."""

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        MiddlewareMixin.__init__(self, get_response)  # not SessionMiddleware's: no engine

    def process_request(self, request: HttpRequest) -> None:
        request.session = SidecarSession.from_headers(request.META)

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        session = getattr(request, "session", None)
        if not isinstance(session, SidecarSession) or not session.accessed:
            return response  # never read: neither changed nor depended on
        patch_vary_headers(response, ("Cookie",))
        if SET_HEADER in response or PATCH_HEADER in response:
            return response
        header = session_header(session.original, dict(session.items()))
        # Django keeps a 5xx response's session unsaved, but deletes an emptied one anyway.
        if header is not None and (response.status_code < 500 or header == (SET_HEADER, "{}")):
            response[header[0]] = header[1]
        return response


def _meta_name(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


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
