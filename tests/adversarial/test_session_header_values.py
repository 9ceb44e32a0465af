"""A real Node.js backend writes session headers no other language could read back, in spellings
the proxy must fold, next to cache headers and Set-Cookies that would leak or forge a session.

Issue 7 items 4 (a backend's ``X.Set.Session``), 5 (JSON), 10 (shared caches) and 11 (disguised
chunk cookies), and the issue 9 merge patch, each on the real wire. Every refusal is a 502
``invalid_session_header`` with the session the client held before still in force.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.integration.backends import RunningBackend, start_backend
from tests.integration.log_watch import WATCH
from tests.integration.proxy_client import CookieClient, RawConnection, Reply
from tests.integration.sidecar import RunningProxy, base_config

pytestmark = [pytest.mark.integration, pytest.mark.system]

OLD = {"user": "alice", "cart": [1, 2]}


@pytest.fixture(scope="module")
def backend() -> Iterator[RunningBackend]:
    with start_backend("hostile-node") as running:
        yield running


@pytest.fixture(scope="module")
def proxy(backend: RunningBackend) -> Iterator[RunningProxy]:
    with WATCH.start_proxy(base_config(backend.url)) as running:
        yield running


def respond(client: CookieClient, *headers: tuple[str, str]) -> Reply:
    """Have the backend answer with these response headers, verbatim (Latin-1)."""
    query = urlencode([pair for name, value in headers for pair in (("h", name), ("v", value))])
    return client.get(f"/respond?{query}")


def session_seen(client: CookieClient) -> Any:
    seen = client.get("/whoami").json()
    assert seen["status"] in ("valid", "absent")
    return json.loads(seen["session"])


@pytest.fixture
def client(proxy: RunningProxy) -> Iterator[CookieClient]:
    with CookieClient(proxy.url) as running:
        reply = respond(running, ("X-Set-Session", json.dumps(OLD)))
        assert reply.status == 200
        assert session_seen(running) == OLD
        yield running


@pytest.mark.parametrize(
    "value",
    [
        '{"name":"caf\u00e9"}',  # raw Latin-1 byte 0xE9: plain JSON.stringify + setHeader
        '{"a":1e400}',  # would be stored as Infinity
        '{"a":-1e999}',
        '{"a":NaN}',
        '{"a":"\\ud800"}',  # a lone surrogate, escaped
        '{"\\udc00":1}',
        '{"a":"\\ude00\\ud83d"}',  # a pair in the wrong order
    ],
    ids=["latin1", "1e400", "-1e999", "nan", "lone-high", "lone-low-key", "reversed-pair"],
)
def test_unreadable_session_json_is_a_502_and_the_old_session_survives(
    client: CookieClient, value: str
) -> None:
    reply = respond(client, ("X-Set-Session", value))
    assert reply.status == 502
    assert reply.json() == {"error": "invalid_session_header"}
    assert reply.set_cookies == []
    assert session_seen(client) == OLD


def test_big_integers_and_escaped_text_pass_unchanged(client: CookieClient) -> None:
    value = '{"id":123456789012345678901234567890,"name":"caf\\u00e9 \\ud83d\\ude00"}'
    assert respond(client, ("X-Set-Session", value)).status == 200
    seen = client.get("/whoami").json()
    assert seen["session"] == value


@pytest.mark.parametrize("name", ["X.Set.Session", "x_set.session", "X-SET-SESSION"])
def test_a_backend_set_header_in_any_spelling_is_the_set_header(
    client: CookieClient, name: str
) -> None:
    reply = respond(client, (name, '{"user":"bob"}'))
    assert reply.status == 200
    assert name.lower() not in {n.lower() for n in reply.headers}
    assert session_seen(client) == {"user": "bob"}


@pytest.mark.parametrize("name", ["X.Session", "X_Session_Status", "x.session.status"])
def test_owned_headers_from_a_backend_never_reach_the_client(
    client: CookieClient, name: str
) -> None:
    reply = respond(client, (name, "leaked"))
    assert reply.status == 200
    assert "leaked" not in json.dumps(list(reply.headers.items()))


# --- shared caches (Flask's CVE-2023-30861) ------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "cache_control"),
    [
        ([], "private"),
        ([("Cache-Control", "public, max-age=600")], "private, max-age=600"),
        ([("Cache-Control", "s-maxage=60, max-age=5")], "private, max-age=5"),
        ([("Cache-Control", "no-store")], "private, no-store"),
    ],
)
def test_a_response_that_sets_the_session_is_never_stored_by_a_shared_cache(
    client: CookieClient, sent: list[tuple[str, str]], cache_control: str
) -> None:
    reply = respond(client, *sent, ("Vary", "Accept"), ("X-Set-Session", '{"user":"carol"}'))
    assert reply.headers.getall("Cache-Control") == [cache_control]
    assert reply.headers.getall("Vary") == ["Accept, Cookie"]


def test_a_response_that_clears_the_session_is_private_too(client: CookieClient) -> None:
    reply = respond(client, ("Cache-Control", "public"), ("X-Set-Session", "{}"))
    assert reply.headers["Cache-Control"] == "private"
    assert session_seen(client) == {}


def test_a_response_that_leaves_the_session_alone_keeps_its_cache_headers(
    client: CookieClient,
) -> None:
    reply = respond(client, ("Cache-Control", "public, max-age=60"))
    assert reply.headers["Cache-Control"] == "public, max-age=60"


@pytest.mark.parametrize(
    ("sent", "vary"),
    [
        ([], ["Cookie"]),
        ([("Vary", "Accept")], ["Accept, Cookie"]),
        ([("Vary", "Accept"), ("Vary", "Origin")], ["Accept, Origin, Cookie"]),
        ([("Vary", "Accept, , Origin")], ["Accept, Origin, Cookie"]),
        ([("Vary", "Cookie")], ["Cookie"]),
        ([("Vary", "accept, COOKIE")], ["accept, COOKIE"]),
        ([("Vary", "Accept"), ("Vary", "cookie")], ["Accept", "cookie"]),
        ([("Vary", "*")], ["*"]),
        ([("Vary", "Accept, *")], ["Accept, *"]),
    ],
)
def test_a_response_made_with_a_valid_session_varies_on_cookie(
    client: CookieClient, sent: list[tuple[str, str]], vary: list[str]
) -> None:
    # Issue 14 finding 9: the backend read the session, so a shared cache must key on Cookie.
    reply = respond(client, ("Cache-Control", "public, max-age=60"), *sent)
    assert reply.headers.getall("Vary") == vary
    assert reply.headers["Cache-Control"] == "public, max-age=60"


def test_a_response_made_without_a_session_does_not_vary_on_cookie(proxy: RunningProxy) -> None:
    with CookieClient(proxy.url) as anonymous:
        reply = respond(anonymous, ("Cache-Control", "public, max-age=60"))
    assert reply.status == 200
    assert "Vary" not in reply.headers


def test_a_response_made_with_an_invalid_session_does_not_vary_on_cookie(
    client: CookieClient,
) -> None:
    client.cookies["session.0"] = client.cookies["session.0"][:-4] + "AAAA"
    assert client.get("/whoami").json()["status"] == "invalid"
    assert "Vary" not in respond(client, ("Cache-Control", "public")).headers


# --- disguised chunk cookies (issue 7 item 11) ---------------------------------------------


@pytest.mark.parametrize(
    "set_cookie", ["=session.0", "=session.0=forged; Path=/", "session.1", "SESSION.0=forged"]
)
def test_a_backend_cannot_write_a_chunk_cookie_under_a_disguise(
    client: CookieClient, set_cookie: str
) -> None:
    reply = respond(client, ("Set-Cookie", set_cookie), ("Set-Cookie", "theme=dark"))
    assert [c.name for c in reply.set_cookies] == ["theme"]
    assert session_seen(client) == OLD


@pytest.mark.parametrize(
    "cookie",
    [
        "a=1, session.0=forged",
        "a=1,session.0=forged",
        '"session.0"=forged',
        "Session.0=forged",
        "a=x session.1=forged",
        "session.01=forged",
    ],
)
def test_a_chunk_cookie_is_never_forwarded_however_the_cookie_header_is_punctuated(
    proxy: RunningProxy, cookie: str
) -> None:
    with RawConnection(proxy.port) as raw:
        raw.send(f"GET /whoami HTTP/1.1\r\nHost: app\r\nCookie: keep=1; {cookie}\r\n\r\n")
        seen = raw.read_response().json()
    assert seen["cookie"] == "keep=1"
    assert "forged" not in json.dumps(seen)


# --- X-Patch-Session (issue 9, RFC 7396) ---------------------------------------------------


def test_a_merge_patch_changes_only_the_keys_it_names(client: CookieClient) -> None:
    reply = respond(client, ("X-Patch-Session", '{"cart":null,"theme":"dark"}'))
    assert reply.status == 200
    assert reply.headers["Cache-Control"] == "private"
    assert session_seen(client) == {"user": "alice", "theme": "dark"}


def test_a_patch_sent_with_a_set_header_is_a_502_and_the_old_session_survives(
    client: CookieClient,
) -> None:
    reply = respond(client, ("X-Set-Session", '{"a":1}'), ("X.Patch.Session", '{"b":2}'))
    assert reply.status == 502
    assert reply.json() == {"error": "invalid_session_header"}
    assert session_seen(client) == OLD


# --- forward_session: false (issue 9) --------------------------------------------------------


@pytest.fixture(scope="module")
def static_proxy(backend: RunningBackend) -> Iterator[RunningProxy]:
    """The backend as the catch-all, and again under ``/static`` with forward_session off."""
    config = base_config(backend.url)
    config["upstreams"].append(
        {
            "url": backend.url,
            "name": "static",
            "path_prefix": "/static",
            "strip_prefix": True,
            "forward_session": False,
        }
    )
    with WATCH.start_proxy(config) as running:
        yield running


def test_an_upstream_without_forward_session_never_sees_or_writes_the_session(
    static_proxy: RunningProxy,
) -> None:
    with CookieClient(static_proxy.url) as client:
        assert respond(client, ("X-Set-Session", json.dumps(OLD))).status == 200
        seen = client.get("/static/whoami").json()
        assert (seen["session"], seen["status"]) == (None, None)
        assert "session." not in (seen["cookie"] or "")
        query = urlencode([("h", "X-Set-Session"), ("v", '{"user":"mallory"}')])
        reply = client.get(f"/static/respond?{query}")
        assert reply.status == 200
        assert reply.set_cookies == []
        query = urlencode([("h", "X.Patch.Session"), ("v", '{"user":"mallory"}')])
        assert client.get(f"/static/respond?{query}").set_cookies == []
        assert session_seen(client) == OLD


def test_an_upstream_without_forward_session_does_not_vary_on_cookie(
    static_proxy: RunningProxy,
) -> None:
    # Its answers cannot depend on a session it never receives (issue 14 finding 9).
    with CookieClient(static_proxy.url) as client:
        assert respond(client, ("X-Set-Session", json.dumps(OLD))).status == 200
        assert "Vary" in respond(client, ("Cache-Control", "public")).headers
        reply = client.get(f"/static/respond?{urlencode({'h': 'Cache-Control', 'v': 'public'})}")
        assert reply.status == 200
        assert "Vary" not in reply.headers


# --- max_session_header_bytes (issue 8) ------------------------------------------------


def test_a_session_too_big_for_its_upstream_is_answered_by_the_proxy_with_sizes(
    backend: RunningBackend,
) -> None:
    config = base_config(backend.url)
    config["upstreams"][0]["max_session_header_bytes"] = 2000
    big = {"blob": "b" * 3000}
    with WATCH.start_proxy(config) as running, CookieClient(running.url) as client:
        assert respond(client, ("X-Set-Session", json.dumps({"small": 1}))).status == 200
        assert session_seen(client) == {"small": 1}
        WATCH.sensitive(json.dumps(big))
        assert respond(client, ("X-Set-Session", json.dumps(big))).status == 200
        reply = client.get("/whoami?id=too-big")
        assert reply.status == 431
        assert reply.json() == {
            "error": "session_too_large_for_upstream",
            "bytes": len(json.dumps(big, separators=(",", ":"))),
            "limit": 2000,
        }
        # The backend never saw that request; the session is kept, to be shrunk or cleared.
        with urllib.request.urlopen(f"{backend.url}/__requests", timeout=5) as direct:
            seen = json.loads(direct.read())
        assert [r["url"] for r in seen if "too-big" in r["url"]] == []
        assert any("/whoami" in r["url"] for r in seen)  # the small session's request did arrive
        assert reply.set_cookies == []
        assert client.live_chunk_count() >= 1
