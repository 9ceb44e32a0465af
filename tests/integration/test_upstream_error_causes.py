"""Each way an upstream fails is named: dns, refused, tls, timeout, reset, bad_response.

Every failure is caused for real, on loopback: a host name under ``.invalid`` (RFC 6761
section 6.4: it never resolves), a closed port, a TLS server whose certificate nobody trusts,
a backend that never answers, one that resets its connection, one that answers garbage. Each
test reads the cause in three places: the access line's ``upstream_error``, the
``kind`` label of ``session_sidecar_upstream_errors_total`` and a WARNING of the process log
that names the upstream. The request carries a real session; conftest.py then checks that no
cookie value reached the output.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.adversarial.recording_upstream import Connection, RecordingUpstream
from tests.adversarial.strict_http import Message
from tests.integration.admin_scrape import (
    access_line,
    admin_url,
    answers,
    process_lines,
    scrape,
    value,
    wait_for,
)
from tests.integration.backends import RunningBackend, free_port
from tests.integration.certificates import make_certificate
from tests.integration.log_watch import WATCH
from tests.integration.proxy_client import CookieClient, RawConnection
from tests.integration.scripted_backend import HANG_PATH, ScriptedBackend
from tests.integration.sidecar import RunningProxy, base_config

pytestmark = pytest.mark.integration

ERRORS = "session_sidecar_upstream_errors_total"
#: A status line that is no HTTP at all.
GARBAGE = b"SPDY/9 what-is-this\r\n\r\n"
#: A head that promises 100 000 bytes, then 100 of them before the reset.
PARTIAL = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"p" * 100


def misbehave(conn: Connection, request: Message, payload: dict[str, object]) -> bytes | None:
    """``/garbage`` answers no HTTP; ``/midreset`` resets after part of a body."""
    if request.target.startswith("/garbage"):
        return GARBAGE
    if request.target.startswith("/midreset"):
        conn.reset_now = True
        return PARTIAL
    return None


class UntrustedTlsServer:
    """A TLS server with a self-signed certificate: the proxy's verification must fail."""

    def __init__(self, directory: Path) -> None:
        cert, key = make_certificate(directory)
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert, key)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            conn.settimeout(5)
            try:
                with self._context.wrap_socket(conn, server_side=True):
                    pass
            except OSError:  # the client's "unknown CA" alert
                conn.close()

    def stop(self) -> None:
        self._listener.close()


@pytest.fixture(scope="module")
def failing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The failing upstreams' URLs by name."""
    tls = UntrustedTlsServer(tmp_path_factory.mktemp("untrusted"))
    with RecordingUpstream(misbehave) as recording, ScriptedBackend() as silent:
        yield {
            "dns": "http://nonexistent.invalid:8080",
            "refused": f"http://127.0.0.1:{free_port()}",
            "tls": f"https://127.0.0.1:{tls.port}",
            "timeout": silent.url,
            "reset": recording.url,
            "bad_response": recording.url,
        }
    tls.stop()


@pytest.fixture(scope="module")
def proxy(python_backend: RunningBackend, failing: dict[str, str]) -> Iterator[RunningProxy]:
    upstreams = [{"name": "app", "url": python_backend.url, "timeout": 5}]
    upstreams += [
        {
            "name": f"{cause}-up",
            "url": url,
            "path_prefix": f"/{cause}",
            "strip_prefix": True,
            "timeout": 0.5,
        }
        for cause, url in failing.items()
    ]
    config = base_config(
        python_backend.url, upstreams=upstreams, admin_listen="127.0.0.1:0", log_format="json"
    )
    with WATCH.start_proxy(config) as running:
        wait_for(lambda: answers(admin_url(running)))
        yield running


@pytest.fixture(scope="module")
def cookie(proxy: RunningProxy) -> str:
    """A real session's Cookie header, registered as a value the output must never show."""
    with CookieClient(proxy.url) as client:
        assert client.set_session({"user": "on-call-cause-test"}).status == 200
        for value_ in client.cookies.values():
            WATCH.sensitive(value_)
        header = client.cookie_header()
    assert header is not None
    return header


def fetch(proxy: RunningProxy, target: str, cookie: str, request_id: str) -> tuple[int, bytes]:
    """The status and whatever body arrived before the proxy ended the connection."""
    with RawConnection(proxy.port, timeout=10) as connection:
        connection.send(
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n"
            f"X-Request-Id: {request_id}\r\n\r\n"
        )
        reply = connection.read_response()
    return reply.status, reply.body


def assert_named_everywhere(
    proxy: RunningProxy, before: float, cause: str, upstream: str, request_id: str
) -> None:
    assert access_line(proxy, request_id)["upstream_error"] == cause
    wait_for(lambda: value(scrape(proxy), ERRORS, upstream=upstream, kind=cause) == before + 1)
    warnings = [e["message"] for e in process_lines(proxy, "warning") if request_id in e["message"]]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"upstream {upstream} at "), warnings[0]
    assert f" failed: {cause}" in warnings[0]


@pytest.mark.parametrize(
    ("cause", "target", "status", "error", "detail"),
    [
        ("dns", "/dns/x", 502, "upstream_unreachable", "name"),
        ("refused", "/refused/x", 502, "upstream_unreachable", "refused"),
        ("tls", "/tls/x", 502, "upstream_unreachable", "certificate verify failed"),
        ("timeout", f"/timeout{HANG_PATH}", 504, "upstream_timeout", "within 0.5s"),
        ("reset", "/reset/x?respond=reset", 502, "upstream_connection_failed", ""),
        ("bad_response", "/bad_response/garbage", 502, "upstream_bad_response", "BadStatusLine"),
    ],
)
def test_a_failed_upstream_names_its_cause_in_the_log_the_metrics_and_the_access_line(
    proxy: RunningProxy,
    cookie: str,
    cause: str,
    target: str,
    status: int,
    error: str,
    detail: str,
) -> None:
    upstream = f"{cause}-up"
    before = value(scrape(proxy), ERRORS, upstream=upstream, kind=cause)
    request_id = f"cause-{cause}"
    got_status, body = fetch(proxy, target, cookie, request_id)
    assert (got_status, body) == (status, b'{"error":"%s"}' % error.encode())
    assert_named_everywhere(proxy, before, cause, upstream, request_id)
    warning = next(
        e["message"] for e in process_lines(proxy, "warning") if request_id in e["message"]
    )
    assert detail.lower() in warning.lower()
    assert f"answered {status} {error}" in warning


def test_a_reset_mid_body_is_named_reset_and_cuts_the_client_off(
    proxy: RunningProxy, cookie: str
) -> None:
    before = value(scrape(proxy), ERRORS, upstream="reset-up", kind="reset")
    with RawConnection(proxy.port, timeout=10) as connection:
        connection.send(
            f"GET /reset/midreset HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n"
            "X-Request-Id: cause-midreset\r\n\r\n"
        )
        reply = connection.read_response()
    assert reply.status == 200
    assert not reply.complete
    assert access_line(proxy, "cause-midreset")["status"] == 200
    assert_named_everywhere(proxy, before, "reset", "reset-up", "cause-midreset")
