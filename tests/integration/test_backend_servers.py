"""Real backend servers behind the real proxy: where each one's header limit lies, what a client
sees past it, and that docs/backends.md's setting makes a 40 KB session work both ways.

Each server is started once at its defaults and once with the documented setting (the same
command for the servers that have none), each behind its own proxy. Sessions are minted with
the proxy's codec, so a probe is one request (see backend_servers/session_probe.py); the limit
is found with coarse steps and then bisected to the byte.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final, get_args

import pytest

from tests.integration.backend_servers.servers import (
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
from tests.integration.log_watch import WATCH
from tests.integration.sidecar import RunningProxy, base_config

pytestmark = pytest.mark.integration

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


def test_documented_setting_reads_a_40_kb_session(documented: Fronted) -> None:
    session = realistic_session(SESSION_40KB)
    WATCH.sensitive(session)
    status, _, body, _ = documented.get("/whoami", session)
    assert status == 200
    seen = json.loads(body)
    assert (seen["status"], seen["session_raw"]) == ("valid", session)


def test_documented_setting_writes_a_40_kb_session(documented: Fronted) -> None:
    status, _, body, cookies = documented.get("/session/grow?kb=40")
    assert status == 200
    written = json.loads(body)["bytes"]
    assert written >= SESSION_40KB
    jar = "; ".join(c.split(";")[0] for c in cookies if c.startswith("session."))
    assert jar
    reply = get(documented.proxy.port, "/whoami", jar)
    assert reply[0] == 200
    seen = json.loads(reply[2])
    assert seen["status"] == "valid"
    assert len(seen["session_raw"]) == written
    assert len(json.loads(seen["session_raw"])["blob"]) == 40 * KIB


@pytest.mark.parametrize("at_default", ["nginx-php-fpm"], indirect=True)
def test_nginx_default_fastcgi_buffer_refuses_a_40_kb_set_session(at_default: Fronted) -> None:
    status, _, body, cookies = at_default.get("/session/grow?kb=40")
    assert status == 502
    assert b"nginx" in body
    assert cookies == []
    assert "upstream sent too big header" in at_default.server.output()
