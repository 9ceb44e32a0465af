"""Real front proxies (nginx, HAProxy, Caddy) in front of the real sidecar, over TLS and HTTP/2.

Each front ends TLS and HTTP/2 and speaks HTTP/1.1 to the sidecar, which sets ``secure: true``
cookies. A session grows past one chunk in a single response (up to 12 ``Set-Cookie`` headers
of about 4 KB each) and comes back as one ``Cookie`` header of up to 48,022 bytes, so a front
must hold the whole response head in one direction and the whole cookie line in the other.
For each front, the tests show where its defaults break, what the client sees then, and that
the settings docs/front-proxies.md gives carry a 40 KB and a full-size session through a grow,
read, shrink and clear. The doc cites these tests by name.
"""

from __future__ import annotations

import itertools
import random
import re
import string
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final

import pytest

from tests.integration.backends import RunningBackend, start_backend
from tests.integration.front_proxies import (
    CurlClient,
    CurlError,
    HTTPVersion,
    RunningFront,
    check_nginx_config,
    require_tool,
    start_caddy,
    start_haproxy,
    start_nginx,
)
from tests.integration.log_watch import WATCH
from tests.integration.proxy_client import Reply, chunk_cookies, compact
from tests.integration.sidecar import RunningProxy, base_config

pytestmark = [pytest.mark.integration, pytest.mark.system]

#: What docs/front-proxies.md gives for nginx, word for word.
NGINX_SETTINGS: Final = """\
    proxy_buffer_size           64k;
    proxy_buffers               4 64k;
    proxy_busy_buffers_size     64k;
    large_client_header_buffers 4 64k;
"""
#: What docs/front-proxies.md gives for HAProxy's global section.
HAPROXY_SETTINGS: Final = "    tune.bufsize 65536\n"
#: The defaults' limits that the tests find: one memory page for nginx's proxy_buffer_size,
#: 8k for large_client_header_buffers, 16384 - 1024 (tune.bufsize - tune.maxrewrite) for HAProxy.
NGINX_DEFAULT_PROXY_BUFFER: Final = 4096
NGINX_DEFAULT_HEADER_BUFFER: Final = 8192
HAPROXY_DEFAULT_HEAD_ROOM: Final = 16384 - 1024

#: grow?kb=40 adds 40 KiB of incompressible text, which takes 11 chunks.
FORTY_KB: Final = 40
FORTY_KB_CHUNKS: Final = 11
MAX_CHUNKS: Final = 12
#: Twelve full chunks of 4000 bytes, as one Cookie header: 12 * 4000 + 11 * len("; ").
FULL_COOKIE_BYTES: Final = 48_022

#: Fixed text that zlib cannot shrink much, so a session of N bytes has one size of cookie.
_TEXT: Final = "".join(
    random.Random(8).choices(string.ascii_letters + string.digits + "-_", k=60_000)
)
_EMPTY_BLOB: Final = len(compact({"blob": ""}))
NO_RESPONSE: Final = "no response"


class Session(dict[str, str]):
    """A session for the backend to set; its repr, which pytest may print, shows only its size."""

    def __repr__(self) -> str:
        return f"<session of {len(compact(self))} bytes>"


def session_of(size: int) -> Session:
    """A session whose compact JSON is exactly ``size`` bytes (11 or more)."""
    session = Session(blob=_TEXT[: size - _EMPTY_BLOB])
    WATCH.sensitive(compact(session))
    return session


def largest(passes: Callable[[int], bool], low: int, high: int) -> int:
    """The largest n in [low, high) for which ``passes`` holds, if it holds at low and not at high.

    At most log2(high - low) + 1 calls, so the search is bounded.
    """
    assert passes(low), f"{low} should pass"
    assert not passes(high), f"{high} should fail"
    while high - low > 1:
        middle = (low + high) // 2
        if passes(middle):
            low = middle
        else:
            high = middle
    return low


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def backend() -> Iterator[RunningBackend]:
    with start_backend("python") as running:
        yield running


@pytest.fixture(scope="module")
def sidecar(backend: RunningBackend) -> Iterator[RunningProxy]:
    """The sidecar as docs/front-proxies.md configures it: secure cookies, the front trusted."""
    config = base_config(backend.url, cookie={"secure": True}, trusted_proxies=["127.0.0.1"])
    with WATCH.start_proxy(config) as running:
        yield running


@pytest.fixture(scope="module")
def direct(sidecar: RunningProxy) -> Iterator[CurlClient]:
    """curl straight to the sidecar, to measure the response heads a front has to hold."""
    with CurlClient(sidecar.url, http="1.1") as client:
        yield client


@pytest.fixture(scope="module")
def full_session(direct: CurlClient) -> Session:
    """The largest session the sidecar writes: twelve full chunks."""

    def written(size: int) -> bool:
        direct.cookies.clear()
        return direct.post("/session", json=session_of(size)).status == 200

    size = largest(written, 40_000, 60_000)
    direct.cookies.clear()
    direct.post("/session", json=session_of(size))
    assert len(direct.session_chunks()) == MAX_CHUNKS
    assert len(direct.cookie_header() or "") == FULL_COOKIE_BYTES
    return session_of(size)


def head_size(direct: CurlClient, session: Session) -> int:
    """Bytes of the sidecar's response head (status line to blank line) that sets ``session``."""
    direct.cookies.clear()
    assert direct.post("/session", json=session).status == 200
    return direct.head_sizes[-1]


def cookies_for(direct: CurlClient, session: Session) -> dict[str, str]:
    """The chunk cookies the sidecar issues for ``session``, set straight, not through a front."""
    direct.cookies.clear()
    assert direct.post("/session", json=session).status == 200
    return dict(direct.cookies)


def front(start: Callable[[int, str], RunningFront], settings: str = "") -> Any:
    """A module fixture: the front ``start`` makes with ``settings``, before the sidecar."""

    @pytest.fixture(scope="module")
    def running(sidecar: RunningProxy) -> Iterator[RunningFront]:
        with start(sidecar.port, settings) as started:
            yield started

    return running


nginx_default = front(start_nginx)
nginx = front(start_nginx, NGINX_SETTINGS)
haproxy_default = front(start_haproxy)
haproxy = front(start_haproxy, HAPROXY_SETTINGS)
caddy = front(start_caddy)


# --- what a front must do for any session --------------------------------------------------------


def grow_read_shrink_and_clear(
    client: CurlClient, grow: Callable[[CurlClient], Reply], chunks: int, session: Any = None
) -> None:
    """Grow a session from nothing in one response, read it back, shrink it, clear it.

    Each step is judged by the client's cookie jar and by what the backend saw.
    """
    grown = grow(client)
    assert grown.status == 200, grown.body[:200]
    issued = chunk_cookies(grown.set_cookies)
    assert sorted(issued) == list(range(chunks))
    assert_secure_and_http_only(grown)
    assert sorted(client.session_chunks()) == list(range(chunks))

    seen = client.whoami()
    assert seen["status"] == "valid"
    if session is not None:
        assert seen["session"] == session
    else:
        assert len(seen["session_raw"]) == grown.json()["bytes"]
    assert seen["headers"]["x-forwarded-proto"] == "https"

    shrunk = client.set_session({"user": "ada-shrunk"})
    stale = chunk_cookies(shrunk.set_cookies)
    assert stale[0].value and not stale[0].expired
    assert sorted(i for i, c in stale.items() if c.expired) == list(range(1, chunks))
    assert_secure_and_http_only(shrunk)
    assert list(client.session_chunks()) == [0]
    seen = client.whoami()
    assert (seen["session"], seen["status"]) == ({"user": "ada-shrunk"}, "valid")

    cleared = client.post("/session/clear")
    [expired] = chunk_cookies(cleared.set_cookies).values()
    assert expired.expired
    assert_secure_and_http_only(cleared)
    assert client.session_chunks() == {}
    seen = client.whoami()
    assert (seen["session_raw"], seen["status"]) == ("{}", "absent")


def assert_secure_and_http_only(reply: Reply) -> None:
    """``cookie.secure: true`` behind a TLS front: every chunk cookie, expired ones too."""
    for cookie in reply.set_cookies:
        assert "secure" in cookie.attributes and "httponly" in cookie.attributes, cookie.name


def grow_forty_kb(client: CurlClient) -> Reply:
    return client.get(f"/session/grow?kb={FORTY_KB}")


_marks = itertools.count()


def mark(sidecar: RunningProxy) -> int:
    """Send ``GET /mark-N`` straight to the sidecar; return the index of its access-log line.

    The sidecar writes a request's line after its response, so a line can trail the client.
    A mark's line comes after the lines of every request answered before the mark was sent.
    """
    path = f"/mark-{next(_marks)}"  # the backend answers any GET
    target = f'"GET {path}" '
    with CurlClient(sidecar.url, http="1.1") as client:
        client.get(path)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        lines = sidecar.output().splitlines()
        found = [i for i, line in enumerate(lines) if target in line]
        if found:
            return found[0]
        time.sleep(0.02)
    raise AssertionError(f"the sidecar logged no {target} within 5 s")


@contextmanager
def sidecar_log(sidecar: RunningProxy) -> Iterator[list[str]]:
    """The sidecar's log lines for the requests made inside the ``with`` block."""
    lines: list[str] = []
    start = mark(sidecar)
    yield lines
    end = mark(sidecar)
    lines += sidecar.output().splitlines()[start + 1 : end]


def refused_by_front(client: CurlClient, cookie: str | None = None) -> str:
    """What the client got for a GET /whoami: its status, or NO_RESPONSE when curl got none.

    ``cookie``, if given, is the whole Cookie header instead of the jar's.
    """
    try:
        reply = client.get("/whoami", headers={"Cookie": cookie} if cookie else None)
    except CurlError:
        # How the connection ends (reset stream, GOAWAY, a close while curl still sends)
        # depends on timing; what matters is that no HTTP answer came.
        return NO_RESPONSE
    return str(reply.status)


def sets_sessions_through(front: RunningFront) -> Callable[[int], bool]:
    """Whether a session of n bytes can be set through ``front`` (200) or not (its 502)."""

    def passes(size: int) -> bool:
        with front.client() as client:
            status = client.post("/session", json=session_of(size)).status
        assert status in (200, 502), front.log()
        return status == 200

    return passes


def assert_growing_session_is_a_502_the_sidecar_logs_as_200(
    front: RunningFront, sidecar: RunningProxy
) -> None:
    with sidecar_log(sidecar) as logged, front.client() as client:
        assert grow_forty_kb(client).status == 502
        assert client.session_chunks() == {}
        assert client.http_versions == ["2"]
    [line] = [line for line in logged if '"GET /session/grow" ' in line]
    assert '"GET /session/grow" 200 ' in line


def assert_refused_before_the_sidecar(
    front: RunningFront, http: HTTPVersion, cookies: dict[str, str], sidecar: RunningProxy
) -> str:
    """Send ``cookies`` through ``front``; return what the client got, checking that the
    sidecar never saw the request."""
    with sidecar_log(sidecar) as logged, front.client(http) as client:
        client.cookies.update(cookies)
        outcome = refused_by_front(client)
    assert not [line for line in logged if '"GET /whoami" ' in line], front.log()
    return outcome


# --- the sidecar itself -------------------------------------------------------------------------


def test_the_sidecar_speaks_http_1_1_only(sidecar: RunningProxy) -> None:
    """HTTP/2 (and TLS) must end at the front: the sidecar refuses h2c and ignores Upgrade."""
    curl = require_tool("curl")
    prior_knowledge = subprocess.run(
        [curl, "-sS", "--http2-prior-knowledge", "-o", "/dev/null", f"{sidecar.url}/whoami"],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    # No HTTP/2 answer, only a closed connection: empty reply (52), or, while curl still
    # writes its preface and SETTINGS, a send (55) or receive (56) failure.
    assert prior_knowledge.returncode in (52, 55, 56), prior_knowledge.stderr
    with CurlClient(sidecar.url, http="2") as client:  # cleartext: curl asks Upgrade: h2c
        assert client.get("/whoami").status == 200
    assert client.http_versions == ["1.1"]


# --- nginx ----------------------------------------------------------------------------------------


def test_nginx_default_proxy_buffer_size_turns_a_growing_session_into_a_502(
    nginx_default: RunningFront, sidecar: RunningProxy
) -> None:
    """The issue's failure: nginx answers 502 while the sidecar logs 200 for the same request."""
    assert_growing_session_is_a_502_the_sidecar_logs_as_200(nginx_default, sidecar)
    assert "upstream sent too big header" in nginx_default.log()


def test_nginx_default_proxy_buffer_size_holds_a_response_head_of_one_page(
    nginx_default: RunningFront, direct: CurlClient
) -> None:
    """The default breaks once the sidecar's head passes 4096 bytes, inside the first chunk."""

    size = largest(sets_sessions_through(nginx_default), 1_000, 8_000)
    head = head_size(direct, session_of(size))
    larger = head_size(direct, session_of(size + 1))
    assert head < NGINX_DEFAULT_PROXY_BUFFER <= larger
    assert list(direct.session_chunks()) == [0]  # one chunk, not yet full
    print(
        f"nginx default proxy_buffer_size: a {size}-byte session ({head}-byte head) passes, "
        f"{size + 1} ({larger}) does not"
    )


@pytest.mark.parametrize("size", ["40kb", "full"])
def test_nginx_proxy_buffer_size_must_hold_the_whole_response_head(
    size: str, sidecar: RunningProxy, direct: CurlClient, full_session: Session
) -> None:
    """proxy_buffer_size must be larger than the sidecar's response head, by a byte at least.

    One byte short is nginx's 502. Exactly the head's size fills the buffer, and nginx then
    cuts the response ("upstream prematurely closed connection"): no complete answer.
    """
    session = full_session if size == "full" else session_of(FORTY_KB * 1024)
    head = head_size(direct, session)
    for buffer, outcome in ((head - 1, "502"), (head, NO_RESPONSE), (head + 1, "200")):
        settings = f"proxy_buffer_size {buffer}; proxy_buffers 4 {buffer};"
        settings += f"proxy_busy_buffers_size {buffer};"
        with start_nginx(sidecar.port, settings) as front, front.client() as client:
            try:
                got = str(client.post("/session", json=session).status)
            except CurlError:
                got = NO_RESPONSE
            assert got == outcome, front.log()
    print(f"nginx: a {size} session needs proxy_buffer_size > {head} bytes")


def test_nginx_refuses_a_larger_proxy_buffer_size_alone() -> None:
    """nginx -t: raising proxy_buffer_size alone breaks the rule on proxy_busy_buffers_size."""
    accepted, output = check_nginx_config("proxy_buffer_size 64k;")
    assert not accepted
    assert '"proxy_busy_buffers_size" must be less than the size of all "proxy_buffers"' in output
    accepted, output = check_nginx_config(NGINX_SETTINGS)
    assert accepted, output
    assert "[warn]" not in output


def test_nginx_takes_what_ingress_nginx_renders_and_carries_a_full_session(
    sidecar: RunningProxy, full_session: Session
) -> None:
    """ingress-nginx writes proxy_buffers as <proxy-buffers-number> <proxy-buffer-size> and
    leaves proxy_busy_buffers_size to nginx; with its ConfigMap's large-client-header-buffers."""
    rendered = "proxy_buffer_size 64k;\nproxy_buffers 4 64k;\nlarge_client_header_buffers 4 64k;"
    accepted, output = check_nginx_config(rendered)
    assert accepted, output
    with start_nginx(sidecar.port, rendered) as front, front.client() as client:
        assert client.post("/session", json=full_session).status == 200
        assert client.whoami()["session"] == full_session


@pytest.mark.parametrize(("http", "refusal"), [("1.1", "400"), ("2", NO_RESPONSE)])
def test_nginx_default_large_client_header_buffers_refuse_a_40_kb_cookie(
    http: HTTPVersion,
    refusal: str,
    nginx_default: RunningFront,
    sidecar: RunningProxy,
    direct: CurlClient,
) -> None:
    """Over HTTP/1.1 nginx answers 400; over HTTP/2 it drops the connection with no answer."""
    cookies = cookies_for(direct, session_of(FORTY_KB * 1024))
    assert assert_refused_before_the_sidecar(nginx_default, http, cookies, sidecar) == refusal
    if http == "2":
        assert "client sent too large header field" in nginx_default.log()


@pytest.mark.parametrize(
    ("http", "letter", "longest_value"),
    [
        # HTTP/1.1: "Cookie: " + value + CRLF must fit one 8k buffer.
        ("1.1", "X", NGINX_DEFAULT_HEADER_BUFFER - len("Cookie: \r\n")),
        # HTTP/2: the value as HPACK sends it must fit. "X" has an 8-bit Huffman code, so curl
        # sends it as is ...
        ("2", "X", NGINX_DEFAULT_HEADER_BUFFER),
        # ... and "a" a 5-bit one (RFC 7541 appendix B): 13,106 characters code to 8,192 bytes.
        ("2", "a", 13_106),
    ],
)
def test_nginx_cookie_line_must_fit_one_large_client_header_buffer(
    http: HTTPVersion, letter: str, longest_value: int, nginx_default: RunningFront
) -> None:
    def passes(length: int) -> bool:
        with nginx_default.client(http) as client:
            return refused_by_front(client, "x=" + letter * (length - 2)) == "200"

    assert passes(longest_value)
    assert not passes(longest_value + 1)


def test_nginx_1_22_ignores_http2_max_field_size_and_http2_max_header_size(
    sidecar: RunningProxy, direct: CurlClient
) -> None:
    """Both are obsolete since nginx 1.19.7: -t warns, and HTTP/2 still obeys the 8k buffer."""
    obsolete = "http2_max_field_size 64k; http2_max_header_size 64k;"
    accepted, output = check_nginx_config(obsolete)
    assert accepted
    assert 'the "http2_max_field_size" directive is obsolete' in output
    assert 'the "http2_max_header_size" directive is obsolete' in output
    cookies = cookies_for(direct, session_of(FORTY_KB * 1024))
    with start_nginx(sidecar.port, obsolete) as front, front.client("2") as client:
        client.cookies.update(cookies)
        assert refused_by_front(client) == NO_RESPONSE


@pytest.mark.parametrize("http", ["2", "1.1"])
def test_nginx_with_the_documented_settings_carries_a_40_kb_session(
    http: HTTPVersion, nginx: RunningFront
) -> None:
    with nginx.client(http) as client:
        grow_read_shrink_and_clear(client, grow_forty_kb, FORTY_KB_CHUNKS)
    assert set(client.http_versions) == {http}


@pytest.mark.parametrize("http", ["2", "1.1"])
def test_nginx_with_the_documented_settings_carries_a_full_session(
    http: HTTPVersion, nginx: RunningFront, full_session: Session
) -> None:
    with nginx.client(http) as client:
        grow_read_shrink_and_clear(
            client, lambda c: c.post("/session", json=full_session), MAX_CHUNKS, full_session
        )
    assert set(client.http_versions) == {http}


# --- forwarding headers -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["nginx", "haproxy", "caddy"])
def test_behind_a_trusted_front_the_backend_sees_the_client_and_https(
    kind: str, request: pytest.FixtureRequest, sidecar: RunningProxy
) -> None:
    """With the front in trusted_proxies, its X-Forwarded-For is extended, its -Proto kept,
    and the access log names the client (127.0.0.2 here), not the front (127.0.0.1)."""
    front: RunningFront = request.getfixturevalue(kind)
    with sidecar_log(sidecar) as logged, front.client(source="127.0.0.2") as client:
        headers = client.whoami()["headers"]
    assert headers["x-forwarded-for"] == "127.0.0.2, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "https"
    [line] = [line for line in logged if '"GET /whoami" ' in line]
    assert ' 127.0.0.2 "GET /whoami" ' in line


def test_behind_an_untrusted_front_the_forwarding_headers_are_replaced(
    backend: RunningBackend,
) -> None:
    """Without trusted_proxies the backend sees the front's address and the sidecar's http."""
    config = base_config(backend.url, cookie={"secure": True})
    with (
        WATCH.start_proxy(config) as untrusting,
        start_nginx(untrusting.port) as front,
        front.client(source="127.0.0.2") as client,
    ):
        headers = client.whoami()["headers"]
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"


# --- HAProxy --------------------------------------------------------------------------------------


def test_haproxy_default_bufsize_turns_a_growing_session_into_a_502(
    haproxy_default: RunningFront, sidecar: RunningProxy
) -> None:
    assert_growing_session_is_a_502_the_sidecar_logs_as_200(haproxy_default, sidecar)
    # The httplog line's termination state: P (HAProxy itself), H (in the response head).
    assert re.search(r" 502 \d+ - - PH-- ", haproxy_default.log())


def test_haproxy_default_bufsize_holds_a_response_head_of_about_15_kb(
    haproxy_default: RunningFront, direct: CurlClient
) -> None:
    """tune.bufsize 16384 minus tune.maxrewrite 1024, less a little of HAProxy's own."""

    size = largest(sets_sessions_through(haproxy_default), 8_000, 20_000)
    head = head_size(direct, session_of(size))
    assert HAPROXY_DEFAULT_HEAD_ROOM - 512 < head <= HAPROXY_DEFAULT_HEAD_ROOM
    larger = head_size(direct, session_of(size + 1))
    assert larger > head
    print(f"HAProxy default tune.bufsize: a {head}-byte response head passes, {larger} fails")


@pytest.mark.parametrize(
    ("http", "refusals"),
    [("1.1", {"400", NO_RESPONSE}), ("2", {NO_RESPONSE})],
    ids=["1.1", "2"],
)
def test_haproxy_default_bufsize_refuses_a_40_kb_cookie(
    http: HTTPVersion,
    refusals: set[str],
    haproxy_default: RunningFront,
    sidecar: RunningProxy,
    direct: CurlClient,
) -> None:
    """HTTP/1.1: a 400, then HAProxy closes at once, so a client still sending may get a reset
    instead. HTTP/2: HAProxy ends the stream with no answer."""
    cookies = cookies_for(direct, session_of(FORTY_KB * 1024))
    assert assert_refused_before_the_sidecar(haproxy_default, http, cookies, sidecar) in refusals


@pytest.mark.parametrize("http", ["2", "1.1"])
def test_haproxy_with_tune_bufsize_65536_carries_40_kb_and_full_sessions(
    http: HTTPVersion, haproxy: RunningFront, full_session: Session
) -> None:
    with haproxy.client(http) as client:
        grow_read_shrink_and_clear(client, grow_forty_kb, FORTY_KB_CHUNKS)
        grow_read_shrink_and_clear(
            client, lambda c: c.post("/session", json=full_session), MAX_CHUNKS, full_session
        )
    assert set(client.http_versions) == {http}


# --- Caddy ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("http", ["2", "1.1"])
def test_caddy_defaults_carry_40_kb_and_full_sessions(
    http: HTTPVersion, caddy: RunningFront, full_session: Session
) -> None:
    with caddy.client(http) as client:
        grow_read_shrink_and_clear(client, grow_forty_kb, FORTY_KB_CHUNKS)
        grow_read_shrink_and_clear(
            client, lambda c: c.post("/session", json=full_session), MAX_CHUNKS, full_session
        )
    assert set(client.http_versions) == {http}


@pytest.mark.parametrize(("http", "refusal"), [("1.1", "431"), ("2", NO_RESPONSE)])
def test_caddy_max_header_size_below_the_cookie_is_refused(
    http: HTTPVersion,
    refusal: str,
    sidecar: RunningProxy,
    direct: CurlClient,
    full_session: Session,
) -> None:
    """Caddy's request-header limit (servers max_header_size) must hold the whole Cookie."""
    cookies = cookies_for(direct, full_session)
    with start_caddy(sidecar.port, "        max_header_size 32kb") as front:
        assert assert_refused_before_the_sidecar(front, http, cookies, sidecar) == refusal


def test_caddy_max_response_header_below_the_sidecar_head_is_a_502(
    sidecar: RunningProxy,
) -> None:
    """Caddy's response-header limit (transport http max_response_header) must hold the head."""
    with (
        start_caddy(
            sidecar.port, transport_options="            max_response_header 16KB"
        ) as front,
        front.client() as client,
    ):
        assert grow_forty_kb(client).status == 502
        assert client.session_chunks() == {}
    assert "server response headers exceeded 16000 bytes" in front.log()
