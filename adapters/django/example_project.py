"""An example Django project in one file using session_sidecar_django, also driven by
tests/integration/test_adapters.py.

Its MIDDLEWARE is Django's default list with the one line changed, and it keeps
``django.contrib.auth``'s middleware (``request.user`` reads the session). Routes: ``GET
/session`` shows what the app read; ``POST /update`` changes the session with a JSON body
``{"clear": true, "delete": [k], "set": {k: v}, "append": {k: item}, "nested": [[k, sub, v]]}``
(``append`` and ``nested`` change values in place, without ``session.modified``), and also
``"flush": true`` (``request.session.flush()``) and ``"cycle": true`` (``cycle_key()``); ``POST
/logout`` is ``django.contrib.auth.logout``; ``POST /raw-set`` writes its body as
``X-Set-Session`` itself (the adapter leaves it alone). Every response says in
``X-Adapter-Wrote`` which session header was sent. Run:
``gunicorn -b 127.0.0.1:8001 example_project:application``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import django  # type: ignore[import-untyped]
from django.conf import settings  # type: ignore[import-untyped]
from django.contrib.auth import logout  # type: ignore[import-untyped]
from django.core.wsgi import get_wsgi_application  # type: ignore[import-untyped]
from django.http import HttpRequest, HttpResponse, JsonResponse  # type: ignore[import-untyped]
from django.urls import path  # type: ignore[import-untyped]
from session_sidecar_django import PATCH_HEADER, SET_HEADER, SidecarSession

settings.configure(
    DEBUG=False,
    # Only for Django's own signing (none here); the session is signed by the proxy.
    SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "example-project-only-not-a-secret"),
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    MIDDLEWARE=[
        f"{__name__}.report_writes",
        "django.middleware.security.SecurityMiddleware",
        # The one line that changes: it was django.contrib.sessions.middleware.SessionMiddleware.
        "session_sidecar_django.SidecarSessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
    ],
)
django.setup()


def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


def show_session(request: HttpRequest) -> JsonResponse:
    session = request.session
    assert isinstance(session, SidecarSession)
    return JsonResponse(
        {
            "status": session.status,
            "migrated": session.migrated,
            "raw": request.headers.get("X-Session"),
            "session": dict(session.items()),
            "user_authenticated": request.user.is_authenticated,
        }
    )


def update_session(request: HttpRequest) -> JsonResponse:
    change: dict[str, Any] = json.loads(request.body)
    session = request.session
    if change.get("clear"):
        session.clear()
    if change.get("flush"):
        session.flush()
    if change.get("cycle"):
        session.cycle_key()
    for key in change.get("delete", []):
        del session[key]
    for key, value in change.get("set", {}).items():
        session[key] = value
    for key, item in change.get("append", {}).items():
        session[key].append(item)
    for key, sub, value in change.get("nested", []):
        session[key][sub] = value
    return JsonResponse({"ok": True})


def log_out(request: HttpRequest) -> JsonResponse:
    logout(request)
    return JsonResponse({"ok": True})


def raw_set(request: HttpRequest) -> JsonResponse:
    response = JsonResponse({"ok": True})
    response[SET_HEADER] = request.body.decode()
    return response


Handler = Callable[[HttpRequest], HttpResponse]


def report_writes(get_response: Handler) -> Handler:
    """Copy the session header the adapter wrote into ``X-Adapter-Wrote``, which the proxy
    passes on (it never passes the session headers). First in MIDDLEWARE: it sees the response
    after the adapter has written."""

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        wrote = [
            f"{name} {response[name]}" for name in (PATCH_HEADER, SET_HEADER) if name in response
        ]
        response["X-Adapter-Wrote"] = wrote[0] if wrote else "none"
        return response

    return middleware


# The proxy's health check and the routes the tests use; csrf is Django's, left out of this
# JSON example (a form-based app keeps CsrfViewMiddleware).
urlpatterns = [
    path("healthz", healthz),
    path("session", show_session),
    path("update", update_session),
    path("logout", log_out),
    path("raw-set", raw_set),
]

application = get_wsgi_application()
