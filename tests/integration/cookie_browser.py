"""A browser's cookie jar over raw requests, and what one request did to the session.

For tests that must see both ends of a request exactly: what the recording upstream got
(``X-Session-Status``, ``X-Session``, ``X-Session-Migrated``, ``Cookie``) and the ``Set-Cookie``
lines the client was sent. :class:`Browser` keeps cookies by RFC 6265's name, domain and path
(``http.cookiejar``), so a ``Set-Cookie`` that names another scope than the cookie it means to
expire leaves that cookie in place, as a browser would. Requests go to the proxy on 127.0.0.1
with a ``Host`` of the browser's choosing.
"""

from __future__ import annotations

import email.message
import http.cookiejar
import itertools
import json
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

from flask import Flask
from flask.sessions import SecureCookieSessionInterface

from tests.adversarial.recording_upstream import RecordingUpstream
from tests.integration.log_watch import WATCH
from tests.integration.proxy_client import raw_request

_IDS = itertools.count()


def flask_cookie(secret_key: str, session: Mapping[str, object]) -> str:
    """The value Flask itself would set for ``session``, signed with ``secret_key``."""
    app = Flask("legacy")
    app.secret_key = secret_key
    serializer = SecureCookieSessionInterface().get_signing_serializer(app)
    assert serializer is not None
    value: str = serializer.dumps(session)
    WATCH.sensitive(value)
    return value


@dataclass
class Seen:
    """One request through the proxy: what its upstream got, what its client was told."""

    status: str | None
    session: object
    migrated: str | None
    cookie: str | None
    set_cookies: list[str]

    @property
    def written(self) -> list[str]:
        """Each Set-Cookie as ``<name> live`` or ``<name> expired``, in order."""
        return [
            f"{line.split('=', 1)[0]} {'expired' if 'Max-Age=0' in line else 'live'}"
            for line in self.set_cookies
        ]


class _Response:
    """The part of a urllib response that ``CookieJar.extract_cookies`` reads."""

    def __init__(self, set_cookies: list[str]) -> None:
        self._headers = email.message.Message()
        for line in set_cookies:
            self._headers["Set-Cookie"] = line

    def info(self) -> email.message.Message:
        return self._headers


class Browser:
    def __init__(
        self, port: int, upstream: RecordingUpstream, host: str = "app.example.test"
    ) -> None:
        self.port = port
        self.upstream = upstream
        self.host = host
        self.jar = http.cookiejar.CookieJar()

    def store(self, path: str, set_cookie: str) -> None:
        """Take a ``Set-Cookie`` as if a response for ``path`` (another app's, say) sent it."""
        self.jar.extract_cookies(_Response([set_cookie]), self._request(path))  # type: ignore[arg-type]

    def names(self) -> list[str]:
        return sorted(cookie.name for cookie in self.jar)

    def get(self, path: str, cookie: str | None = None, query: str = "") -> Seen:
        """GET ``path`` with the jar's cookies (or exactly ``cookie``); the jar takes the
        response's Set-Cookie lines."""
        target = f"{path}?id=b{next(_IDS)}{query}"
        request = self._request(target)
        if cookie is None:
            self.jar.add_cookie_header(request)
            cookie = request.get_header("Cookie")
        headers = [("Host", self.host)] + ([("Cookie", cookie)] if cookie is not None else [])
        reply = raw_request(self.port, "GET", target, headers)
        assert reply.status == 200, reply.body
        set_cookies = reply.header_values("Set-Cookie")
        self.jar.extract_cookies(_Response(set_cookies), request)  # type: ignore[arg-type]
        got = self.upstream.request_to(target)

        def header(name: bytes) -> str | None:
            value = got.header(name)
            return None if value is None else value.decode("latin-1")

        session = header(b"X-Session")
        return Seen(
            header(b"X-Session-Status"),
            None if session is None else json.loads(session),
            header(b"X-Session-Migrated"),
            header(b"Cookie"),
            set_cookies,
        )

    def _request(self, target: str) -> urllib.request.Request:
        return urllib.request.Request(f"http://{self.host}{target}")
