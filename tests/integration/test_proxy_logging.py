"""Nothing secret reaches the proxy's output, even at DEBUG level and on every error path.

The module-wide check in conftest.py then reads the whole output of this proxy for the
secrets, every cookie value and every session marker registered below.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from tests.integration.backends import RunningBackend, free_port, start_backend
from tests.integration.log_watch import WATCH
from tests.integration.proxy_client import CookieClient, RawConnection
from tests.integration.sidecar import SECRET_1, RunningProxy, base_config

pytestmark = pytest.mark.integration

MARKER = "confidential-session-marker-4f1c9a"
HEADER_MARKER = "broken-header-marker-77ad02"
RELOAD_SECRET = "short-reload-secret-9e41"


@pytest.fixture(scope="module")
def backend() -> Iterator[RunningBackend]:
    with start_backend("python") as running:
        yield running


@pytest.fixture(scope="module")
def proxy(backend: RunningBackend) -> Iterator[RunningProxy]:
    config = base_config(
        backend.url,
        log_format="json",
        upstreams=[
            {"url": backend.url, "name": "app", "timeout": 5},
            {"url": f"http://127.0.0.1:{free_port()}", "name": "dead", "path_prefix": "/dead"},
        ],
    )
    for value in (MARKER, HEADER_MARKER, RELOAD_SECRET):
        WATCH.sensitive(value)
    with WATCH.start_proxy(config, env={"SESSION_SIDECAR_LOG_LEVEL": "DEBUG"}) as running:
        yield running


def remember_cookies(client: CookieClient) -> None:
    for value in client.cookies.values():
        WATCH.sensitive(value)


def test_debug_output_holds_no_secret_cookie_or_session_on_any_path(proxy: RunningProxy) -> None:
    with CookieClient(proxy.url) as client:
        client.set_session({"user": MARKER})
        remember_cookies(client)
        assert client.whoami()["session"] == {"user": MARKER}
        # A tampered chunk: invalid, and the reason is logged without the value.
        client.cookies["session.0"] = client.cookies["session.0"][:-4] + "AAAA"
        assert client.whoami()["status"] == "invalid"
        # Broken and oversized X-Set-Session values.
        broken = client.get(f"/raw-set-session?value={quote('{' + HEADER_MARKER)}")
        assert broken.status == 502
        big = client.get(f"/session/grow?kb=200&key={MARKER}")
        assert big.status in (431, 502)
        # A dead upstream.
        assert client.get("/dead/x").status == 502
    # An oversized request header carrying a cookie value.
    with RawConnection(proxy.port) as connection:
        connection.send(
            "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Cookie: session.0={MARKER}{'x' * 200_000}\r\n\r\n"
        )
        assert connection.read_response().status == 431
    # A reload whose new configuration has a secret that is too short.
    config = base_config("http://127.0.0.1:1", secrets=[RELOAD_SECRET])
    proxy.rewrite_config(config)
    proxy.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reload refused" not in proxy.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    output = proxy.output()
    assert "reload refused" in output
    assert '"level":"debug"' in output  # the level really was DEBUG
    assert "session invalid: bad signature" in output
    for value in (SECRET_1, RELOAD_SECRET, MARKER, HEADER_MARKER):
        assert value not in output
