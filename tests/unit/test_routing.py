"""Routing: which upstream a request goes to, with which path, and how a path is normalised."""

from __future__ import annotations

from dataclasses import replace

import pytest

import proxy.routing
from proxy.config import parse_config
from proxy.routing import Router, normalize_path, valid_host

ENV = {"SESSION_SECRET": "routing-test-secret-0123456789-abcdefghijkl"}
MINIMAL = "secrets:\n  - ${SESSION_SECRET}\nupstreams:\n  - url: http://127.0.0.1:8001\n"


def router(*upstreams: str) -> Router:
    """A router over upstreams given as YAML flow mappings, e.g. ``{name: a, url: ...}``."""
    text = "secrets:\n  - ${SESSION_SECRET}\nupstreams:\n"
    text += "".join(f"  - {u}\n" for u in upstreams)
    return Router(parse_config(text, env=ENV).upstreams)


def chosen(r: Router, host: str, path: str = "/") -> str | None:
    route = r.route(host, path)
    return None if route is None else route.upstream.name


def target(upstream: str, path: str, query: str = "") -> str:
    route = router(upstream).route("example.com", path, query)
    assert route is not None
    return route.target


HOSTS = router(
    "{name: default, url: 'http://127.0.0.1:8001'}",
    "{name: wild, url: 'http://127.0.0.1:8002', host: '*.example.com'}",
    "{name: wild-api, url: 'http://127.0.0.1:8003', host: '*.api.example.com'}",
    "{name: exact, url: 'http://127.0.0.1:8004', host: www.example.com}",
)


# --- host -----------------------------------------------------------------------------------


def test_exact_host_wins_over_a_wildcard_that_also_matches() -> None:
    assert chosen(HOSTS, "www.example.com") == "exact"


def test_wildcard_host_wins_over_the_hostless_upstream() -> None:
    assert chosen(HOSTS, "shop.example.com") == "wild"


def test_hostless_upstream_takes_hosts_nothing_else_matches() -> None:
    assert chosen(HOSTS, "other.org") == "default"


def test_longer_wildcard_suffix_wins() -> None:
    assert chosen(HOSTS, "v1.api.example.com") == "wild-api"


def test_wildcard_matches_one_label_below_its_suffix() -> None:
    r = router("{name: wild, url: 'http://127.0.0.1:8002', host: '*.example.com'}")
    assert chosen(r, "a.example.com") == "wild"


def test_wildcard_matches_several_labels_below_its_suffix() -> None:
    r = router("{name: wild, url: 'http://127.0.0.1:8002', host: '*.example.com'}")
    assert chosen(r, "a.b.example.com") == "wild"


def test_wildcard_does_not_match_its_bare_suffix() -> None:
    r = router("{name: wild, url: 'http://127.0.0.1:8002', host: '*.example.com'}")
    assert chosen(r, "example.com") is None


def test_wildcard_does_not_match_a_name_that_only_ends_like_it() -> None:
    r = router("{name: wild, url: 'http://127.0.0.1:8002', host: '*.example.com'}")
    assert chosen(r, "badexample.com") is None


def test_host_match_ignores_the_port() -> None:
    assert chosen(HOSTS, "www.example.com:8443") == "exact"


def test_host_match_ignores_case() -> None:
    assert chosen(HOSTS, "WWW.Example.COM") == "exact"


def test_host_match_ignores_a_trailing_dot() -> None:
    assert chosen(HOSTS, "www.example.com.") == "exact"


def test_host_match_ignores_a_trailing_dot_before_the_port() -> None:
    assert chosen(HOSTS, "www.example.com.:8080") == "exact"


def test_configured_host_is_matched_whatever_its_case() -> None:
    r = router("{name: exact, url: 'http://127.0.0.1:8004', host: WWW.Example.com}")
    assert chosen(r, "www.example.com") == "exact"


def test_ipv6_literal_host_with_port_goes_to_the_hostless_upstream() -> None:
    assert chosen(HOSTS, "[2001:db8::1]:8443") == "default"


def test_ipv6_literal_host_is_matched_whole_without_its_port() -> None:
    # The configuration accepts only DNS names as hosts; the router itself takes any name.
    (up,) = parse_config(MINIMAL, env=ENV).upstreams
    r = Router([replace(up, match_host="[2001:db8::1]")])
    assert chosen(r, "[2001:DB8::1]:8443") == up.name


# --- which hosts may be routed at all (the wire cases are in tests/adversarial) ------------


def test_a_valid_host_is_remembered_so_the_next_check_is_a_lookup() -> None:
    assert valid_host("remembered.example.com:8443")
    assert "remembered.example.com:8443" in proxy.routing._VALID_HOSTS


def test_a_refused_host_is_never_remembered() -> None:
    assert not valid_host("x@remembered.example.com")
    assert "x@remembered.example.com" not in proxy.routing._VALID_HOSTS


def test_once_the_memory_is_full_hosts_are_still_checked_and_not_added(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(proxy.routing, "_VALID_HOSTS", set())
    for n in range(proxy.routing._VALID_HOSTS_MAX + 10):
        assert valid_host(f"h{n}.example.com")
    assert len(proxy.routing._VALID_HOSTS) == proxy.routing._VALID_HOSTS_MAX
    assert not valid_host("h1.example.com:0")


def test_an_ipv6_literal_is_checked_by_its_address_not_only_its_characters() -> None:
    assert valid_host("[2001:db8::1]:8443")
    assert not valid_host("[2001:db8:::1]")


def test_host_group_without_a_matching_prefix_falls_through_to_the_next_group() -> None:
    r = router(
        "{name: default, url: 'http://127.0.0.1:8001'}",
        "{name: exact-api, url: 'http://127.0.0.1:8004', host: www.example.com, path_prefix: /api}",
    )
    assert chosen(r, "www.example.com", "/home") == "default"


def test_no_matching_upstream_gives_none() -> None:
    r = router("{name: exact, url: 'http://127.0.0.1:8004', host: www.example.com}")
    assert r.route("other.org", "/") is None


# --- path prefix ------------------------------------------------------------------------------

PREFIXES = router(
    "{name: root, url: 'http://127.0.0.1:8001'}",
    "{name: api, url: 'http://127.0.0.1:8002', path_prefix: /api}",
    "{name: api-v2, url: 'http://127.0.0.1:8003', path_prefix: /api/v2}",
)


def test_longest_path_prefix_wins() -> None:
    assert chosen(PREFIXES, "example.com", "/api/v2/users") == "api-v2"


def test_shorter_prefix_takes_what_the_longer_one_does_not() -> None:
    assert chosen(PREFIXES, "example.com", "/api/v1/users") == "api"


def test_prefix_matches_its_own_path() -> None:
    assert chosen(PREFIXES, "example.com", "/api") == "api"


def test_prefix_matches_its_path_with_a_trailing_slash() -> None:
    assert chosen(PREFIXES, "example.com", "/api/") == "api"


def test_prefix_matches_paths_below_it() -> None:
    assert chosen(PREFIXES, "example.com", "/api/x") == "api"


def test_prefix_does_not_match_a_longer_segment() -> None:
    assert chosen(PREFIXES, "example.com", "/apix") == "root"


def test_prefix_alone_does_not_take_a_longer_segment() -> None:
    r = router("{name: api, url: 'http://127.0.0.1:8002', path_prefix: /api}")
    assert chosen(r, "example.com", "/apix") is None


# --- target -----------------------------------------------------------------------------------


def test_target_is_the_request_path_without_strip_prefix() -> None:
    up = "{url: 'http://127.0.0.1:8002', path_prefix: /api}"
    assert target(up, "/api/users") == "/api/users"


def test_strip_prefix_removes_the_prefix() -> None:
    up = "{url: 'http://127.0.0.1:8002', path_prefix: /api, strip_prefix: true}"
    assert target(up, "/api/users") == "/users"


def test_strip_prefix_turns_the_bare_prefix_into_root() -> None:
    up = "{url: 'http://127.0.0.1:8002', path_prefix: /api, strip_prefix: true}"
    assert target(up, "/api") == "/"


def test_strip_prefix_with_the_root_prefix_keeps_the_path() -> None:
    up = "{url: 'http://127.0.0.1:8002', strip_prefix: true}"
    assert target(up, "/users") == "/users"


def test_base_path_of_the_upstream_url_is_prepended() -> None:
    up = "{url: 'http://127.0.0.1:8002/v1/'}"
    assert target(up, "/users") == "/v1/users"


def test_base_path_is_prepended_after_strip_prefix() -> None:
    up = "{url: 'http://127.0.0.1:8002/v1', path_prefix: /api, strip_prefix: true}"
    assert target(up, "/api/users") == "/v1/users"


def test_query_is_kept() -> None:
    up = "{url: 'http://127.0.0.1:8002/v1', path_prefix: /api, strip_prefix: true}"
    assert target(up, "/api/users", "a=1&b=%20") == "/v1/users?a=1&b=%20"


def test_empty_query_adds_no_question_mark() -> None:
    assert target("{url: 'http://127.0.0.1:8002'}", "/users", "") == "/users"


# --- normalize_path ---------------------------------------------------------------------------


def test_path_without_dots_is_unchanged() -> None:
    assert normalize_path("/a/b%20c/d") == "/a/b%20c/d"


def test_empty_path_becomes_root() -> None:
    assert normalize_path("") == "/"


def test_single_dot_segments_are_removed() -> None:
    assert normalize_path("/a/./b/.") == "/a/b/"


def test_double_dot_removes_the_segment_before_it() -> None:
    assert normalize_path("/public/../admin") == "/admin"


def test_encoded_double_dot_counts_as_double_dot() -> None:
    assert normalize_path("/public/%2e%2e/admin") == "/admin"


def test_upper_case_encoded_dot_counts_as_a_dot() -> None:
    assert normalize_path("/public/%2E%2E/admin") == "/admin"


def test_mixed_encoded_and_plain_dots_count_as_double_dot() -> None:
    assert normalize_path("/public/.%2E/admin") == "/admin"


def test_encoded_single_dot_segment_is_removed() -> None:
    assert normalize_path("/a/%2e/b") == "/a/b"


def test_dots_inside_a_segment_are_kept() -> None:
    assert normalize_path("/a/..b/c.d/%2e%2e%2e") == "/a/..b/c.d/%2e%2e%2e"


def test_double_dot_never_climbs_above_root() -> None:
    assert normalize_path("/../../etc/passwd") == "/etc/passwd"


def test_bare_double_dot_is_root() -> None:
    assert normalize_path("/..") == "/"


def test_empty_segments_are_kept() -> None:
    assert normalize_path("//a/./b//c") == "//a/b//c"


def test_path_ending_in_double_dot_ends_with_a_slash() -> None:
    assert normalize_path("/a/b/..") == "/a/"


def test_path_ending_in_encoded_double_dot_ends_with_a_slash() -> None:
    assert normalize_path("/a/b/%2e%2e") == "/a/"
