"""A real Flask app's users keep their sessions across the switch to the sidecar (issue 9).

Before: clients talk to a Flask app (werkzeug's server on loopback) that keeps its session in
Flask's own signed cookie, or in the "Chunked Secure Cookie Session" snippet's ``session:0..9``.
After: the same app sits behind the proxy with ``migrate:`` on, and reads ``X-Session``. The
first request after the switch carries the legacy cookie; the backend must see that session as
``valid`` (and ``X-Session-Migrated``), the response must re-issue it as chunk cookies and expire
the legacy ones, and the legacy cookie must never reach the backend.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask, jsonify, request, session
from flask.sessions import SecureCookieSessionInterface
from werkzeug.serving import BaseWSGIServer, make_server

from tests.adversarial.recording_upstream import RecordingUpstream
from tests.integration.cookie_browser import Browser, flask_cookie
from tests.integration.log_watch import WATCH
from tests.integration.proxy_client import CookieClient
from tests.integration.sidecar import RunningProxy, base_config

pytestmark = pytest.mark.integration

FLASK_KEY = "flask-migration-secret-key-0123456789"
OLD_FLASK_KEY = "flask-old-secret-key-0123456789"
ENV = {"FLASK_SECRET_KEY": FLASK_KEY, "FLASK_OLD_SECRET_KEY": OLD_FLASK_KEY}
USER_ID = uuid.UUID("12345678-1234-5678-1234-567812345678")


def flask_app() -> Flask:
    """The app before and after: it logs in with Flask's session, and reports what it sees."""
    app = Flask("legacy")
    app.secret_key = FLASK_KEY

    @app.post("/login")
    def login() -> Any:
        session["user"] = "zoë"
        session["roles"] = ("admin", "dev")  # tagged ' t'
        session["id"] = USER_ID  # tagged ' u'
        session["since"] = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)  # tagged ' d'
        session["big"] = 12345678901234567890
        return jsonify(ok=True)

    @app.post("/rename")
    def rename() -> Any:  # the app after the switch, writing its session through the proxy
        response = jsonify(ok=True)
        response.headers["X-Patch-Session"] = '{"user":"renamed"}'
        return response

    @app.get("/whoami")
    def whoami() -> Any:
        return jsonify(
            session=request.headers.get("X-Session"),
            status=request.headers.get("X-Session-Status"),
            migrated=request.headers.get("X-Session-Migrated"),
            cookie=request.headers.get("Cookie"),
        )

    return app


@pytest.fixture(scope="module")
def flask_server() -> Iterator[str]:
    server: BaseWSGIServer = make_server("127.0.0.1", 0, flask_app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


def migrating_proxy(flask_url: str, fmt: str) -> RunningProxy:
    config = base_config(flask_url)
    config["migrate"] = {
        "format": fmt,
        "cookie_name": "session",
        "secret_keys": ["${FLASK_SECRET_KEY}", "${FLASK_OLD_SECRET_KEY}"],
        "max_age": "31d",
    }
    return WATCH.start_proxy(config, ENV)


@pytest.fixture(scope="module")
def proxy(flask_server: str) -> Iterator[RunningProxy]:
    with migrating_proxy(flask_server, "flask") as running:
        yield running


EXPECTED = {
    "user": "zoë",
    "roles": ["admin", "dev"],
    "id": str(USER_ID),
    "since": "2026-01-02T03:04:05Z",
    "big": 12345678901234567890,
}


def login_directly(flask_url: str) -> str:
    """Log in against Flask itself, as users did before the switch; its session cookie."""
    with CookieClient(flask_url) as before:
        assert before.post("/login").status == 200
        value = before.cookies["session"]
    WATCH.sensitive(value)
    return value


def legacy_cookie_names(reply_set_cookies: list[Any]) -> dict[str, bool]:
    return {c.name: c.expired for c in reply_set_cookies if not c.name.startswith("session.")}


def test_a_flask_user_keeps_the_session_across_the_switch(
    flask_server: str, proxy: RunningProxy
) -> None:
    legacy = login_directly(flask_server)
    with CookieClient(proxy.url) as client:
        client.cookies["session"] = legacy
        reply = client.get("/whoami")
        seen = reply.json()
        assert seen["status"] == "valid"
        assert seen["migrated"] == "flask"
        assert json.loads(seen["session"]) == EXPECTED
        assert seen["cookie"] is None  # the legacy cookie never reaches the backend
        assert legacy_cookie_names(reply.set_cookies) == {"session": True}
        assert client.live_chunk_count() >= 1
        assert "session" not in client.cookies
        assert reply.headers["Cache-Control"] == "private"
        # From now on the proxy's own session, nothing legacy.
        again = client.get("/whoami").json()
        assert (again["status"], again["migrated"]) == ("valid", None)
        assert json.loads(again["session"]) == EXPECTED


def test_the_snippet_users_chunked_session_moves_too(flask_server: str) -> None:
    app = flask_app()
    signed = SecureCookieSessionInterface().get_signing_serializer(app)
    assert signed is not None
    token: str = signed.dumps({"user": "snippet", "n": [1, 2, 3]})
    step = -(-len(token) // 10)
    pieces = {f"session:{i}": token[i * step : (i + 1) * step] for i in range(10)}
    with (
        migrating_proxy(flask_server, "flask-chunked") as running,
        CookieClient(running.url) as client,
    ):
        client.cookies.update(pieces)
        WATCH.sensitive(token)
        reply = client.get("/whoami")
        seen = reply.json()
        assert (seen["status"], seen["migrated"]) == ("valid", "flask-chunked")
        assert json.loads(seen["session"]) == {"user": "snippet", "n": [1, 2, 3]}
        assert seen["cookie"] is None
        expired = legacy_cookie_names(reply.set_cookies)
        assert expired == {name: True for name in pieces if pieces[name]}


def test_an_old_fallback_key_still_migrates(flask_server: str, proxy: RunningProxy) -> None:
    app = flask_app()
    app.secret_key = OLD_FLASK_KEY
    signed = SecureCookieSessionInterface().get_signing_serializer(app)
    assert signed is not None
    with CookieClient(proxy.url) as client:
        client.cookies["session"] = signed.dumps({"user": "old"})
        seen = client.get("/whoami").json()
    assert (seen["status"], json.loads(seen["session"])) == ("valid", {"user": "old"})


@pytest.mark.parametrize("value", ["tampered.value.sig", "", "x" * 5000])
def test_a_bad_legacy_cookie_never_breaks_the_request_and_is_expired(
    proxy: RunningProxy, value: str
) -> None:
    with CookieClient(proxy.url) as client:
        client.cookies["session"] = value
        reply = client.get("/whoami")
        assert reply.status == 200
        seen = reply.json()
        assert seen["status"] in ("invalid", "absent")
        assert seen["session"] == "{}"
        assert seen["cookie"] is None
        assert legacy_cookie_names(reply.set_cookies) == {"session": True}


def test_the_proxys_own_session_wins_over_a_legacy_one(
    flask_server: str, proxy: RunningProxy
) -> None:
    legacy = login_directly(flask_server)
    with CookieClient(proxy.url) as client:
        client.cookies["session"] = legacy
        client.get("/whoami")  # migrated: now the proxy's own session
        assert client.post("/rename").status == 200
        client.cookies["session"] = legacy  # a stale copy comes back (another tab, say)
        reply = client.get("/whoami")
        seen = reply.json()
        assert (seen["status"], seen["migrated"]) == ("valid", None)
        assert json.loads(seen["session"]) == {**EXPECTED, "user": "renamed"}
        assert seen["cookie"] is None
        assert legacy_cookie_names(reply.set_cookies) == {"session": True}


# --- on the wire, with a browser's cookie jar and a recording upstream (issue 14) ---------------


@pytest.fixture(scope="module")
def recording() -> Iterator[RecordingUpstream]:
    with RecordingUpstream() as running:
        yield running


def recording_proxy(
    recording: RecordingUpstream, upstreams: list[dict[str, Any]], **migrate: str
) -> RunningProxy:
    config = base_config(recording.url, upstreams=upstreams)
    config["migrate"] = {"format": "flask", "secret_keys": ["${FLASK_SECRET_KEY}"], **migrate}
    return WATCH.start_proxy(config, ENV)


def test_an_upstream_without_the_session_neither_migrates_nor_expires_the_legacy_cookie(
    recording: RecordingUpstream,
) -> None:
    upstreams: list[dict[str, Any]] = [
        {
            "url": recording.url,
            "name": "static",
            "path_prefix": "/static",
            "forward_session": False,
        },
        {"url": recording.url, "name": "app"},
    ]
    with recording_proxy(recording, upstreams) as running:
        browser = Browser(running.port, recording)
        browser.store("/", f"session={flask_cookie(FLASK_KEY, {'user': 'zoë'})}; Path=/; HttpOnly")
        # The page's stylesheet, from a static file server, comes first.
        seen = browser.get("/static/app.css")
        assert (seen.status, seen.session, seen.migrated, seen.cookie) == (None, None, None, None)
        assert seen.set_cookies == []
        assert browser.names() == ["session"]  # the user is still logged in
        seen = browser.get("/page")
        assert (seen.status, seen.session, seen.migrated) == ("valid", {"user": "zoë"}, "flask")
        assert seen.written == ["session.0 live", "session expired"]
        assert browser.names() == ["session.0"]


def test_a_legacy_cookie_on_another_path_and_domain_is_expired_where_it_lives(
    recording: RecordingUpstream,
) -> None:
    # Flask had SESSION_COOKIE_PATH=/shop and SESSION_COOKIE_DOMAIN=example.test. An expiry in
    # the proxy's own scope (Path=/, host-only) would not reach it, and it would be migrated
    # again after every logout for as long as migrate.max_age.
    upstreams = [{"url": recording.url, "name": "app"}]
    scope = {"cookie_path": "/shop", "cookie_domain": "example.test"}
    with recording_proxy(recording, upstreams, **scope) as running:
        browser = Browser(running.port, recording)
        legacy = flask_cookie(FLASK_KEY, {"user": "zoë"})
        browser.store("/shop", f"session={legacy}; Domain=example.test; Path=/shop; HttpOnly")
        seen = browser.get("/shop/cart")
        assert (seen.status, seen.migrated) == ("valid", "flask")
        assert seen.set_cookies[-1] == (
            "session=; Path=/shop; Domain=example.test; Max-Age=0; "
            "Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; SameSite=Lax"
        )
        assert browser.names() == ["session.0"]
        logout = browser.get("/shop/logout", query="&respond=set-session&session=%7B%7D")
        assert logout.written == ["session.0 expired"]
        seen = browser.get("/shop/cart")
        assert (seen.status, seen.session, seen.migrated) == ("absent", {}, None)
