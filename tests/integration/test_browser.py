"""A real browser keeps a chunked session: headless Chromium, its own cookie jar, the proxy.

The page is a backend URL served through the proxy; the tests drive it with same-origin
``fetch()`` from inside that page, so Chromium itself stores every ``Set-Cookie`` (and obeys
``Max-Age=0``) and chooses what to send back. Playwright only watches: it reads the jar, the
``Set-Cookie`` headers the browser received and the ``Cookie`` header it sent.

A missing Chromium or Playwright is a failure, never a skip: ``make deps`` installs Chromium
and ``make venv`` the Python package.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest

from tests.integration.backends import RunningBackend, start_backend
from tests.integration.sidecar import RunningProxy, base_config, start_proxy

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Cookie, Page, Playwright

pytestmark = [pytest.mark.integration, pytest.mark.system]

CHROMIUM: Final = Path("/usr/bin/chromium")
CHROMIUM_ARGS: Final = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
#: Playwright waits at most this long (ms) for a navigation, a fetch or a response.
BROWSER_TIMEOUT_MS: Final = 15_000

SESSION_COOKIE: Final = "session"
CHUNK_SIZE: Final = 4000
MAX_CHUNKS: Final = 12
MAX_AGE_SECONDS: Final = 14 * 24 * 3600
#: Six steps of 6 KB of random base64 make a session of about 36 KB: ten chunks of twelve.
GROW_STEPS: Final = 6
GROW_KB: Final = 6
#: The session a test shrinks or clears is at least this many chunks.
LARGE_SESSION_KB: Final = 32
MIN_LARGE_CHUNKS: Final = 8

_FETCH_JS: Final = """async ([method, path, body]) => {
    const init = {method, credentials: "same-origin", cache: "no-store"};
    if (body !== null) {
        init.body = body;
        init.headers = {"Content-Type": "application/json"};
    }
    const response = await fetch(path, init);
    return {status: response.status, text: await response.text()};
}"""


# --- what the browser received and sent ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetCookie:
    """One ``Set-Cookie`` header the browser received."""

    name: str
    value: str
    #: Attributes by lower-case name (``httponly`` -> ``""``).
    attributes: dict[str, str]

    @property
    def expired(self) -> bool:
        return self.attributes.get("max-age") == "0"


def parse_set_cookie(raw: str) -> SetCookie:
    pair, *attrs = raw.split(";")
    name, _, value = pair.strip().partition("=")
    attributes = {}
    for attr in attrs:
        key, _, attr_value = attr.strip().partition("=")
        attributes[key.lower()] = attr_value
    return SetCookie(name, value, attributes)


@dataclass(frozen=True, slots=True)
class Exchange:
    """One ``fetch()`` from the page, as the browser saw it."""

    status: int
    body: Any
    #: The session chunk cookies among the response's ``Set-Cookie`` headers, in order.
    set_cookies: tuple[SetCookie, ...]
    #: Names of the session chunk cookies in the request's ``Cookie`` header, in order.
    sent_chunks: tuple[str, ...]

    @property
    def live(self) -> list[SetCookie]:
        return [c for c in self.set_cookies if not c.expired]

    @property
    def expired(self) -> list[SetCookie]:
        return [c for c in self.set_cookies if c.expired]


def chunk_names(count: int) -> list[str]:
    return [f"{SESSION_COOKIE}.{i}" for i in range(count)]


def is_chunk_name(name: str) -> bool:
    prefix, dot, index = name.partition(".")
    return prefix == SESSION_COOKIE and dot == "." and index.isdigit()


def token_chunk_count(chunk_0: str) -> int:
    """The chunk count the signed token claims: ``S1.<n>.`` opens chunk 0."""
    mode, count, _ = chunk_0.split(".", 2)
    assert mode == "S1", f"chunk 0 does not open a signed token: {chunk_0[:8]!r}"
    return int(count)


class BrowserTab:
    """A page at the proxy's origin, in a fresh browser context (an empty cookie jar)."""

    def __init__(self, context: BrowserContext, page: Page, base_url: str) -> None:
        self.context = context
        self.page = page
        self.base_url = base_url

    def fetch(self, method: str, path: str, body: object = None) -> Exchange:
        url = self.base_url + path
        payload = None if body is None else json.dumps(body)
        with self.page.expect_response(lambda r: r.url == url) as seen:
            result = self.page.evaluate(_FETCH_JS, [method, path, payload])
        response = seen.value
        set_cookies = tuple(
            parse_set_cookie(header["value"])
            for header in response.headers_array()
            if header["name"].lower() == "set-cookie"
        )
        cookie_header = response.request.all_headers().get("cookie", "")
        sent = tuple(
            name
            for name, _, _ in (pair.strip().partition("=") for pair in cookie_header.split(";"))
            if is_chunk_name(name)
        )
        text = result["text"]
        return Exchange(
            status=result["status"],
            body=json.loads(text) if text else None,
            set_cookies=tuple(c for c in set_cookies if is_chunk_name(c.name)),
            sent_chunks=sent,
        )

    def whoami(self) -> Exchange:
        who = self.fetch("GET", "/whoami")
        assert who.status == 200, who.body
        return who

    def session_jar(self) -> dict[str, Cookie]:
        """The session chunk cookies in the browser's jar for this origin, by name."""
        jar = self.context.cookies(self.base_url)
        return {c["name"]: c for c in jar if is_chunk_name(c["name"])}

    def session_jar_names(self) -> list[str]:
        return sorted(self.session_jar(), key=lambda name: int(name.partition(".")[2]))

    def document_cookie(self) -> str:
        cookie: str = self.page.evaluate("document.cookie")
        return cookie

    def grow(self, kb: int, key: str) -> Exchange:
        grown = self.fetch("GET", f"/session/grow?kb={kb}&key={key}")
        assert grown.status == 200, grown.body
        return grown


def assert_jar_holds_exactly(tab: BrowserTab, live: list[SetCookie]) -> None:
    """The jar holds these chunks, with these values, as HttpOnly cookies a script cannot see."""
    jar = tab.session_jar()
    assert tab.session_jar_names() == [c.name for c in live]
    assert {name: c["value"] for name, c in jar.items()} == {c.name: c.value for c in live}
    now = time.time()
    for name, cookie in jar.items():
        assert len(name) + 1 + len(cookie["value"]) <= CHUNK_SIZE
        assert cookie["httpOnly"], f"{name} is not HttpOnly"
        assert not cookie["secure"]
        assert cookie["sameSite"] == "Lax"
        assert cookie["path"] == "/"
        assert cookie["domain"] == "127.0.0.1"
        assert abs(cookie["expires"] - (now + MAX_AGE_SECONDS)) < 120, "Max-Age is not 14 days"
    assert tab.document_cookie() == "", "a session chunk is visible to scripts"


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def backend() -> Iterator[RunningBackend]:
    with start_backend("python") as running:
        yield running


@pytest.fixture(scope="module")
def proxy(backend: RunningBackend) -> Iterator[RunningProxy]:
    cookie = {"secure": False, "chunk_size": CHUNK_SIZE, "max_chunks": MAX_CHUNKS}
    with start_proxy(base_config(backend.url, cookie=cookie)) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as exc:
        pytest.fail(
            f"CHROMIUM DID NOT RUN: the playwright Python package is missing ({exc}). "
            "`make venv` installs it from the test extras and `make deps` installs Chromium; "
            "this test fails rather than skips, so a run without a browser never passes.",
            pytrace=False,
        )
    if not CHROMIUM.is_file():
        pytest.fail(
            f"CHROMIUM DID NOT RUN: {CHROMIUM} is missing. `make deps` installs it (Debian "
            "package chromium); this test fails rather than skips, so a run without a browser "
            "never passes.",
            pytrace=False,
        )
    playwright: Playwright = sync_playwright().start()
    try:
        try:
            launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        except Error as exc:
            pytest.fail(
                f"CHROMIUM DID NOT RUN: {CHROMIUM} would not start under Playwright: {exc}. "
                "`make deps` installs it.",
                pytrace=False,
            )
        yield launched
        launched.close()
    finally:
        playwright.stop()


@pytest.fixture
def tab(browser: Browser, proxy: RunningProxy) -> Iterator[BrowserTab]:
    context = browser.new_context()
    context.set_default_timeout(BROWSER_TIMEOUT_MS)
    try:
        page = context.new_page()
        landing = page.goto(proxy.url + "/")
        assert landing is not None and landing.ok, "the proxy did not serve the landing page"
        yield BrowserTab(context, page, proxy.url)
    finally:
        context.close()


# --- tests --------------------------------------------------------------------------------------


def test_growing_session_is_kept_in_exactly_the_chunks_the_proxy_set(tab: BrowserTab) -> None:
    expected: dict[str, str] = {}
    counts: list[int] = []
    for step in range(1, GROW_STEPS + 1):
        key = f"k{step}"
        grown = tab.grow(GROW_KB, key)
        assert grown.expired == [], "a growing session expired a chunk"
        count = len(grown.live)
        assert [c.name for c in grown.live] == chunk_names(count)
        assert token_chunk_count(grown.live[0].value) == count
        assert_jar_holds_exactly(tab, grown.live)

        who = tab.whoami()
        assert who.body["status"] == "valid"
        assert sorted(who.sent_chunks) == sorted(chunk_names(count)), "a chunk was not sent"
        assert who.set_cookies == (), "a plain read rewrote the session"
        assert who.body["cookie"] is None, "the backend saw the chunk cookies"
        session = who.body["session"]
        assert sorted(session) == sorted([*expected, key])
        assert {k: session[k] for k in expected} == expected, "an earlier key changed"
        assert len(session[key]) == GROW_KB * 1024
        expected[key] = session[key]
        counts.append(count)
    assert counts == sorted(set(counts)), f"the chunk count did not grow at every step: {counts}"
    assert counts[-1] >= MIN_LARGE_CHUNKS, f"only {counts[-1]} chunks at the end"


def test_shrinking_session_leaves_only_chunk_0_in_the_browser(tab: BrowserTab) -> None:
    large = tab.grow(LARGE_SESSION_KB, "big")
    count = len(large.live)
    assert count >= MIN_LARGE_CHUNKS
    small = {"user": "alice", "roles": ["reader"]}

    shrunk = tab.fetch("POST", "/session", small)

    assert shrunk.status == 200
    assert [c.name for c in shrunk.live] == ["session.0"]
    assert [c.name for c in shrunk.expired] == chunk_names(count)[1:]
    assert all(c.value == "" for c in shrunk.expired), "an expired chunk kept its value"
    assert_jar_holds_exactly(tab, shrunk.live)
    who = tab.whoami()
    assert who.sent_chunks == ("session.0",)
    assert (who.body["status"], who.body["session"]) == ("valid", small)


def test_cleared_session_leaves_no_session_cookie_in_the_browser(
    tab: BrowserTab, tmp_path: Path
) -> None:
    large = tab.grow(LARGE_SESSION_KB, "big")
    count = len(large.live)

    cleared = tab.fetch("POST", "/session/clear")

    assert cleared.status == 200
    assert cleared.live == []
    assert [c.name for c in cleared.expired] == chunk_names(count)
    assert tab.session_jar_names() == []
    who = tab.whoami()
    assert who.sent_chunks == ()
    assert (who.body["status"], who.body["session"]) == ("absent", {})

    page = tab.page
    page.goto(tab.base_url + "/whoami")
    rendered = json.loads(page.inner_text("body"))
    assert (rendered["status"], rendered["session"]) == ("absent", {})
    screenshot = tmp_path / "whoami.png"
    page.screenshot(path=screenshot)
    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_tampered_chunk_in_the_browser_invalidates_the_whole_session(tab: BrowserTab) -> None:
    grown = tab.grow(10, "secret")
    count = len(grown.live)
    assert count >= 3
    original = tab.session_jar()["session.1"]
    middle = len(original["value"]) // 2
    flipped = "B" if original["value"][middle] == "A" else "A"
    tampered = original["value"][:middle] + flipped + original["value"][middle + 1 :]
    tab.context.add_cookies(
        [
            {
                "name": "session.1",
                "value": tampered,
                "domain": original["domain"],
                "path": original["path"],
                "expires": original["expires"],
                "httpOnly": True,
                "secure": False,
                "sameSite": "Lax",
            }
        ]
    )
    assert tab.session_jar_names() == chunk_names(count), "the edit added a cookie"
    assert tab.session_jar()["session.1"]["value"] == tampered

    who = tab.whoami()
    assert sorted(who.sent_chunks) == sorted(chunk_names(count))
    assert (who.body["status"], who.body["session"]) == ("invalid", {})
    assert who.set_cookies == (), "a read of an invalid session wrote cookies"

    merged = tab.fetch("POST", "/session/merge", {"after": "tamper"})
    assert merged.body == {"after": "tamper"}, "something of the tampered session was accepted"
    assert [c.name for c in merged.expired] == chunk_names(count)[1:]
    assert_jar_holds_exactly(tab, merged.live)
    after = tab.whoami()
    assert (after.body["status"], after.body["session"]) == ("valid", {"after": "tamper"})


def test_a_host_prefixed_session_is_stored_and_sent_back_whole(
    browser: Browser, backend: RunningBackend
) -> None:
    # Issue 14 finding 10: a __Host- name (Secure, host-only, Path=/, as check-config demands)
    # works end to end. Chromium counts http://127.0.0.1 as a secure origin, so it keeps
    # Secure cookies here without TLS.
    name = "__Host-session"
    cookie = {"name": name, "secure": True, "chunk_size": CHUNK_SIZE}
    with start_proxy(base_config(backend.url, cookie=cookie)) as proxy:
        context = browser.new_context()
        context.set_default_timeout(BROWSER_TIMEOUT_MS)
        try:
            page = context.new_page()
            assert (landing := page.goto(proxy.url + "/")) is not None and landing.ok
            tab = BrowserTab(context, page, proxy.url)
            grown = tab.grow(GROW_KB, "a")  # over 8 KB of session: more than one chunk
            jar = context.cookies(proxy.url)
            assert len(jar) >= 2
            assert sorted(c["name"] for c in jar) == [f"{name}.{i}" for i in range(len(jar))]
            for stored in jar:
                assert (stored["secure"], stored["domain"], stored["path"]) == (
                    True,
                    "127.0.0.1",
                    "/",
                )
            who = tab.whoami()
            assert who.body["status"] == "valid"
            assert len(who.body["session_raw"]) == grown.body["bytes"]
        finally:
            context.close()
