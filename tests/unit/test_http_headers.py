"""Header hygiene: owned, hop-by-hop and spoofed headers never cross the proxy."""

from __future__ import annotations

import re

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.config import parse_config
from proxy.http_headers import ForwardingInfo, HeaderPolicy, canonical_name

ENV = {"SESSION_SECRET": "headers-test-secret-0123456789-abcdefghijkl"}
CONFIG = """\
secrets:
  - ${SESSION_SECRET}
upstreams:
  - url: http://127.0.0.1:8001
trusted_proxies:
  - 10.0.0.0/8
  - fd00::/8
"""
POLICY = HeaderPolicy(parse_config(CONFIG, env=ENV))
CLIENT = ForwardingInfo(peer="203.0.113.7", scheme="http", host="app.example.com")
PROXY = ForwardingInfo(peer="10.1.2.3", scheme="http", host="app.example.com")
HEX32 = re.compile(r"[0-9a-f]{32}")


def headers(*items: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(items))


def upstream(*items: tuple[str, str], info: ForwardingInfo = CLIENT) -> CIMultiDict[str]:
    return POLICY.upstream_request_headers(headers(*items), info)


def names(out: CIMultiDict[str]) -> set[str]:
    return {canonical_name(name) for name in out}


def response(
    *items: tuple[str, str], connection: str | None = None
) -> tuple[CIMultiDict[str], list[str]]:
    split = POLICY.client_response_headers(list(items), connection)
    return split.headers, split.set_values


# --- canonical_name ---------------------------------------------------------------------------


def test_canonical_name_is_lower_case_with_underscores_as_dashes() -> None:
    assert canonical_name("X_Set_Session") == "x-set-session"


# --- requests: what is dropped ----------------------------------------------------------------


def test_other_request_headers_pass_unchanged() -> None:
    out = upstream(("Accept", "text/html"), ("X-Custom", "a"), ("X-Custom", "b"))
    assert out.getall("Accept") == ["text/html"]
    assert out.getall("X-Custom") == ["a", "b"]


def test_owned_request_headers_are_dropped_in_any_case() -> None:
    out = upstream(("x-session", "{}"), ("X-SET-SESSION", "{}"), ("X-Session-Status", "valid"))
    assert names(out).isdisjoint({"x-session", "x-set-session", "x-session-status"})


def test_owned_request_headers_are_dropped_when_spelled_with_underscores() -> None:
    out = upstream(("X_Session", "{}"), ("x_set-session", "{}"), ("X-Session_Status", "valid"))
    assert names(out).isdisjoint({"x-session", "x-set-session", "x-session-status"})


def test_hop_by_hop_request_headers_are_dropped() -> None:
    out = upstream(
        ("Connection", "keep-alive"),
        ("Proxy-Connection", "keep-alive"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Trailer", "X-Checksum"),
        ("Transfer-Encoding", "chunked"),
        ("Upgrade", "h2c"),
        ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
        ("Accept", "*/*"),
    )
    assert names(out) == {"accept", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"}


def test_request_headers_named_in_connection_are_dropped() -> None:
    out = upstream(("Connection", "close, X-Hop, x_other"), ("X-Hop", "1"), ("X-Other", "2"))
    assert names(out).isdisjoint({"x-hop", "x-other"})


def test_underscore_spelling_of_a_header_named_in_connection_is_dropped() -> None:
    out = upstream(("Connection", "X-Hop"), ("X_Hop", "1"))
    assert "x-hop" not in names(out)


def test_host_cookie_expect_and_request_id_are_left_for_the_caller() -> None:
    out = upstream(
        ("Host", "evil.example"),
        ("Cookie", "a=1"),
        ("Expect", "100-continue"),
        ("X-Request-Id", "abc"),
    )
    assert names(out).isdisjoint({"host", "cookie", "expect", "x-request-id"})


# --- requests: forwarding headers -------------------------------------------------------------


def test_untrusted_forwarding_headers_are_dropped() -> None:
    out = upstream(
        ("Forwarded", "for=1.2.3.4"),
        ("X-Real-IP", "1.2.3.4"),
        ("X-Forwarded-Port", "443"),
        ("X-Forwarded-Prefix", "/admin"),
        ("X_Real_IP", "1.2.3.4"),
    )
    assert names(out).isdisjoint(
        {"forwarded", "x-real-ip", "x-forwarded-port", "x-forwarded-prefix"}
    )


def test_untrusted_x_forwarded_headers_are_replaced_with_the_proxys_view() -> None:
    out = upstream(
        ("X-Forwarded-For", "1.2.3.4"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "admin.internal"),
        ("X_Forwarded_For", "5.6.7.8"),
    )
    assert sorted(out.items()) == [
        ("X-Forwarded-For", "203.0.113.7"),
        ("X-Forwarded-Host", "app.example.com"),
        ("X-Forwarded-Proto", "http"),
    ]


def test_trusted_forwarding_headers_are_kept() -> None:
    out = upstream(
        ("Forwarded", "for=1.2.3.4;proto=https"),
        ("X-Real-IP", "1.2.3.4"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "www.example.com"),
        info=PROXY,
    )
    assert out["Forwarded"] == "for=1.2.3.4;proto=https"
    assert out["X-Real-IP"] == "1.2.3.4"
    assert out["X-Forwarded-Proto"] == "https"
    assert out["X-Forwarded-Host"] == "www.example.com"


def test_trusted_x_forwarded_for_has_the_peer_appended() -> None:
    out = upstream(
        ("X-Forwarded-For", "1.2.3.4, 5.6.7.8"), ("X-Forwarded-For", "9.9.9.9"), info=PROXY
    )
    assert out.getall("X-Forwarded-For") == ["1.2.3.4, 5.6.7.8, 9.9.9.9, 10.1.2.3"]


def test_trusted_peer_without_forwarding_headers_gets_the_proxys_view() -> None:
    out = upstream(info=PROXY)
    assert sorted(out.items()) == [
        ("X-Forwarded-For", "10.1.2.3"),
        ("X-Forwarded-Host", "app.example.com"),
        ("X-Forwarded-Proto", "http"),
    ]


# --- is_trusted -------------------------------------------------------------------------------


def test_peer_inside_a_trusted_network_is_trusted() -> None:
    assert POLICY.is_trusted("10.255.0.1")


def test_ipv6_peer_inside_a_trusted_network_is_trusted() -> None:
    assert POLICY.is_trusted("fd12::1")


def test_peer_outside_the_trusted_networks_is_not_trusted() -> None:
    assert not POLICY.is_trusted("11.0.0.1")


def test_empty_or_unparsable_peer_is_not_trusted() -> None:
    assert not POLICY.is_trusted("")
    assert not POLICY.is_trusted("10.0.0.1.example")


def test_nobody_is_trusted_without_trusted_proxies() -> None:
    config = parse_config(CONFIG.split("trusted_proxies")[0], env=ENV)
    assert not HeaderPolicy(config).is_trusted("10.1.2.3")


# --- request_id -------------------------------------------------------------------------------


def test_single_sane_request_id_is_kept() -> None:
    value = "req-1.2:3/4+5=6_7"
    assert POLICY.request_id(headers(("X-Request-Id", value))) == value


def test_missing_request_id_is_replaced_by_32_hex_chars() -> None:
    assert HEX32.fullmatch(POLICY.request_id(headers()))


def test_request_id_with_unsafe_characters_is_replaced() -> None:
    new = POLICY.request_id(headers(("X-Request-Id", "abc\x1b[31m def")))
    assert HEX32.fullmatch(new)


def test_request_id_longer_than_128_chars_is_replaced() -> None:
    new = POLICY.request_id(headers(("X-Request-Id", "a" * 129)))
    assert HEX32.fullmatch(new)


def test_repeated_request_id_is_replaced() -> None:
    new = POLICY.request_id(headers(("X-Request-Id", "one"), ("X-Request-Id", "one")))
    assert HEX32.fullmatch(new)


def test_new_request_ids_differ() -> None:
    assert POLICY.request_id(headers()) != POLICY.request_id(headers())


# --- responses --------------------------------------------------------------------------------


def test_other_response_headers_pass_in_order() -> None:
    out, _ = response(("Content-Type", "text/html"), ("Vary", "Accept"), ("Vary", "Cookie"))
    assert list(out.items()) == [
        ("Content-Type", "text/html"),
        ("Vary", "Accept"),
        ("Vary", "Cookie"),
    ]


def test_set_header_values_are_collected_in_any_spelling() -> None:
    _, set_values = response(
        ("X-Set-Session", '{"a":1}'), ("x_set_session", '{"b":2}'), ("X-SET_SESSION", "null")
    )
    assert set_values == ['{"a":1}', '{"b":2}', "null"]


def test_set_header_is_never_passed_to_the_client() -> None:
    out, _ = response(("X-Set-Session", "{}"), ("x_set_session", "{}"))
    assert len(out) == 0


def test_other_owned_response_headers_are_dropped_and_not_collected() -> None:
    out, set_values = response(("X-Session", "{}"), ("X_Session_Status", "valid"))
    assert len(out) == 0
    assert set_values == []


def test_session_chunk_set_cookies_are_dropped() -> None:
    out, _ = response(
        ("Set-Cookie", "session.0=forged; Path=/"),
        ("set-cookie", " session.12=forged"),
    )
    assert "Set-Cookie" not in out


def test_other_set_cookies_are_kept_in_order() -> None:
    out, _ = response(
        ("Set-Cookie", "a=1; Path=/"),
        ("Set-Cookie", "session.0=forged"),
        ("Set-Cookie", "session=plain"),
        ("Set-Cookie", "session.x=not-a-chunk"),
        ("Set-Cookie", "b=2; HttpOnly"),
    )
    assert out.getall("Set-Cookie") == [
        "a=1; Path=/",
        "session=plain",
        "session.x=not-a-chunk",
        "b=2; HttpOnly",
    ]


def test_hop_by_hop_response_headers_are_dropped() -> None:
    out, _ = response(
        ("Connection", "keep-alive"),
        ("Keep-Alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"),
        ("Upgrade", "h2c"),
        ("Trailer", "X-Checksum"),
        ("Proxy-Authenticate", "Basic"),
        ("Content-Length", "5"),
    )
    assert list(out.items()) == [("Content-Length", "5")]


def test_response_headers_named_in_connection_are_dropped() -> None:
    out, _ = response(("Connection", "X-Hop"), ("X-Hop", "1"), ("X_Hop", "2"), connection="X-Hop")
    assert len(out) == 0


def test_headers_named_in_every_connection_header_are_dropped() -> None:
    # RFC 9110 section 5.3: two Connection lines are one list.
    out = upstream(("Connection", "keep-alive"), ("Connection", "X-Hop"), ("X-Hop", "1"))
    assert "x-hop" not in names(out)


def test_ipv4_mapped_peer_is_trusted_by_its_ipv4_network() -> None:
    # An IPv4 client of a dual-stack [::] socket shows up as ::ffff:a.b.c.d.
    assert POLICY.is_trusted("::ffff:10.1.2.3")


def test_no_forwarded_for_header_when_the_peer_is_unknown() -> None:
    out = upstream(info=ForwardingInfo(peer="", scheme="http", host="example.com"))
    assert "x-forwarded-for" not in names(out)


# --- every spelling a lenient backend folds together (issue 7 item 4) ---------------------


def test_owned_request_headers_are_dropped_after_folding_every_punctuation() -> None:
    forged = ["X.Session", "x.session.status", "X.Set.Session", "X-Patch-Session"]
    forged += ["X.Patch_Session", "X~Session", "X--Session", "XSession"]
    out = upstream(*((name, "{}") for name in forged), ("X-Sessions", "kept"))
    assert list(out.keys())[:1] == ["X-Sessions"]
    assert not any(name in out for name in forged)


def test_patch_header_values_are_collected_in_any_spelling_and_never_forwarded() -> None:
    split = POLICY.client_response_headers(
        [("X-Patch-Session", '{"a":1}'), ("x.patch.session", "{}"), ("X.Set.Session", "null")],
        None,
    )
    assert len(split.headers) == 0
    assert split.patch_values == ['{"a":1}', "{}"]
    assert split.set_values == ["null"]


def test_dot_spelled_owned_response_headers_are_dropped() -> None:
    out, set_values = response(("X.Session", "{}"), ("X.Session.Status", "valid"))
    assert len(out) == 0
    assert set_values == []


def test_connection_tokens_never_remove_framing_headers() -> None:
    out, _ = response(
        ("Content-Length", "5"), ("X-Extra", "1"), connection="content-length, x-extra"
    )
    assert out.getall("Content-Length") == ["5"]
    assert "X-Extra" not in out
    req = upstream(("Content-Length", "5"), ("Connection", "content-length"))
    assert req.getall("Content-Length") == ["5"]


# --- nameless and disguised chunk Set-Cookies (issue 7 item 11) -----------------------------


def test_nameless_or_disguised_chunk_set_cookies_are_dropped() -> None:
    values = ["=session.0", "=session.0=x; Path=/", "session.3", " session.1 =x", "SESSION.2=x"]
    out, _ = response(*(("Set-Cookie", v) for v in values), ("Set-Cookie", "=other"))
    assert out.getall("Set-Cookie") == ["=other"]


# --- shared caches never store a session (issue 7 item 10) --------------------------------


def marked(*items: tuple[str, str]) -> CIMultiDict[str]:
    out = CIMultiDict(items)
    HeaderPolicy.mark_uncacheable(out)
    return out


def test_a_session_response_becomes_private_and_varies_on_cookie() -> None:
    out = marked(("Content-Type", "text/html"))
    assert out["Cache-Control"] == "private"
    assert out["Vary"] == "Cookie"


def test_public_and_s_maxage_go_and_the_rest_stays() -> None:
    out = marked(("Cache-Control", "public, max-age=60"), ("Cache-Control", "s-maxage=600"))
    assert out.getall("Cache-Control") == ["private, max-age=60"]


def test_no_store_is_kept() -> None:
    assert marked(("Cache-Control", "no-store"))["Cache-Control"] == "private, no-store"


def test_vary_is_merged_not_duplicated() -> None:
    assert marked(("Vary", "Accept, cookie"))["Vary"] == "Accept, cookie"
    assert marked(("Vary", "Accept"), ("Vary", "Origin"))["Vary"] == "Accept, Origin, Cookie"
    assert marked(("Vary", "*"))["Vary"] == "*"
