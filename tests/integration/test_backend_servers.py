"""Real backend servers behind the real proxy: where each one's header limit lies, what a client
sees past it, and that docs/backends.md's setting makes a 40 KB session work both ways.

Each server is started once at its defaults and once with the documented setting (the same
command for the servers that have none), each behind its own proxy. Sessions are minted with
the proxy's codec, so a probe is one request (see backend_servers/session_probe.py); the limit
is found with coarse steps and then bisected to the byte.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final, get_args

import pytest

from tests.integration.backend_servers.servers import (
    HEADER_ROOM,
    NGINX_DOCUMENTED,
    RunningServer,
    ServerKind,
    start_server,
)
from tests.integration.backend_servers.session_probe import (
    Outcome,
    cookie_header,
    first_failure,
    get,
    probe,
)
from tests.integration.backends import REPO_ROOT
from tests.integration.log_watch import WATCH
from tests.integration.sidecar import RunningProxy, base_config

pytestmark = [pytest.mark.integration, pytest.mark.system]

KIB: Final = 1024
#: Coarse steps of the probe, then bisection to the byte between the last two.
STEPS: Final = tuple(
    k * KIB for k in (4, 8, 12, 16, 24, 32, 48, 64, 72, 80, 96, 112, 128, 192, 256, 320, 512, 1536)
)
#: The session the documented settings must carry both ways.
SESSION_40KB: Final = 40 * KIB

ALL_KINDS: Final[tuple[ServerKind, ...]] = get_args(ServerKind)


@dataclass(frozen=True, slots=True)
class Limit:
    """The first session size (bytes of X-Session) that fails lies in [low, high]."""

    low: int
    high: int
    #: The status the client gets past it.
    status: int


#: At the server's defaults, behind the proxy on loopback. None: no limit up to 1.5 MiB.
DEFAULT_LIMITS: Final[dict[ServerKind, Limit | None]] = {
    "gunicorn": Limit(8_100, 8_190, 431),  # limit_request_field_size 8190, per field line
    "gunicorn-uvicorn": None,  # the uvicorn worker parses with httptools; gunicorn's limits unused
    # h11 checks its 16 KiB only while a head is incomplete; on loopback the proxy's head
    # usually arrives in one read, so the limit seen here is far above 16 KiB (see below).
    "uvicorn-h11": Limit(15_000, 300_000, 400),
    "uvicorn-httptools": None,
    "hypercorn": Limit(15_000, 66_000, 431),  # h11 too, fed 64 KiB reads
    "django-runserver": Limit(65_000, 65_536, 431),  # http.client's 65536-byte line
    "node": Limit(16_000, 16_384, 431),  # 16 KiB of headers in all
    "go": Limit(1 << 20, (1 << 20) + 20_000, 431),  # MaxHeaderBytes 1 MiB plus bufio slack
    "nginx-php-fpm": Limit(8_000, 8_192, 400),  # large_client_header_buffers 4 8k
    # The built-in server closes without an answer: the proxy's own 502.
    "php-cli-server": Limit(80_000, 82_000, 502),
    "puma": Limit(81_000, 82_000, 400),  # FIELD_VALUE 80 * 1024, compiled in
    "webrick": Limit(114_000, 114_688, 413),  # MAX_HEADER_LENGTH 112 KiB, request line included
}

#: With docs/backends.md's setting, for the servers that have one.
DOCUMENTED_LIMITS: Final[dict[ServerKind, Limit]] = {
    "gunicorn": Limit(299_000, 300_000, 431),
    "node": Limit(299_000, 300_000, 431),
    "uvicorn-h11": Limit(299_000, 1_600_000, 400),
    "hypercorn": Limit(299_000, 1_600_000, 431),
    # FastCGI: PHP-FPM resets a request whose parameters come near one 64 KiB record, and
    # nginx refuses to build a record over 65535 bytes (500), whatever its buffers hold.
    "nginx-php-fpm": Limit(60_000, 65_535, 502),
}


@dataclass(frozen=True, slots=True)
class Fronted:
    """A backend server and the proxy in front of it."""

    server: RunningServer
    proxy: RunningProxy

    def probe(self, size: int, path: str = "/whoami") -> Outcome:
        return probe(self.proxy.port, self.proxy.config_path, size, path)

    def get(self, path: str, session: str | None = None) -> tuple[int, str, bytes, list[str]]:
        cookie = cookie_header(self.proxy.config_path, session) if session else None
        return get(self.proxy.port, path, cookie)


def probe_config(server: RunningServer, **upstream: Any) -> dict[str, Any]:
    """The test proxy, able to send sessions past every server's limit (up to 2 MiB)."""
    config = base_config(
        server.url,
        session={"max_json_bytes": 2 << 20},
        limits={"max_header_bytes": 4 << 20},
    )
    config["upstreams"][0].update(upstream)
    return config


@pytest.fixture(scope="module")
def measured() -> Iterator[dict[str, str]]:
    """Every figure this module measured, printed at its end (``pytest -s``) for the docs."""
    figures: dict[str, str] = {}
    yield figures
    for name, figure in sorted(figures.items()):
        print(f"MEASURED {name}: {figure}")


@pytest.fixture(scope="module", params=ALL_KINDS)
def at_default(request: pytest.FixtureRequest) -> Iterator[Fronted]:
    with (
        start_server(request.param) as server,
        WATCH.start_proxy(probe_config(server)) as proxy,
    ):
        yield Fronted(server, proxy)


@pytest.fixture(scope="module", params=ALL_KINDS)
def documented(request: pytest.FixtureRequest) -> Iterator[Fronted]:
    with (
        start_server(request.param, documented=True) as server,
        WATCH.start_proxy(probe_config(server)) as proxy,
    ):
        yield Fronted(server, proxy)


def assert_limit(
    fronted: Fronted, expected: Limit | None, measured: dict[str, str], name: str
) -> None:
    failed = first_failure(fronted.proxy.port, fronted.proxy.config_path, STEPS)
    measured[name] = "none up to 1.5 MiB" if failed is None else f"{failed.size} {failed.summary()}"
    if expected is None:
        assert failed is None
        return
    assert failed is not None
    assert expected.low <= failed.size <= expected.high
    assert failed.status == expected.status
    # Quoting the session back would show an encrypted session in plain text.
    assert not failed.echoes_session


# --- where the limits lie ---------------------------------------------------------------------


def test_default_limit_lies_where_docs_say(at_default: Fronted, measured: dict[str, str]) -> None:
    kind = at_default.server.kind
    assert_limit(at_default, DEFAULT_LIMITS[kind], measured, f"{kind} default")


def test_documented_setting_moves_the_limit(documented: Fronted, measured: dict[str, str]) -> None:
    kind = documented.server.kind
    if kind not in DOCUMENTED_LIMITS:
        # No setting to give (or none needed): the same server as at its defaults.
        assert_limit(documented, DEFAULT_LIMITS[kind], measured, f"{kind} documented")
        return
    assert_limit(documented, DOCUMENTED_LIMITS[kind], measured, f"{kind} documented")


def test_gunicorn_limit_zero_is_not_unlimited(measured: dict[str, str]) -> None:
    """gunicorn's own help says 0 allows unlimited fields; its parser falls back to 8190."""
    extra = ["--limit-request-field_size", "0"]
    with (
        start_server("gunicorn", extra=extra) as server,
        WATCH.start_proxy(probe_config(server)) as proxy,
    ):
        assert_limit(Fronted(server, proxy), DEFAULT_LIMITS["gunicorn"], measured, "gunicorn 0")


@pytest.mark.parametrize("documented", ["nginx-php-fpm"], indirect=True)
def test_nginx_past_one_fastcgi_record_is_a_500(documented: Fronted) -> None:
    outcome = documented.probe(70_000)
    assert outcome.status == 500
    assert "fastcgi request record is too big" in documented.server.output()


# --- a 40 KB session with the documented setting ----------------------------------------------


def realistic_session(size: int) -> str:
    """Compact ASCII session JSON of ``size`` bytes with nested objects, escapes and noise."""
    base: dict[str, Any] = {
        "user": {"id": 12345678901, "name": "Zo\u00eb \u20ac", "roles": ["a", "b"]},
        "prefs": {},
        "cart": [],
        "flags": {"beta": True, "ratio": 0.25, "none": None},
        "noise": "",
    }
    frame = len(json.dumps(base, separators=(",", ":")))
    base["noise"] = os.urandom(size).hex()[: size - frame]
    encoded = json.dumps(base, separators=(",", ":"))
    assert len(encoded) == size
    return encoded


def session_cookies(set_cookies: list[str]) -> str:
    """The Cookie header a browser sends back after these Set-Cookie values (live chunks)."""
    pairs = [c.split(";")[0] for c in set_cookies if c.startswith("session.")]
    return "; ".join(p for p in pairs if not p.endswith("="))


def session_after(fronted: Fronted, path: str, session: str | None = None) -> Any:
    """Call ``path``, then read back (as JSON) the session its Set-Cookies hold."""
    status, _, _, cookies = fronted.get(path, session)
    assert status == 200
    reply = get(fronted.proxy.port, "/whoami", session_cookies(cookies))
    seen = json.loads(reply[2])
    assert seen["status"] == "valid"
    return json.loads(seen["session_raw"])


def test_documented_setting_reads_a_40_kb_session(documented: Fronted) -> None:
    session = realistic_session(SESSION_40KB)
    WATCH.sensitive(session)
    status, _, body, _ = documented.get("/whoami", session)
    assert status == 200
    seen = json.loads(body)
    assert (seen["status"], seen["session_raw"]) == ("valid", session)


def test_documented_setting_writes_a_40_kb_session(documented: Fronted) -> None:
    session = session_after(documented, "/session/grow?kb=40")
    assert len(session["blob"]) == SESSION_40KB  # the whole X-Set-Session came through


@pytest.mark.parametrize("at_default", ["nginx-php-fpm"], indirect=True)
def test_nginx_default_fastcgi_buffer_refuses_a_40_kb_set_session(at_default: Fronted) -> None:
    status, _, body, cookies = at_default.get("/session/grow?kb=40")
    assert status == 502
    assert b"nginx" in body
    assert cookies == []
    assert "upstream sent too big header" in at_default.server.output()


# --- h11 counts only what has not been parsed yet ----------------------------------------------


def head_status(
    port: int, session_bytes: int, split_at: int | None = None, pause: float = 0.0
) -> int:
    """The status for a GET whose X-Session is ``session_bytes`` long, sent whole or in two.

    Split, the first ``split_at`` bytes go alone, and the rest only after ``pause`` seconds
    without an answer: a server that refuses the first part answers within that pause, so a
    long pause keeps a slow machine from reading both parts at once.
    """
    head = b"GET /whoami HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Session: "
    head += b"x" * session_bytes + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        if split_at is None:
            connection.sendall(head)
        else:
            connection.sendall(head[:split_at])
            connection.settimeout(pause)
            try:
                answer = connection.recv(64)
            except TimeoutError:
                connection.settimeout(10)
                connection.sendall(head[split_at:])
                answer = connection.recv(64)
            if not answer:
                raise AssertionError("the server closed the connection without an answer")
            return int(answer.split(b"\r\n")[0].split()[1])
        status_line = connection.recv(64).split(b"\r\n")[0]
    return int(status_line.split()[1])


H11_SERVERS: Final = ["uvicorn-h11", "hypercorn"]


@pytest.mark.parametrize("at_default", H11_SERVERS, indirect=True)
def test_h11_default_refuses_a_40_kb_head_only_when_it_arrives_in_pieces(
    at_default: Fronted,
) -> None:
    port = at_default.server.port
    assert head_status(port, SESSION_40KB) == 200
    assert head_status(port, SESSION_40KB, split_at=20_000, pause=10) in (400, 431)
    assert head_status(port, 20_000, split_at=17_000, pause=10) in (400, 431)


@pytest.mark.parametrize("documented", H11_SERVERS, indirect=True)
def test_h11_documented_setting_takes_a_40_kb_head_in_pieces(documented: Fronted) -> None:
    assert head_status(documented.server.port, SESSION_40KB, split_at=20_000, pause=1) == 200


# --- PHP: the snippet in docs/backends.md -----------------------------------------------------

PHP_SERVERS: Final = ["nginx-php-fpm", "php-cli-server"]
NESTED: Final = '{"prefs":{},"cart":[],"n":{"deep":{}}}'


@pytest.mark.parametrize("documented", PHP_SERVERS, indirect=True)
def test_php_snippet_keeps_an_empty_nested_object(documented: Fronted) -> None:
    session = session_after(documented, "/touch", NESTED)
    assert session == {"prefs": {}, "cart": [], "n": {"deep": {}}, "user": "alice"}


@pytest.mark.parametrize("documented", PHP_SERVERS, indirect=True)
def test_php_snippet_starts_an_empty_session_as_an_object(documented: Fronted) -> None:
    assert session_after(documented, "/touch") == {"user": "alice"}


@pytest.mark.parametrize("documented", PHP_SERVERS, indirect=True)
def test_the_old_assoc_array_php_snippet_turned_nested_objects_into_arrays(
    documented: Fronted,
) -> None:
    session = session_after(documented, "/touch-assoc", NESTED)
    assert session == {"prefs": [], "cart": [], "n": {"deep": []}, "user": "alice"}


# --- non-Latin-1 text in X-Set-Session --------------------------------------------------------


@pytest.mark.parametrize("at_default", ["django-runserver"], indirect=True)
def test_django_mime_encodes_raw_unicode_json_and_the_proxy_refuses_it(
    at_default: Fronted,
) -> None:
    direct = http.client.HTTPConnection("127.0.0.1", at_default.server.port, timeout=10)
    direct.request("GET", "/unicode?ascii=0")
    value = direct.getresponse().headers["X-Set-Session"]
    direct.close()
    assert value.startswith("=?utf-8?b?")  # RFC 2047 encoded-word, not JSON
    status, _, body, cookies = at_default.get("/unicode?ascii=0")
    assert (status, json.loads(body)) == (502, {"error": "invalid_session_header"})
    assert cookies == []


@pytest.mark.parametrize("at_default", ["django-runserver", "gunicorn"], indirect=True)
def test_ascii_json_with_u_escapes_round_trips_the_euro_sign(at_default: Fronted) -> None:
    assert session_after(at_default, "/unicode?ascii=1") == {"name": "\u20ac"}


@pytest.mark.parametrize("at_default", ["gunicorn"], indirect=True)
def test_a_wsgi_server_refuses_a_non_latin1_header_value(at_default: Fronted) -> None:
    status, _, body, cookies = at_default.get("/unicode?ascii=0")
    assert status == 500
    assert b"Internal Server Error" in body
    assert cookies == []
    assert "Invalid response header from the application" in at_default.server.output()


@pytest.mark.parametrize("at_default", ["uvicorn-h11", "hypercorn"], indirect=True)
def test_asgi_servers_send_the_apps_utf8_bytes_which_the_proxy_accepts(
    at_default: Fronted,
) -> None:
    assert session_after(at_default, "/unicode?ascii=0") == {"name": "\u20ac"}


# --- max_session_header_bytes: the proxy's JSON 431 instead of the server's own error ---------


def assert_proxy_answers_431(server: RunningServer, cap: int, size: int) -> None:
    """Behind ``max_session_header_bytes: cap``, ``size`` bytes get the proxy's JSON 431."""
    with WATCH.start_proxy(probe_config(server, max_session_header_bytes=cap)) as capped:
        outcome = probe(capped.port, capped.config_path, size)
        assert (outcome.status, json.loads(outcome.body)) == (
            431,
            {"error": "session_too_large_for_upstream", "bytes": size, "limit": cap},
        )
        assert probe(capped.port, capped.config_path, cap).status == 200


@pytest.mark.parametrize("at_default", ["gunicorn", "nginx-php-fpm"], indirect=True)
def test_max_session_header_bytes_answers_before_the_server_refuses(at_default: Fronted) -> None:
    assert at_default.probe(9_000).status in (400, 431)  # the server's own HTML error
    assert_proxy_answers_431(at_default.server, 8_000, 9_000)


@pytest.mark.parametrize("documented", ["nginx-php-fpm"], indirect=True)
def test_max_session_header_bytes_under_the_fastcgi_cap_replaces_nginx_errors(
    documented: Fronted,
) -> None:
    # PHP-FPM's reset (502) or, a few bytes further, nginx's record too big (500).
    assert documented.probe(65_000).status in (500, 502)
    assert_proxy_answers_431(documented.server, 60_000, 65_000)


# --- the docs give the settings these tests ran with -------------------------------------------


def test_docs_give_the_settings_the_servers_ran_with() -> None:
    docs = (REPO_ROOT / "docs" / "backends.md").read_text()
    settings = [
        f"--limit-request-field_size {HEADER_ROOM}",
        f"--h11-max-incomplete-event-size {HEADER_ROOM}",
        f"h11_max_incomplete_size = {HEADER_ROOM}",
        f"--max-http-header-size={HEADER_ROOM}",
        *(line.strip() for line in NGINX_DOCUMENTED.strip().splitlines()),
    ]
    assert [s for s in settings if s not in docs] == []
