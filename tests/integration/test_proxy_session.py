"""The session's round trip: chunk cookies in, X-Session to the backend, X-Set-Session back out.

Cookies a test needs in a particular state (expired, signed with an older secret, old enough
to refresh) are made with the proxy's own codec and an injected clock, configured as the proxy
is (cookie name ``session``, default chunk size and count).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator, Sequence
from urllib.parse import quote

import pytest

from proxy.session_codec import DecodeResult, SessionCodec, SessionState
from tests.integration.backends import RunningBackend
from tests.integration.log_watch import WATCH
from tests.integration.proxy_client import (
    CookieClient,
    SetCookie,
    chunk_cookies,
    compact,
    parse_set_cookie,
)
from tests.integration.scripted_backend import ScriptedBackend, canned_response
from tests.integration.sidecar import SECRET_1, SECRET_2, RunningProxy, base_config

pytestmark = [pytest.mark.integration, pytest.mark.system]

MAX_AGE = 1_209_600  # cookie.max_age by default
#: grow?kb=N adds N KiB of incompressible text: 45 fills all 12 chunks, 40 needs 11.
TWELVE_CHUNKS_KB = 45
ELEVEN_CHUNKS_KB = 40
THREE_CHUNKS_KB = 10


def codec(secrets: Sequence[str] = (SECRET_1,), age: float = 0.0) -> SessionCodec:
    """The proxy's codec, as configured in these tests, with its clock set ``age`` seconds back."""
    return SessionCodec(
        [s.encode() for s in secrets], name="session", clock=lambda: time.time() - age
    )


def forged_cookie(session: object, secrets: Sequence[str] = (SECRET_1,), age: float = 0) -> str:
    """A Cookie header carrying ``session`` as issued ``age`` seconds ago under ``secrets``."""
    WATCH.sensitive(compact(session))
    encoded = codec(secrets, age).encode(compact(session))
    for cookie in encoded.cookies:
        WATCH.sensitive(cookie.value)
    return "; ".join(f"{c.name}={c.value}" for c in encoded.cookies)


def decode(set_cookies: Sequence[SetCookie], secrets: Sequence[str]) -> DecodeResult:
    chunks = {i: c.value for i, c in chunk_cookies(set_cookies).items() if not c.expired}
    return codec(secrets).decode(chunks)


def assert_expired_chunk(cookie: SetCookie) -> None:
    assert cookie.value == ""
    assert cookie.attributes["max-age"] == "0"
    assert cookie.attributes["expires"] == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert cookie.attributes["path"] == "/"


@pytest.fixture
def client(proxy: RunningProxy) -> Iterator[CookieClient]:
    with CookieClient(proxy.url) as running:
        yield running


# --- set, read, clear ---------------------------------------------------------------------------


def test_session_is_set_read_and_cleared(any_proxy: RunningProxy) -> None:
    with CookieClient(any_proxy.url) as client:
        set_reply = client.set_session({"user": "ada-set-read-clear", "n": 1})
        assert [c.name for c in set_reply.set_cookies] == ["session.0"]
        seen = client.whoami()
        assert (seen["session"], seen["status"]) == (
            {"user": "ada-set-read-clear", "n": 1},
            "valid",
        )
        cleared = client.post("/session/clear")
        [expired] = cleared.set_cookies
        assert expired.name == "session.0"
        assert_expired_chunk(expired)
        seen = client.whoami()
    assert (seen["session_raw"], seen["status"]) == ("{}", "absent")


def test_session_is_merged_across_requests(any_proxy: RunningProxy) -> None:
    with CookieClient(any_proxy.url) as client:
        client.set_session({"user": "ada-merge", "cart": [1]})
        merged = client.post("/session/merge", json={"cart": [1, 2], "theme": "dark"})
        assert merged.status == 200
        seen = client.whoami()
    assert seen["session"] == {"user": "ada-merge", "cart": [1, 2], "theme": "dark"}


def test_x_session_is_compact_ascii_json(any_proxy: RunningProxy) -> None:
    session = {"name": "Zoë Ω-compact", "list": [1, 2, {"k": None}], "flag": True}
    with CookieClient(any_proxy.url) as client:
        client.set_session(session)
        seen = client.whoami()
    assert seen["session_raw"] == compact(session)
    assert seen["session_raw"].isascii()
    assert seen["session"] == session


def test_x_session_is_an_empty_object_without_a_session(any_proxy: RunningProxy) -> None:
    with CookieClient(any_proxy.url) as client:
        seen = client.whoami()
    assert (seen["session_raw"], seen["status"]) == ("{}", "absent")


# --- X-Session-Status -----------------------------------------------------------------------------


def test_status_is_valid_for_a_cookie_the_proxy_issued(client: CookieClient) -> None:
    client.set_session({"user": "ada-valid"})
    assert client.whoami()["status"] == "valid"


def test_status_is_expired_for_a_cookie_older_than_max_age(client: CookieClient) -> None:
    cookie = forged_cookie({"user": "ada-expired"}, age=MAX_AGE + 60)
    seen = client.whoami(headers={"Cookie": cookie})
    assert (seen["session_raw"], seen["status"]) == ("{}", "expired")


def test_status_is_invalid_for_a_tampered_cookie(client: CookieClient) -> None:
    cookie = forged_cookie({"user": "ada-tampered", "admin": False})
    name, _, value = cookie.partition("=")
    tampered = value[:-5] + ("A" if value[-5] != "A" else "B") + value[-4:]
    WATCH.sensitive(tampered)
    seen = client.whoami(headers={"Cookie": f"{name}={tampered}"})
    assert (seen["session_raw"], seen["status"]) == ("{}", "invalid")


def test_status_is_invalid_for_a_cookie_signed_with_an_unknown_secret(
    client: CookieClient,
) -> None:
    cookie = forged_cookie({"user": "ada-unknown"}, secrets=["another-secret-" + "z" * 32])
    seen = client.whoami(headers={"Cookie": cookie})
    assert (seen["session_raw"], seen["status"]) == ("{}", "invalid")


def test_status_is_invalid_when_a_chunk_is_missing(client: CookieClient) -> None:
    client.request("GET", f"/session/grow?kb={THREE_CHUNKS_KB}&key=missing-chunk")
    client.cookies.pop("session.1")
    seen = client.whoami()
    assert (seen["session_raw"], seen["status"]) == ("{}", "invalid")


# --- the Cookie header the backend sees -----------------------------------------------------------


def test_session_chunks_are_removed_from_the_backend_cookie_header(
    any_proxy: RunningProxy,
) -> None:
    session = forged_cookie({"user": "ada-cookie-strip"})
    header = f'a=1; {session}; b="two words"; sessionx=3; session.k=4; session.1=stale; c=5'
    with CookieClient(any_proxy.url) as client:
        seen = client.whoami(headers={"Cookie": header})
    assert seen["status"] == "valid"
    assert seen["cookie"] == 'a=1; b="two words"; sessionx=3; session.k=4; c=5'


def test_cookie_header_is_dropped_when_only_session_chunks_were_sent(
    any_proxy: RunningProxy,
) -> None:
    with CookieClient(any_proxy.url) as client:
        seen = client.whoami(headers={"Cookie": forged_cookie({"user": "ada-cookie-drop"})})
    assert seen["status"] == "valid"
    assert seen["cookie"] is None
    assert "cookie" not in seen["headers"]


def test_session_chunks_split_over_several_cookie_lines_are_read_and_removed(
    proxy: RunningProxy,
) -> None:
    chunks = forged_cookie({"user": "ada-lines", "pad": secrets.token_urlsafe(9000)}).split("; ")
    assert len(chunks) >= 3
    headers = [("Cookie", f"a=1; {chunks[0]}"), ("Cookie", "; ".join(["b=2", *chunks[1:]]))]
    with CookieClient(proxy.url) as client:
        seen = client.get("/whoami", headers=headers).json()
    assert (seen["status"], seen["session"]["user"]) == ("valid", "ada-lines")
    assert seen["cookie"] == "a=1; b=2"


def test_other_cookies_pass_unchanged_without_a_session(any_proxy: RunningProxy) -> None:
    with CookieClient(any_proxy.url) as client:
        seen = client.whoami(headers={"Cookie": "a=1;b=2;  theme=dark"})
    assert seen["cookie"] == "a=1;b=2;  theme=dark"


# --- the response path ----------------------------------------------------------------------------


def test_set_session_header_never_reaches_the_client(any_proxy: RunningProxy) -> None:
    with CookieClient(any_proxy.url) as client:
        reply = client.set_session({"user": "ada-hidden"})
    assert "X-Set-Session" not in reply.headers


SET_HEADER_SPELLINGS = ["X-Set-Session", "x-set-session", "X_SET_SESSION", "x_Set_session"]


@pytest.fixture(scope="module")
def spelling_proxy() -> Iterator[RunningProxy]:
    """A proxy in front of a backend that spells the set-header in several ways."""
    script = {
        f"/spelling/{i}": canned_response([(name, '{"user":"ada-spelling"}')])
        for i, name in enumerate(SET_HEADER_SPELLINGS)
    }
    with ScriptedBackend(script) as backend, WATCH.start_proxy(base_config(backend.url)) as p:
        yield p


@pytest.mark.parametrize("index", range(len(SET_HEADER_SPELLINGS)), ids=SET_HEADER_SPELLINGS)
def test_set_session_header_in_any_spelling_is_applied_and_never_forwarded(
    spelling_proxy: RunningProxy, index: int
) -> None:
    WATCH.sensitive('{"user":"ada-spelling"}')
    with CookieClient(spelling_proxy.url) as client:
        reply = client.get(f"/spelling/{index}")
    assert reply.status == 200
    assert not [n for n in reply.headers if n.lower().replace("_", "-") == "x-set-session"]
    result = decode(reply.set_cookies, [SECRET_1])
    assert (result.state, result.payload) == (SessionState.VALID, '{"user":"ada-spelling"}')


def test_new_session_expires_every_carried_chunk_beyond_its_count(client: CookieClient) -> None:
    client.request("GET", f"/session/grow?kb={THREE_CHUNKS_KB}&key=shrinking")
    assert client.live_chunk_count() == 3
    client.cookies["session.7"] = "stale-chunk-from-long-ago"
    reply = client.set_session({"user": "ada-shrunk"})
    cookies = chunk_cookies(reply.set_cookies)
    assert sorted(cookies) == [0, 1, 2, 7]
    assert not cookies[0].expired
    for index in (1, 2, 7):
        assert_expired_chunk(cookies[index])
    assert client.whoami()["session"] == {"user": "ada-shrunk"}


def test_new_session_of_the_same_size_expires_nothing(client: CookieClient) -> None:
    client.set_session({"user": "ada-same-1"})
    reply = client.set_session({"user": "ada-same-2"})
    assert [(c.name, c.expired) for c in reply.set_cookies] == [("session.0", False)]


@pytest.mark.parametrize("value", ["{}", "null"])
def test_empty_or_null_session_expires_every_carried_chunk(
    client: CookieClient, value: str
) -> None:
    client.request("GET", f"/session/grow?kb={THREE_CHUNKS_KB}&key=clearing")
    reply = client.get(f"/raw-set-session?value={quote(value)}")
    cookies = chunk_cookies(reply.set_cookies)
    assert sorted(cookies) == [0, 1, 2]
    for cookie in cookies.values():
        assert_expired_chunk(cookie)
    assert client.whoami()["status"] == "absent"


def test_clearing_without_a_session_sets_no_cookie(client: CookieClient) -> None:
    reply = client.post("/session/clear")
    assert reply.set_cookies == []


def test_no_set_session_header_means_no_set_cookie(client: CookieClient) -> None:
    assert client.get("/whoami").set_cookies == []
    client.set_session({"user": "ada-untouched"})
    assert client.get("/whoami").set_cookies == []


@pytest.mark.parametrize(
    "values",
    [["not json"], ["[1,2]"], ['"text"'], ["42"], ["true"], ['{"a":1'], ["NaN"], ["{}", "{}"]],
    ids=["text", "array", "string", "number", "bool", "truncated", "nan", "twice"],
)
def test_set_session_that_is_not_one_json_object_is_refused_with_502(
    client: CookieClient, values: list[str]
) -> None:
    client.set_session({"user": "ada-kept-after-bad-header"})
    before = dict(client.cookies)
    query = "&".join(f"value={quote(v)}" for v in values)
    reply = client.get(f"/raw-set-session?{query}")
    assert reply.status == 502
    assert reply.json() == {"error": "invalid_session_header"}
    assert reply.set_cookies == []
    assert client.cookies == before
    assert client.whoami()["session"] == {"user": "ada-kept-after-bad-header"}


def test_session_too_large_is_refused_with_502_and_both_sizes(client: CookieClient) -> None:
    client.set_session({"user": "ada-kept-after-overflow"})
    before = dict(client.cookies)
    reply = client.get("/session/grow?kb=60&key=overflow")
    assert reply.status == 502
    body = reply.json()
    assert body["error"] == "session_too_large"
    assert body["limit"] == codec().capacity
    assert body["bytes"] > body["limit"]
    assert set(body) == {"error", "bytes", "limit"}
    assert reply.set_cookies == []
    assert client.cookies == before
    assert client.whoami()["session"] == {"user": "ada-kept-after-overflow"}


def test_set_session_over_the_header_limit_is_refused_with_502_and_the_old_session_kept(
    client: CookieClient,
) -> None:
    # Past limits.max_header_bytes (128 KiB) the response head is not read: 502 naming the
    # size and the limit (the upstream's fault; 431 would blame the client), never a hang.
    client.set_session({"user": "ada-kept-after-huge-header"})
    before = dict(client.cookies)
    reply = client.post("/session", json={"pad": "p" * 140_000})
    assert reply.status == 502
    body = reply.json()
    assert body["error"] == "upstream_header_too_large"
    assert body["limit"] == 131_072
    assert body["bytes"] > body["limit"]
    assert reply.set_cookies == []
    assert client.cookies == before
    assert client.whoami()["session"] == {"user": "ada-kept-after-huge-header"}


def test_compressible_session_larger_than_the_cookies_is_accepted(client: CookieClient) -> None:
    session = {"pad": "c" * 100_000, "user": "ada-compressible"}
    reply = client.set_session(session)
    assert len(chunk_cookies(reply.set_cookies)) == 1
    assert client.whoami()["session"] == session


def test_backend_set_cookie_headers_pass_unchanged_except_session_chunks(
    any_proxy: RunningProxy,
) -> None:
    with CookieClient(any_proxy.url) as client:
        reply = client.get("/set-cookies")
    assert reply.headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/; HttpOnly"]


def test_backend_set_cookie_headers_pass_beside_a_new_session(client: CookieClient) -> None:
    client.set_session({"user": "ada-beside"})
    reply = client.get("/set-cookies")
    assert reply.headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/; HttpOnly"]
    assert client.whoami()["session"] == {"user": "ada-beside"}


# --- large sessions -----------------------------------------------------------------------------


def test_twelve_chunk_session_travels_both_ways(any_proxy: RunningProxy) -> None:
    with CookieClient(any_proxy.url) as client:
        grown = client.get(f"/session/grow?kb={TWELVE_CHUNKS_KB}&key=big")
        assert grown.status == 200
        assert len(chunk_cookies(grown.set_cookies)) == 12
        cookie_bytes = len(client.cookie_header() or "")
        assert 44_000 < cookie_bytes < 48_000
        seen = client.whoami()
    assert seen["status"] == "valid"
    assert len(seen["session_raw"]) == grown.json()["bytes"]
    assert len(seen["session"]["big"]) == TWELVE_CHUNKS_KB * 1024


def test_session_of_more_than_ten_chunks_round_trips(client: CookieClient) -> None:
    client.get(f"/session/grow?kb={ELEVEN_CHUNKS_KB}&key=blob")
    assert client.live_chunk_count() >= 10
    first = client.whoami()["session"]
    assert client.whoami()["session"] == first
    merged = client.post("/session/merge", json={"step": 2})
    assert merged.status == 200
    assert client.live_chunk_count() >= 10
    assert client.whoami()["session"] == first | {"step": 2}


def test_session_grows_shrinks_and_clears_for_a_client_that_ignores_deletions(
    proxy: RunningProxy,
) -> None:
    with CookieClient(proxy.url, ignore_deletions=True) as client:
        client.get(f"/session/grow?kb={TWELVE_CHUNKS_KB}&key=big")
        assert client.live_chunk_count() == 12
        assert client.whoami()["status"] == "valid"

        client.set_session({"user": "ada-small-again"})
        assert len(client.session_chunks()) == 12  # the deleted chunks are still sent, empty
        assert client.live_chunk_count() == 1
        seen = client.whoami()
        assert (seen["session"], seen["status"]) == ({"user": "ada-small-again"}, "valid")
        assert seen["cookie"] is None

        client.post("/session/clear")
        assert client.live_chunk_count() == 0
        seen = client.whoami()
        assert (seen["session_raw"], seen["status"]) == ("{}", "absent")

        client.set_session({"user": "ada-after-clear"})
        assert client.whoami()["session"] == {"user": "ada-after-clear"}


# --- key rotation and refresh ---------------------------------------------------------------------

REFRESH_AFTER = 600


@pytest.fixture(scope="module")
def rotating_proxy(python_backend: RunningBackend) -> Iterator[RunningProxy]:
    """Newest secret SECRET_2, older SECRET_1 still accepted; sessions refreshed after 10 min."""
    config = base_config(
        python_backend.url,
        secrets=[SECRET_2, SECRET_1],
        session={"refresh_after": REFRESH_AFTER},
    )
    with WATCH.start_proxy(config) as running:
        yield running


def test_cookie_signed_with_an_older_secret_is_resigned_with_the_newest(
    rotating_proxy: RunningProxy,
) -> None:
    session = {"user": "ada-rotated"}
    with CookieClient(rotating_proxy.url) as client:
        client.take([parse_set_cookie(forged_cookie(session, [SECRET_1], age=60))])
        reply = client.get("/whoami")
        seen = reply.json()
        assert (seen["session"], seen["status"]) == (session, "valid")
        assert [c.name for c in reply.set_cookies] == ["session.0"]
        resigned = decode(reply.set_cookies, [SECRET_2])
        assert (resigned.state, resigned.payload) == (SessionState.VALID, compact(session))
        # Re-signing keeps the session's age: rotation must not extend its life.
        assert time.time() - 70 < (resigned.issued_at or 0) < time.time() - 50
        assert client.get("/whoami").set_cookies == []


def test_multi_chunk_cookie_signed_with_an_older_secret_is_resigned_whole(
    rotating_proxy: RunningProxy,
) -> None:
    with CookieClient(rotating_proxy.url) as client:
        grown = client.get(f"/session/grow?kb={THREE_CHUNKS_KB}&key=rotate")
        session = client.whoami()["session"]
        old = forged_cookie(session, [SECRET_1])
        client.cookies.clear()
        client.take([parse_set_cookie(pair) for pair in old.split("; ")])
        reply = client.get("/whoami")
        assert reply.json()["session"] == session
        assert decode(reply.set_cookies, [SECRET_2]).state is SessionState.VALID
        assert len(chunk_cookies(reply.set_cookies)) == len(chunk_cookies(grown.set_cookies))


def test_cookie_older_than_refresh_after_is_reissued(rotating_proxy: RunningProxy) -> None:
    session = {"user": "ada-refreshed"}
    with CookieClient(rotating_proxy.url) as client:
        client.take([parse_set_cookie(forged_cookie(session, [SECRET_2], REFRESH_AFTER + 60))])
        reply = client.get("/whoami")
        assert reply.json()["session"] == session
        refreshed = decode(reply.set_cookies, [SECRET_2])
        assert (refreshed.state, refreshed.payload) == (SessionState.VALID, compact(session))
        assert abs((refreshed.issued_at or 0) - time.time()) < 5
        assert client.get("/whoami").set_cookies == []


def test_cookie_younger_than_refresh_after_is_left_alone(rotating_proxy: RunningProxy) -> None:
    cookie = forged_cookie({"user": "ada-young"}, [SECRET_2], age=REFRESH_AFTER - 60)
    with CookieClient(rotating_proxy.url) as client:
        reply = client.get("/whoami", headers={"Cookie": cookie})
    assert reply.json()["status"] == "valid"
    assert reply.set_cookies == []


def test_expired_cookie_is_not_refreshed(rotating_proxy: RunningProxy) -> None:
    cookie = forged_cookie({"user": "ada-too-old"}, [SECRET_1], age=MAX_AGE + 60)
    with CookieClient(rotating_proxy.url) as client:
        reply = client.get("/whoami", headers={"Cookie": cookie})
    assert reply.json()["status"] == "expired"
    assert reply.set_cookies == []
