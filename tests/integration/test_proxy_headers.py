"""Header hygiene: owned and hop-by-hop headers removed, forwarding headers, request ids, sizes.

Requests go over raw sockets so that each header reaches the proxy spelled exactly as written.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.backends import RunningBackend
from tests.integration.log_watch import WATCH
from tests.integration.proxy_client import CookieClient, RawConnection, raw_request
from tests.integration.scripted_backend import ScriptedBackend, canned_response
from tests.integration.sidecar import RunningProxy, base_config

pytestmark = [pytest.mark.integration, pytest.mark.system]

SPOOF = '{"user":"mallory","admin":true}'


@pytest.fixture(scope="module")
def trusting_proxy(python_backend: RunningBackend) -> Iterator[RunningProxy]:
    config = base_config(python_backend.url, trusted_proxies=["127.0.0.0/8"])
    with WATCH.start_proxy(config) as running:
        yield running


def seen_by_backend(
    proxy: RunningProxy, headers: list[tuple[str, str]], host: str = "127.0.0.1"
) -> dict[str, Any]:
    """What ``GET /whoami`` with ``headers`` looked like to the backend."""
    reply = raw_request(proxy.port, "GET", "/whoami", headers, host=host)
    assert reply.status == 200, (reply.status, reply.body[:300])
    seen: dict[str, Any] = reply.json()
    return seen


def canonical_names(seen: dict[str, Any]) -> set[str]:
    return {name.replace("_", "-") for name in seen["headers"]}


# --- headers the proxy owns ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    [
        "X-Session",
        "x-session",
        "X-SESSION",
        "X_Session",
        "x_session",
        "X_SESSION",
        "x-Session",
    ],
)
def test_client_session_header_never_reaches_the_backend_in_any_spelling(
    any_proxy: RunningProxy, spelling: str
) -> None:
    seen = seen_by_backend(any_proxy, [(spelling, SPOOF)])
    assert seen["session_raw"] == "{}"
    assert seen["status"] == "absent"
    assert not any(value == SPOOF for value in seen["headers"].values())
    assert [n for n in seen["headers"] if n.replace("_", "-") == "x-session"] == ["x-session"]


@pytest.mark.parametrize(
    "spelling",
    ["X-Session-Status", "x_session_status", "X_Session-Status", "X-SESSION-STATUS"],
)
def test_client_session_status_header_never_reaches_the_backend_in_any_spelling(
    any_proxy: RunningProxy, spelling: str
) -> None:
    seen = seen_by_backend(any_proxy, [(spelling, "valid")])
    assert seen["status"] == "absent"
    names = [n for n in seen["headers"] if n.replace("_", "-") == "x-session-status"]
    assert names == ["x-session-status"]


@pytest.mark.parametrize("spelling", ["X-Set-Session", "x_set_session", "X-SET_SESSION"])
def test_client_set_session_header_never_reaches_the_backend_in_any_spelling(
    any_proxy: RunningProxy, spelling: str
) -> None:
    seen = seen_by_backend(any_proxy, [(spelling, SPOOF)])
    assert "x-set-session" not in canonical_names(seen)


def test_spoofed_session_header_cannot_replace_a_real_session(any_proxy: RunningProxy) -> None:
    with CookieClient(any_proxy.url) as client:
        client.set_session({"user": "ada-header-test"})
        seen = client.whoami(headers={"X_Session": SPOOF, "X-Session-Status": "valid"})
    assert seen["session"] == {"user": "ada-header-test"}
    assert seen["status"] == "valid"


# --- hop-by-hop -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Keep-Alive", "timeout=5, max=100"),
        ("TE", "trailers"),
        ("Trailer", "X-Checksum"),
        ("Upgrade", "h2c"),
        ("Proxy-Connection", "keep-alive"),
        ("Proxy-Authorization", "Basic bWFsbG9yeTpzZWNyZXQ="),
        ("Proxy-Authenticate", "Basic"),
        ("keep_alive", "timeout=5"),
    ],
)
def test_hop_by_hop_request_headers_are_removed(
    any_proxy: RunningProxy, name: str, value: str
) -> None:
    seen = seen_by_backend(any_proxy, [(name, value), ("X-Kept", "yes")])
    assert name.lower().replace("_", "-") not in canonical_names(seen)
    assert seen["headers"]["x-kept"] == "yes"


def test_connection_header_itself_is_not_forwarded(any_proxy: RunningProxy) -> None:
    with RawConnection(any_proxy.port) as connection:
        connection.send(
            "GET /whoami HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive, X-Private\r\n"
            "X-Private: 1\r\n\r\n"
        )
        seen = connection.read_response().json()
    assert "connection" not in seen["headers"]


@pytest.mark.parametrize(
    "connection",
    ["close, X-Hop-One, x-hop-two", "close,X-HOP-ONE , X_Hop_Two", "close, x_hop_one, X-hop-TWO"],
)
def test_headers_named_in_connection_are_removed(any_proxy: RunningProxy, connection: str) -> None:
    seen = seen_by_backend(
        any_proxy,
        [("Connection", connection), ("X-Hop-One", "1"), ("X-Hop-Two", "2"), ("X-Kept", "3")],
    )
    names = canonical_names(seen)
    assert "x-hop-one" not in names
    assert "x-hop-two" not in names
    assert seen["headers"]["x-kept"] == "3"


@pytest.fixture(scope="module")
def hop_response_proxy() -> Iterator[RunningProxy]:
    """A proxy in front of a backend that answers with hop-by-hop and owned headers."""
    hop_headers = [
        ("Connection", "close, X-Resp-Hop"),
        ("X-Resp-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Authenticate", "Basic"),
        ("Proxy-Connection", "keep-alive"),
        ("Trailer", "X-Checksum"),
        ("Upgrade", "h2c"),
        ("X-Session", SPOOF),
        ("x_session_status", "valid"),
        ("X-Resp-Kept", "yes"),
    ]
    script = {"/hop": canned_response(hop_headers, b"hello")}
    with ScriptedBackend(script) as backend, WATCH.start_proxy(base_config(backend.url)) as p:
        yield p


def test_hop_by_hop_and_owned_response_headers_are_removed(
    hop_response_proxy: RunningProxy,
) -> None:
    reply = raw_request(hop_response_proxy.port, "GET", "/hop")
    assert reply.status == 200
    assert reply.body == b"hello"
    names = {name.lower().replace("_", "-") for name, _ in reply.headers}
    for dropped in (
        "x-resp-hop",
        "keep-alive",
        "proxy-authenticate",
        "proxy-connection",
        "trailer",
        "upgrade",
        "x-session",
        "x-session-status",
    ):
        assert dropped not in names
    assert reply.header("X-Resp-Kept") == "yes"


# --- forwarding headers -------------------------------------------------------------------------

CLIENT_FORWARDING = [
    ("X-Forwarded-For", "203.0.113.9"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "evil.example"),
    ("Forwarded", "for=203.0.113.9;proto=https"),
    ("X-Real-IP", "203.0.113.9"),
]


def test_forwarding_headers_are_set_for_a_direct_client(proxy: RunningProxy) -> None:
    seen = seen_by_backend(proxy, [], host="shop.test:8080")
    assert seen["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert seen["headers"]["x-forwarded-proto"] == "http"
    assert seen["headers"]["x-forwarded-host"] == "shop.test:8080"
    assert seen["headers"]["host"] == "shop.test:8080"


def test_forwarding_headers_from_an_untrusted_client_are_replaced(proxy: RunningProxy) -> None:
    seen = seen_by_backend(proxy, CLIENT_FORWARDING, host="shop.test")
    assert seen["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert seen["headers"]["x-forwarded-proto"] == "http"
    assert seen["headers"]["x-forwarded-host"] == "shop.test"
    assert "forwarded" not in seen["headers"]
    assert "x-real-ip" not in seen["headers"]


def test_underscore_spelled_forwarding_headers_from_an_untrusted_client_are_removed(
    proxy: RunningProxy,
) -> None:
    seen = seen_by_backend(proxy, [("X_Forwarded_For", "203.0.113.9"), ("x_real_ip", "1.2.3.4")])
    assert seen["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert "203.0.113.9" not in str(seen["headers"])
    assert "1.2.3.4" not in str(seen["headers"])


def test_forwarding_headers_from_a_trusted_proxy_are_kept_and_appended(
    trusting_proxy: RunningProxy,
) -> None:
    seen = seen_by_backend(trusting_proxy, CLIENT_FORWARDING, host="shop.test")
    assert seen["headers"]["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert seen["headers"]["x-forwarded-proto"] == "https"
    assert seen["headers"]["x-forwarded-host"] == "evil.example"
    assert seen["headers"]["forwarded"] == "for=203.0.113.9;proto=https"
    assert seen["headers"]["x-real-ip"] == "203.0.113.9"


def test_forwarding_headers_are_set_for_a_trusted_proxy_that_sent_none(
    trusting_proxy: RunningProxy,
) -> None:
    seen = seen_by_backend(trusting_proxy, [], host="shop.test")
    assert seen["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert seen["headers"]["x-forwarded-proto"] == "http"
    assert seen["headers"]["x-forwarded-host"] == "shop.test"


# --- request ids ------------------------------------------------------------------------------

GENERATED_ID = re.compile(r"[0-9a-f]{32}")


def test_sane_request_id_is_kept_and_returned(proxy: RunningProxy) -> None:
    reply = raw_request(proxy.port, "GET", "/whoami", [("X-Request-Id", "req-42.a:b/c+d=")])
    assert reply.json()["headers"]["x-request-id"] == "req-42.a:b/c+d="
    assert reply.header("X-Request-Id") == "req-42.a:b/c+d="


def test_request_id_is_generated_when_absent(proxy: RunningProxy) -> None:
    reply = raw_request(proxy.port, "GET", "/whoami")
    sent = reply.json()["headers"]["x-request-id"]
    assert GENERATED_ID.fullmatch(sent)
    assert reply.header("X-Request-Id") == sent


@pytest.mark.parametrize(
    "values",
    [
        ["has spaces in it"],
        ["x" * 129],
        ["<script>"],
        ["ok-1", "ok-2"],
        ["semi;colon"],
    ],
    ids=["spaces", "too-long", "markup", "twice", "semicolon"],
)
def test_insane_request_id_is_replaced(proxy: RunningProxy, values: list[str]) -> None:
    reply = raw_request(proxy.port, "GET", "/whoami", [("X-Request-Id", v) for v in values])
    sent = reply.json()["headers"]["x-request-id"]
    assert GENERATED_ID.fullmatch(sent)
    assert reply.header("X-Request-Id") == sent


def test_generated_request_ids_differ(proxy: RunningProxy) -> None:
    ids = {raw_request(proxy.port, "GET", "/whoami").header("X-Request-Id") for _ in range(3)}
    assert len(ids) == 3


# --- sizes ------------------------------------------------------------------------------------

LIMIT = 131_072  # limits.max_header_bytes by default
#: limits.max_request_head_bytes by default (a full session of 12 chunks of 4000 bytes, 33 KiB
#: more), which holds a client's field below LIMIT.
HEAD_LIMIT = 81_792


def test_cookie_header_just_under_the_head_limit_is_accepted(any_proxy: RunningProxy) -> None:
    cookie = "; ".join(f"c{i}={'v' * 4000}" for i in range(19))
    assert HEAD_LIMIT - 8192 < len(cookie) < HEAD_LIMIT - 1024
    seen = seen_by_backend(any_proxy, [("Cookie", cookie)])
    assert seen["cookie"] == cookie


@pytest.mark.parametrize("name", ["Cookie", "X-Large"])
def test_request_header_over_the_limit_is_refused_with_431(proxy: RunningProxy, name: str) -> None:
    reply = raw_request(proxy.port, "GET", "/whoami", [(name, "v" * (LIMIT + 1024))])
    assert reply.status == 431
    assert reply.json() == {"error": "request_header_too_large"}


def test_proxy_serves_normally_after_refusing_a_large_header(proxy: RunningProxy) -> None:
    raw_request(proxy.port, "GET", "/whoami", [("Cookie", "v" * (2 * LIMIT))])
    assert raw_request(proxy.port, "GET", "/whoami").status == 200
