"""Cookies tossed from a sibling subdomain never fix an attacker's session (issue 14, finding 6).

A page on ``evil.example.com`` may set cookies with ``Domain=example.com``; the browser then
sends them to ``app.example.com`` beside the victim's own host-only cookies, in an order the
attacker can influence (RFC 6265 section 5.4 sorts by path length, then creation time). Before
the fix, ``Cookie: session.0=junk; session=<attacker's legacy cookie>; session.0=<victim's>``
made the two chunk 0s cancel out, the proxy's session count as absent, and the attacker's
legacy Flask session be migrated over the victim's.

Rules checked here on the real wire (the recording upstream shows what the backend got, the
raw client the ``Set-Cookie`` lines):

- chunk cookies with conflicting values, at any index, make the session ``invalid``: the
  backend sees neither session, and nothing is re-issued (a lockout while the tossed cookie
  lives, never a fixation; ``__Host-`` prevents even that, see docs/security.md);
- the same value twice is one cookie, not a conflict (an attacker cannot toss a value it
  does not know, and a browser may hold one value under two scopes);
- a legacy cookie is migrated only when the request carries no chunk cookie of the proxy's
  own; empty chunk cookies with chunk 0 among them (the deleted-session marker) count as none.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator, Mapping
from urllib.parse import quote

import pytest

from tests.adversarial.recording_upstream import RecordingUpstream
from tests.integration.cookie_browser import Browser, Seen, flask_cookie
from tests.integration.log_watch import WATCH
from tests.integration.sidecar import RunningProxy, base_config

pytestmark = pytest.mark.integration

FLASK_KEY = "tossing-flask-secret-key-0123456789"
VICTIM = {"user": "victim"}
ATTACKER = {"user": "attacker"}
#: What the proxy writes to expire the legacy cookie (Flask's scope: Path=/, host-only).
LEGACY_EXPIRED = (
    "session=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; SameSite=Lax"
)


@pytest.fixture(scope="module")
def proxy(upstream: RecordingUpstream) -> Iterator[RunningProxy]:
    config = base_config(upstream.url, cookie={"secure": False, "chunk_size": 256})
    config["migrate"] = {"format": "flask", "secret_keys": ["${FLASK_SECRET_KEY}"]}
    with WATCH.start_proxy(config, {"FLASK_SECRET_KEY": FLASK_KEY}) as running:
        yield running


def legacy_cookie(session: Mapping[str, object]) -> str:
    """A cookie Flask itself signed with the app's key (what the attacker got by logging in)."""
    return flask_cookie(FLASK_KEY, session)


@pytest.fixture
def browser(proxy: RunningProxy, upstream: RecordingUpstream) -> Browser:
    return Browser(proxy.port, upstream)


def login(browser: Browser, session: object) -> dict[int, str]:
    """Log in through the proxy; the chunk values the browser then holds, by index."""
    browser.get("/login", None, "&respond=set-session&session=" + quote(json.dumps(session)))
    chunks = {int(c.name.removeprefix("session.")): c.value or "" for c in browser.jar}
    for value in chunks.values():
        WATCH.sensitive(value)
    return dict(sorted(chunks.items()))


@pytest.fixture(scope="module")
def victim(proxy: RunningProxy, upstream: RecordingUpstream) -> dict[int, str]:
    chunks = login(Browser(proxy.port, upstream), VICTIM)
    assert list(chunks) == [0]
    return chunks


@pytest.fixture(scope="module")
def big_victim(proxy: RunningProxy, upstream: RecordingUpstream) -> dict[int, str]:
    """A victim whose session spans two chunks (256-byte chunks, incompressible data)."""
    blob = base64.b64encode(os.urandom(150)).decode("ascii")
    chunks = login(Browser(proxy.port, upstream), {**VICTIM, "blob": blob})
    assert list(chunks) == [0, 1]
    return chunks


@pytest.fixture(scope="module")
def attacker() -> str:
    return legacy_cookie(ATTACKER)


def assert_locked_out_not_fixed(seen: Seen) -> None:
    """Neither session reaches the backend, nothing is re-issued, the legacy cookie is expired."""
    assert (seen.status, seen.session, seen.migrated) == ("invalid", {}, None)
    assert seen.cookie is None  # no chunk and no legacy cookie is ever forwarded
    assert seen.set_cookies == [LEGACY_EXPIRED]


def test_the_victims_session_reaches_the_backend_untouched(
    browser: Browser, victim: dict[int, str]
) -> None:
    seen = browser.get("/page", f"session.0={victim[0]}")
    assert (seen.status, seen.session, seen.migrated) == ("valid", VICTIM, None)
    assert seen.set_cookies == []


def test_a_tossed_chunk_0_and_legacy_cookie_never_fix_the_attackers_session(
    browser: Browser, victim: dict[int, str], attacker: str
) -> None:
    # The attack exactly as found: junk chunk 0 first, the attacker's legacy cookie, then the
    # victim's own chunk 0.
    cookie = f"session.0=junk; session={attacker}; session.0={victim[0]}"
    assert_locked_out_not_fixed(browser.get("/page", cookie))


@pytest.mark.parametrize(
    "template",
    [
        "session.0={v0}; session.0=junk; session={attacker}",
        "session={attacker}; session.0={v0}; session.0=junk",
        "session.0={v0}; session={attacker}; session.0=junk; session.0={v0}",
        # The deleted-session marker counts as "no session" only when it is the only chunk 0.
        "session.0=; session={attacker}; session.0={v0}",
        # A two-chunk session with a tossed chunk 1.
        "session.0={b0}; session.1=junk; session={attacker}; session.1={b1}",
        # A one-chunk session ignores a stray session.1, but two different ones are a
        # conflict all the same: any index, one rule.
        "session.0={v0}; session.1=a; session={attacker}; session.1=b",
    ],
    ids=[
        "victim-first",
        "legacy-first",
        "junk-between-two-victim-copies",
        "emptied-chunk-0",
        "chunk-1-of-two",
        "chunk-1-past-the-count",
    ],
)
def test_every_conflicting_chunk_is_a_lockout_never_a_fixation(
    browser: Browser,
    victim: dict[int, str],
    big_victim: dict[int, str],
    attacker: str,
    template: str,
) -> None:
    cookie = template.format(v0=victim[0], b0=big_victim[0], b1=big_victim[1], attacker=attacker)
    assert_locked_out_not_fixed(browser.get("/page", cookie))


def test_a_lone_stray_chunk_beside_the_victims_session_changes_nothing(
    browser: Browser, victim: dict[int, str], attacker: str
) -> None:
    seen = browser.get("/page", f"session.1=junk; session={attacker}; session.0={victim[0]}")
    assert (seen.status, seen.session, seen.migrated) == ("valid", VICTIM, None)
    assert seen.set_cookies == [LEGACY_EXPIRED]


def test_the_same_chunk_value_twice_is_one_cookie_not_a_conflict(
    browser: Browser, victim: dict[int, str], attacker: str
) -> None:
    cookie = f"session.0={victim[0]}; session={attacker}; session.0={victim[0]}"
    seen = browser.get("/page", cookie)
    assert (seen.status, seen.session, seen.migrated) == ("valid", VICTIM, None)
    assert seen.set_cookies == [LEGACY_EXPIRED]


@pytest.mark.parametrize(
    ("emptied", "written"),
    [
        ("session.0=", ["session.0 live", "session expired"]),
        ("session.0=; session.1=", ["session.0 live", "session.1 expired", "session expired"]),
    ],
    ids=["chunk-0-alone", "both-chunks-of-a-deleted-two-chunk-session"],
)
def test_emptied_chunks_count_as_no_session_and_the_users_legacy_one_migrates(
    browser: Browser, emptied: str, written: list[str]
) -> None:
    # A client that keeps expired cookies still sends the emptied chunks the proxy wrote at
    # logout: the deleted-session marker, no session of the proxy's own.
    seen = browser.get("/page", f"{emptied}; session={legacy_cookie(VICTIM)}")
    assert (seen.status, seen.session, seen.migrated) == ("valid", VICTIM, "flask")
    assert seen.written == written
    assert seen.set_cookies[-1] == LEGACY_EXPIRED


def test_a_proxy_chunk_with_a_value_beside_an_emptied_chunk_0_blocks_migration(
    browser: Browser, attacker: str
) -> None:
    seen = browser.get("/page", f"session.0=; session.1=junk; session={attacker}")
    assert (seen.status, seen.session, seen.migrated) == ("absent", {}, None)
    assert seen.set_cookies == [LEGACY_EXPIRED]
