"""Routing: by host, then by the longest whole-segment path prefix; never a forward proxy.

One Python backend stands behind every route; each upstream URL has its own base path
(``/up-<name>``), which the backend echoes, so the path it reports names the route taken.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.integration.backends import RunningBackend, start_backend
from tests.integration.log_watch import WATCH
from tests.integration.proxy_client import raw_request
from tests.integration.scripted_backend import ScriptedBackend
from tests.integration.sidecar import RunningProxy, base_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def backend() -> Iterator[RunningBackend]:
    with start_backend("python") as running:
        yield running


@pytest.fixture
def attacker() -> Iterator[ScriptedBackend]:
    """A host no configuration names: nothing may ever connect to it."""
    with ScriptedBackend() as host:
        yield host


def _route(backend: RunningBackend, name: str, **fields: object) -> dict[str, object]:
    return {"name": name, "url": f"{backend.url}/up-{name}", **fields}


@pytest.fixture(scope="module")
def routed(backend: RunningBackend) -> Iterator[RunningProxy]:
    """Host and path routes, and no catch-all: an unmatched request has no route."""
    upstreams = [
        _route(backend, "api", path_prefix="/api"),
        _route(backend, "api-v2", path_prefix="/api/v2"),
        _route(backend, "strip", path_prefix="/strip", strip_prefix=True),
        _route(backend, "public", path_prefix="/public"),
        _route(backend, "admin", path_prefix="/admin"),
        _route(backend, "exact", host="app.example.com"),
        _route(backend, "exact-api", host="app.example.com", path_prefix="/api"),
        _route(backend, "wild", host="*.example.com"),
    ]
    with WATCH.start_proxy(base_config(backend.url, upstreams=upstreams)) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def catch_all(backend: RunningBackend) -> Iterator[RunningProxy]:
    """One upstream for every path, and a strip_prefix route without a base path."""
    upstreams = [
        {"name": "app", "url": backend.url},
        {"name": "bare", "url": backend.url, "path_prefix": "/bare", "strip_prefix": True},
    ]
    with WATCH.start_proxy(base_config(backend.url, upstreams=upstreams)) as proxy:
        yield proxy


def reached(proxy: RunningProxy, target: str, host: str = "127.0.0.1") -> str:
    """The path (and query) the backend saw for ``GET target`` with ``Host: host``."""
    reply = raw_request(proxy.port, "GET", target, host=host)
    assert reply.status == 200, (reply.status, reply.body[:200])
    path: str = reply.json()["path"]
    return path


def assert_nothing_reached(attacker: ScriptedBackend) -> None:
    time.sleep(0.2)  # a connection the proxy might have opened would be accepted by now
    assert (attacker.connections, attacker.heads) == (0, [])


# --- by host -------------------------------------------------------------------------------


def test_exact_host_routes_to_its_upstream(routed: RunningProxy) -> None:
    assert reached(routed, "/x", host="app.example.com") == "/up-exact/x"


def test_exact_host_match_ignores_case_and_port(routed: RunningProxy) -> None:
    assert reached(routed, "/x", host="APP.Example.COM:8443") == "/up-exact/x"


def test_wildcard_host_matches_a_subdomain(routed: RunningProxy) -> None:
    assert reached(routed, "/x", host="shop.example.com") == "/up-wild/x"


def test_wildcard_host_matches_a_deeper_subdomain(routed: RunningProxy) -> None:
    assert reached(routed, "/x", host="a.b.example.com") == "/up-wild/x"


def test_wildcard_host_does_not_match_the_bare_domain(routed: RunningProxy) -> None:
    assert raw_request(routed.port, "GET", "/x", host="example.com").status == 404


def test_host_routes_are_chosen_before_path_routes(routed: RunningProxy) -> None:
    assert reached(routed, "/admin/x", host="app.example.com") == "/up-exact/admin/x"


def test_longest_prefix_wins_within_a_host(routed: RunningProxy) -> None:
    assert reached(routed, "/api/x", host="app.example.com") == "/up-exact-api/api/x"


# --- by path ---------------------------------------------------------------------------------


def test_longest_path_prefix_wins(routed: RunningProxy) -> None:
    assert reached(routed, "/api/v2/users") == "/up-api-v2/api/v2/users"
    assert reached(routed, "/api/v1/users") == "/up-api/api/v1/users"


def test_prefix_matches_the_prefix_itself(routed: RunningProxy) -> None:
    assert reached(routed, "/api") == "/up-api/api"
    assert reached(routed, "/api/") == "/up-api/api/"


def test_prefix_matches_whole_segments_only(routed: RunningProxy) -> None:
    assert raw_request(routed.port, "GET", "/apix").status == 404
    assert reached(routed, "/api/v2x") == "/up-api/api/v2x"


def test_strip_prefix_removes_the_prefix_before_forwarding(routed: RunningProxy) -> None:
    assert reached(routed, "/strip/a/b") == "/up-strip/a/b"
    assert reached(routed, "/strip") == "/up-strip/"


def test_query_string_is_forwarded_unchanged(routed: RunningProxy) -> None:
    assert reached(routed, "/api/x?b=%20&a=1&a=2") == "/up-api/api/x?b=%20&a=1&a=2"
    assert reached(routed, "/strip/y?q=%2F") == "/up-strip/y?q=%2F"


def test_no_route_answers_404_with_a_small_json_body(routed: RunningProxy) -> None:
    reply = raw_request(routed.port, "GET", "/nowhere/at/all")
    assert reply.status == 404
    assert reply.header("Content-Type") == "application/json"
    assert len(reply.body) < 200
    assert reply.json() == {"error": "no_route", "path": "/nowhere/at/all"}


# --- dot segments ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("/public/../admin/x", "/up-admin/admin/x"),
        ("/public/%2e%2e/admin/x", "/up-admin/admin/x"),
        ("/public/%2E%2E/admin/x", "/up-admin/admin/x"),
        ("/public/./../admin", "/up-admin/admin"),
        ("/../admin", "/up-admin/admin"),
        ("/admin/./x/../y", "/up-admin/admin/y"),
    ],
)
def test_dot_segment_paths_route_by_their_normalised_path(
    routed: RunningProxy, target: str, path: str
) -> None:
    assert reached(routed, target) == path


# --- never a forward proxy -------------------------------------------------------------------


def test_absolute_form_target_never_reaches_an_unnamed_host(
    routed: RunningProxy, catch_all: RunningProxy, attacker: ScriptedBackend
) -> None:
    authority = f"127.0.0.1:{attacker.port}"
    target = f"http://{authority}/whoami"
    assert raw_request(routed.port, "GET", target, [("Host", authority)]).status == 404
    served = raw_request(catch_all.port, "GET", target, [("Host", authority)])
    assert served.status == 200
    assert served.json()["path"] == "/whoami"  # by the configured upstream, not the named host
    assert_nothing_reached(attacker)


def test_absolute_form_target_routes_by_its_own_host_among_configured_ones(
    routed: RunningProxy,
) -> None:
    # RFC 9112 section 3.2.2: the target's authority wins over the Host header.
    assert reached(routed, "http://app.example.com/x", host="127.0.0.1") == "/up-exact/x"


def test_connect_is_refused_and_opens_no_tunnel(
    routed: RunningProxy, catch_all: RunningProxy, attacker: ScriptedBackend
) -> None:
    authority = f"127.0.0.1:{attacker.port}"
    for proxy in (routed, catch_all):
        reply = raw_request(proxy.port, "CONNECT", authority, [("Host", authority)])
        assert reply.status == 405
        assert reply.json() == {"error": "method_not_allowed"}
    assert_nothing_reached(attacker)


@pytest.mark.parametrize("prefix", ["", "/bare"])
def test_network_path_target_is_a_path_never_a_host(
    catch_all: RunningProxy, attacker: ScriptedBackend, prefix: str
) -> None:
    # "//host:port/x" is a path; read as a URL reference it would name another authority.
    target = f"{prefix}//127.0.0.1:{attacker.port}/whoami"
    assert reached(catch_all, target) == f"//127.0.0.1:{attacker.port}/whoami"
    assert_nothing_reached(attacker)


def test_network_path_websocket_target_never_reaches_the_host_it_names(
    catch_all: RunningProxy, attacker: ScriptedBackend
) -> None:
    target = f"//127.0.0.1:{attacker.port}/ws"
    handshake = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ]
    reply = raw_request(catch_all.port, "GET", target, handshake)
    # The configured upstream answers that path (no socket there) and its answer is relayed.
    assert reply.status != 101
    assert json.loads(reply.body)["path"] == f"//127.0.0.1:{attacker.port}/ws"
    assert_nothing_reached(attacker)
