"""Issue 14 finding 5: a malformed Host is a 400, never a route, and never reaches an upstream.

The proxy routes ``admin.example.com`` to the ``admin`` upstream (its base path
``/admin-side`` shows in the target the recording upstream sees) and everything else to a
catch-all, so any request that got past the check would reach the upstream. Each refused
spelling, in a Host field and in an absolute-form target, must leave the upstream with no byte
at all; each accepted one arrives once, with exactly the head written here. On main at 56aa396
every refused spelling below was routed and forwarded verbatim, except those aiohttp's parser
already refuses (a second Host, a port over 65535 or an unbracketed or garbage IPv6 address in
an absolute-form target).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.adversarial.recording_upstream import RecordingUpstream
from tests.integration.log_watch import WATCH
from tests.integration.proxy_client import RawConnection, RawResponse
from tests.integration.sidecar import RunningProxy, base_config

pytestmark = pytest.mark.integration

ADMIN = "admin.example.com"

#: Host field values that are not a plain host[:port] (RFC 9112 section 3.2: 400).
BAD_HOSTS = [
    pytest.param(f"x@{ADMIN}", id="userinfo"),
    pytest.param(f"x:y@{ADMIN}", id="userinfo-with-password"),
    pytest.param(f"{ADMIN}:evil", id="port-not-a-number"),
    pytest.param(f"{ADMIN}/x", id="slash"),
    pytest.param(f"{ADMIN}\\x", id="backslash"),
    pytest.param(f"{ADMIN}?x", id="question-mark"),
    pytest.param(f"{ADMIN}#x", id="hash"),
    pytest.param("admin example.com", id="space"),
    pytest.param("admin\texample.com", id="tab"),
    pytest.param("adm%69n.example.com", id="percent-encoded"),
    pytest.param("%61dmin.example.com", id="percent-encoded-first"),
    *(pytest.param(f"admin{c}.example.com", id=f"sub-delim-{c}") for c in "!$&'()*+,;="),
    pytest.param("", id="empty"),
    pytest.param(f"{ADMIN}:", id="empty-port"),
    pytest.param(f"{ADMIN}:99999", id="port-over-65535"),
    pytest.param(f"{ADMIN}:65536", id="port-65536"),
    pytest.param(f"{ADMIN}:0", id="port-0"),
    pytest.param(f"{ADMIN}:0080", id="port-leading-zero"),
    pytest.param(f"{ADMIN}:+80", id="port-signed"),
    pytest.param(f"{ADMIN}:80:81", id="two-ports"),
    pytest.param("::1", id="ipv6-without-brackets"),
    pytest.param("::1:8080", id="ipv6-port-without-brackets"),
    pytest.param("[::1", id="ipv6-unclosed"),
    pytest.param("[garbage]", id="brackets-garbage"),
    pytest.param("[:::]", id="brackets-bad-ipv6"),
    pytest.param("[1.2.3.4]", id="brackets-ipv4"),
    pytest.param("[::1]x", id="brackets-trailing-garbage"),
    pytest.param("[::1]:", id="brackets-empty-port"),
    pytest.param("[fe80::1%25eth0]", id="ipv6-zone-id"),
    pytest.param("[v1.x]", id="ipvfuture"),
    pytest.param(f"{ADMIN}..", id="two-trailing-dots"),
    pytest.param(f".{ADMIN}", id="leading-dot"),
    pytest.param("admin..example.com", id="empty-label"),
    pytest.param("127.1", id="short-ipv4"),
    pytest.param("999.1.1.1", id="octet-over-255"),
    pytest.param("010.0.0.1", id="octal-octet"),
    pytest.param("0x7f.0.0.1", id="hex-ipv4"),
    pytest.param("127.0.0.1.", id="ipv4-trailing-dot"),
    pytest.param("8080", id="number"),
    pytest.param("my_app", id="underscore"),
    pytest.param("x" * 64 + ".example.com", id="label-over-63"),
    pytest.param("a." * 131 + "com", id="name-over-260"),
    pytest.param("*", id="asterisk"),
    pytest.param("ädmin.example.com", id="latin-1-byte"),
    pytest.param("Ã¤dmin.example.com", id="utf-8-bytes"),
]

#: Absolute-form targets whose authority is not a plain host[:port], with a valid Host field.
BAD_AUTHORITIES = [
    pytest.param(f"http://x@{ADMIN}/x", id="userinfo"),
    pytest.param(f"http://x:y@{ADMIN}/x", id="userinfo-with-password"),
    pytest.param(f"http://@{ADMIN}/x", id="empty-userinfo"),
    pytest.param("http://adm%69n.example.com/x", id="percent-encoded"),
    *(pytest.param(f"http://admin{c}.example.com/x", id=f"sub-delim-{c}") for c in "!$&'()*+,;="),
    pytest.param(f"http://{ADMIN}:/x", id="empty-port"),
    pytest.param(f"http://{ADMIN}:0080/x", id="port-leading-zero"),
    pytest.param(f"http://{ADMIN}:99999/x", id="port-over-65535"),
    pytest.param("http://::1/x", id="ipv6-without-brackets"),
    pytest.param("http://[garbage]/x", id="brackets-garbage"),
    pytest.param("http://[fe80::1%25eth0]/x", id="ipv6-zone-id"),
    pytest.param("http://127.1/x", id="short-ipv4"),
    pytest.param(f"http://{ADMIN}../x", id="two-trailing-dots"),
]

#: (Host field or None, request target, the upstream's target, the Host it receives).
GOOD = [
    pytest.param("app", "/x", "/x", "app", id="name"),
    pytest.param(ADMIN, "/x", "/admin-side/x", ADMIN, id="routed-name"),
    pytest.param(f"{ADMIN}:8080", "/x", "/admin-side/x", f"{ADMIN}:8080", id="name-port"),
    pytest.param("ADMIN.Example.COM", "/x", "/admin-side/x", "ADMIN.Example.COM", id="case"),
    pytest.param(f"{ADMIN}.", "/x", "/admin-side/x", f"{ADMIN}.", id="trailing-dot"),
    pytest.param(f"{ADMIN}:65535", "/x", "/admin-side/x", f"{ADMIN}:65535", id="port-65535"),
    pytest.param("xn--bcher-kva.example", "/x", "/x", "xn--bcher-kva.example", id="punycode"),
    pytest.param("127.0.0.1", "/x", "/x", "127.0.0.1", id="ipv4"),
    pytest.param("127.0.0.1:8080", "/x", "/x", "127.0.0.1:8080", id="ipv4-port"),
    pytest.param("[::1]", "/x", "/x", "[::1]", id="ipv6"),
    pytest.param("[::1]:8080", "/x", "/x", "[::1]:8080", id="ipv6-port"),
    pytest.param("[::ffff:127.0.0.1]", "/x", "/x", "[::ffff:127.0.0.1]", id="ipv6-mapped"),
    pytest.param(
        "app", f"http://{ADMIN}:8080/x", "/admin-side/x", f"{ADMIN}:8080", id="absolute-form"
    ),
    pytest.param("app", "http://[::1]:8080/x", "/x", "[::1]:8080", id="absolute-form-ipv6"),
]


@pytest.fixture(scope="module")
def proxy(upstream: RecordingUpstream) -> Iterator[RunningProxy]:
    admin = {"url": f"{upstream.url}/admin-side", "name": "admin", "host": ADMIN, "timeout": 5}
    config = base_config(upstream.url)
    config["upstreams"].append(admin)
    with WATCH.start_proxy(config) as running:
        yield running


def exchange(proxy: RunningProxy, upstream: RecordingUpstream, head: str) -> RawResponse:
    upstream.reset()
    with RawConnection(proxy.port, timeout=5) as client:
        client.send(head.encode("latin-1") + b"\r\n\r\n")
        response = client.read_response()
    upstream.wait_idle(1)
    return response


def assert_refused(response: RawResponse, upstream: RecordingUpstream) -> None:
    assert response.status == 400
    assert response.header("Connection") == "close"
    assert upstream.all_bytes() == b""


@pytest.mark.parametrize("target", ["/x", f"http://{ADMIN}/x"], ids=["origin", "absolute"])
@pytest.mark.parametrize("host", BAD_HOSTS)
def test_a_malformed_host_field_is_refused_and_nothing_reaches_the_upstream(
    proxy: RunningProxy, upstream: RecordingUpstream, host: str, target: str
) -> None:
    # RFC 9112 section 3.2: the Host field is checked even when the target's authority is used.
    response = exchange(proxy, upstream, f"GET {target} HTTP/1.1\r\nHost: {host}")
    assert_refused(response, upstream)


@pytest.mark.parametrize("target", BAD_AUTHORITIES)
def test_a_malformed_absolute_form_authority_is_refused_and_nothing_reaches_the_upstream(
    proxy: RunningProxy, upstream: RecordingUpstream, target: str
) -> None:
    response = exchange(proxy, upstream, f"GET {target} HTTP/1.1\r\nHost: {ADMIN}")
    assert_refused(response, upstream)


def test_the_refusal_says_bad_host_without_echoing_the_host(
    proxy: RunningProxy, upstream: RecordingUpstream
) -> None:
    response = exchange(proxy, upstream, "GET /x HTTP/1.1\r\nHost: evil@admin.example.com")
    assert response.json() == {"error": "bad_host"}
    assert b"evil" not in response.body


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param("Host: app\r\nHost: app", id="same-twice"),
        pytest.param(f"Host: app\r\nhost: {ADMIN}", id="two-names"),
        pytest.param(f"Host: {ADMIN}\r\nHOST: x@{ADMIN}", id="one-malformed"),
    ],
)
def test_a_second_host_field_is_refused_and_nothing_reaches_the_upstream(
    proxy: RunningProxy, upstream: RecordingUpstream, fields: str
) -> None:
    response = exchange(proxy, upstream, f"GET /x HTTP/1.1\r\n{fields}")
    assert_refused(response, upstream)


@pytest.mark.parametrize(("field", "target", "routed_to", "forwarded"), GOOD)
def test_a_valid_host_is_routed_and_forwarded_exactly(
    proxy: RunningProxy,
    upstream: RecordingUpstream,
    field: str,
    target: str,
    routed_to: str,
    forwarded: str,
) -> None:
    response = exchange(proxy, upstream, f"GET {target} HTTP/1.1\r\nHost: {field}")
    assert response.status == 200
    assert_forwarded(upstream, response, routed_to, forwarded)


def test_an_http_1_0_request_without_host_is_routed_to_the_catch_all_as_before(
    proxy: RunningProxy, upstream: RecordingUpstream
) -> None:
    response = exchange(proxy, upstream, "GET /x HTTP/1.0\r\nX-Probe: 1")
    assert response.status == 200
    assert_forwarded(upstream, response, "/x", "", ("X-Probe", "1"))


def assert_forwarded(
    upstream: RecordingUpstream,
    response: RawResponse,
    target: str,
    host: str,
    *extra: tuple[str, str],
) -> None:
    """The upstream received one request, nothing else, and exactly this head."""
    [request] = upstream.requests()
    assert upstream.all_bytes() == request.raw
    assert request.start == (b"GET", target.encode(), b"1.1")
    expected = [
        ("Host", host),
        ("X-Forwarded-Host", host),
        ("X-Forwarded-For", "127.0.0.1"),
        ("X-Forwarded-Proto", "http"),
        ("X-Session", "{}"),
        ("X-Session-Status", "absent"),
        ("X-Request-Id", response.header("X-Request-Id") or ""),
        *extra,
    ]
    received = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in request.headers]
    assert sorted(received) == sorted(expected)


def test_a_request_pipelined_behind_a_refused_host_never_reaches_the_upstream(
    proxy: RunningProxy, upstream: RecordingUpstream
) -> None:
    # A pooled upstream connection first: the pipelined request would be sent on it at once.
    assert exchange(proxy, upstream, "GET /warm HTTP/1.1\r\nHost: app").status == 200
    upstream.reset()
    with RawConnection(proxy.port, timeout=5) as client:
        client.send(
            f"GET /x HTTP/1.1\r\nHost: x@{ADMIN}\r\n\r\nGET /y HTTP/1.1\r\nHost: app\r\n\r\n"
        )
        assert client.read_response().status == 400
        assert client.wait_closed(5) == "eof"
        assert client.leftover() == b""
    upstream.wait_idle(1)
    assert upstream.all_bytes() == b""
