"""Nothing secret reaches the proxy's output, even at DEBUG level and on every error path.

The module-wide check in conftest.py then reads the whole output of this proxy for the
secrets, every cookie value and every session marker registered below.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import pytest
import yaml

from tests.integration.admin_scrape import access_line
from tests.integration.backends import REPO_ROOT, RunningBackend, free_port, start_backend
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


@pytest.mark.parametrize(
    "head",
    [
        "CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n",  # 405, from reply()
        "GET /dead/x HTTP/1.1\r\nHost: 127.0.0.1\r\n",  # 502, the upstream refused
        "GET /raw-set-session?value=%7B HTTP/1.1\r\nHost: 127.0.0.1\r\n",  # 502, bad header
    ],
    ids=["405-connect", "502-dead-upstream", "502-bad-session-header"],
)
def test_the_access_log_counts_the_body_of_the_proxys_own_answer(
    proxy: RunningProxy, head: str
) -> None:
    request_id = f"own-answer-{head.split()[0]}-{len(head)}"
    with RawConnection(proxy.port) as connection:
        connection.send(f"{head}X-Request-Id: {request_id}\r\nConnection: close\r\n\r\n")
        reply = connection.read_response()
    assert reply.status in (405, 502)
    assert reply.body
    line = access_line(proxy, request_id)
    assert (line["status"], line["bytes_out"]) == (reply.status, len(reply.body))


def test_the_access_log_counts_the_body_of_an_answer_to_an_unparsable_request(
    proxy: RunningProxy,
) -> None:
    with RawConnection(proxy.port) as connection:
        connection.send(f"GET /{'x' * 20_000} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        reply = connection.read_response()
    assert reply.status == 431
    request_id = reply.header("X-Request-Id")
    assert request_id is not None
    line = access_line(proxy, request_id)
    assert (line["status"], line["bytes_out"]) == (431, len(reply.body))


# --- a stalled reader never stalls a request -----------------------------------------------


class UnreadPipeProxy:
    """The proxy with one of its output streams on a small pipe that nobody reads (yet)."""

    def __init__(
        self,
        backend: RunningBackend,
        stream: Literal["stdout", "stderr"],
        tmp: Path,
        workers: int = 1,
    ) -> None:
        self.stream = stream
        self.port, admin_port = free_port(), free_port()
        self.metrics_url = f"http://127.0.0.1:{admin_port}/metrics"
        config = base_config(backend.url, log_format="json", workers=workers)
        config["listen"] = f"127.0.0.1:{self.port}"
        config["admin_listen"] = f"127.0.0.1:{admin_port}"
        (tmp / "proxy.yaml").write_text(yaml.safe_dump(config))
        self.read_fd, write_fd = os.pipe()
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, 4096)  # full after a dozen lines
        self.other_log = tmp / "other.log"
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "SESSION_SIDECAR_LOG_LEVEL": "DEBUG"}
        with self.other_log.open("wb") as other:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "proxy", "serve", "-c", str(tmp / "proxy.yaml")],
                cwd=REPO_ROOT,
                env=env,
                stdout=write_fd if stream == "stdout" else other,
                stderr=write_fd if stream == "stderr" else other,
            )
        os.close(write_fd)
        self.received = bytearray()
        self._reader: threading.Thread | None = None
        deadline = time.monotonic() + 20
        while True:
            assert self.process.poll() is None, self.other_log.read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the proxy never listened"
                time.sleep(0.05)
        # The supervisor listens before its workers have booted: a request timed now would
        # time a worker's start-up. Its "listening" lines go to stderr, read here for stdout.
        if workers > 1 and stream == "stdout":
            while self.other_log.read_text().count('"listening on ') < workers:
                assert self.process.poll() is None, self.other_log.read_text()
                assert time.monotonic() < deadline, "the workers never listened"
                time.sleep(0.05)

    def resume_reading(self) -> None:
        def read() -> None:
            while piece := os.read(self.read_fd, 65536):
                self.received += piece

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()

    def dropped(self, settle: float = 1.5) -> float:
        """The drop count on /metrics once it stops changing (workers add theirs within 1 s)."""
        pattern = rf'session_sidecar_log_lines_dropped_total{{stream="{self.stream}"}} (\S+)'
        last = -1.0
        while True:
            with urllib.request.urlopen(self.metrics_url, timeout=5) as reply:
                page = reply.read().decode()
            match = re.search(pattern, page)
            assert match, page
            if float(match.group(1)) == last:
                return last
            last = float(match.group(1))
            time.sleep(settle)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            if self._reader is None:
                self.resume_reading()  # let the process's last writes go somewhere
            self._reader.join(5)  # type: ignore[union-attr]
            os.close(self.read_fd)


def timed_requests(port: int, count: int, path: str = "/whoami") -> list[float]:
    """``count`` requests on one keep-alive connection, each with an invalid session (one
    DEBUG line each); every one must succeed. Their durations in seconds."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: session.0=S1.not-a-session\r\n\r\n"
    )
    durations = []
    with RawConnection(port, timeout=10) as connection:
        for _ in range(count):
            started = time.monotonic()
            connection.send(request)
            assert connection.read_response().status == 200
            durations.append(time.monotonic() - started)
    return durations


@pytest.mark.parametrize(("stream", "workers"), [("stdout", 1), ("stderr", 1), ("stdout", 2)])
def test_an_unread_output_pipe_never_slows_a_request(
    backend: RunningBackend, stream: Literal["stdout", "stderr"], workers: int, tmp_path: Path
) -> None:
    proxy = UnreadPipeProxy(backend, stream, tmp_path, workers)
    try:
        started = time.monotonic()
        durations = timed_requests(proxy.port, 2000)
        assert time.monotonic() - started < 120
        assert max(durations) < 1.0, f"slowest request took {max(durations):.3f}s"
        dropped = proxy.dropped()
        assert dropped > 0
        # The reader comes back: lines flow again, and the recovery is reported.
        proxy.resume_reading()
        deadline = time.monotonic() + 15
        while b"drains again" not in bytes(proxy.received) + proxy.other_log.read_bytes():
            assert time.monotonic() < deadline, "the recovery was never reported"
            timed_requests(proxy.port, 5, "/whoami?after")
            time.sleep(0.1)
        # Lines that came while the backlog drained may have been dropped too; from now on none.
        dropped = proxy.dropped()
        before = len(proxy.received)
        timed_requests(proxy.port, 20)
        deadline = time.monotonic() + 10
        while len(proxy.received) - before < 20 * 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(proxy.received) - before >= 20 * 100, "lines did not flow again"
        assert proxy.dropped() == dropped  # nothing more lost once it drains
    finally:
        code = proxy.stop()
    assert code == 0, proxy.other_log.read_text()
    notices = (bytes(proxy.received) + proxy.other_log.read_bytes()).decode(errors="replace")
    if stream == "stdout":  # the first notice goes to stderr, which is read
        assert 1 <= notices.count(f"{stream} is not being read") <= workers  # once a process
    assert f"{stream} drains again; " in notices
