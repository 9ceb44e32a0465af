"""Django's runserver behind the sidecar: settings, URLs and views in one module.

Run with ``django-admin runserver --noreload --settings=tests.integration.backend_servers.
django_site``. Routes: see __init__.py, plus ``/unicode?ascii=0|1`` as in python_apps.py.
"""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse, JsonResponse  # type: ignore[import-untyped]
from django.urls import path  # type: ignore[import-untyped]

DEBUG = False
SECRET_KEY = "test-only-django-key-not-a-secret"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = __name__
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
DATABASES: dict[str, object] = {}
LOGGING_CONFIG = None


def whoami(request: HttpRequest) -> HttpResponse:
    return JsonResponse(
        {
            "status": request.headers.get("X-Session-Status"),
            "session_raw": request.headers.get("X-Session"),
        }
    )


def grow(request: HttpRequest) -> HttpResponse:
    kb = min(int(request.GET.get("kb", "1")), 1024)
    encoded = json.dumps({"blob": "x" * (kb * 1024)}, separators=(",", ":"))
    response = JsonResponse({"bytes": len(encoded)})
    response["X-Set-Session"] = encoded
    return response


def unicode(request: HttpRequest) -> HttpResponse:
    # ensure_ascii=False is the mistake: Django MIME-encodes the non-Latin-1 value.
    escape = request.GET.get("ascii", "1") == "1"
    response = JsonResponse({})
    response["X-Set-Session"] = json.dumps({"name": "\u20ac"}, ensure_ascii=escape)
    return response


def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"ok", content_type="text/plain")


urlpatterns = [
    path("healthz", healthz),
    path("session/grow", grow),
    path("unicode", unicode),
    path("whoami", whoami),
]
