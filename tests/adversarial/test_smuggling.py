"""The smuggling and desync corpus (tests/adversarial/smuggling_cases.py), on the real wire.

Each case's bytes go to the proxy on one connection, followed by a benign request; then a second
client asks on a fresh connection. In front of the raw recording upstream (every byte of every
connection, a strict parser) and in front of real Node.js, gunicorn, uvicorn and Go servers:

- whatever the proxy answers parses strictly as HTTP/1.1 responses (or it closes);
- no backend ever parses a request the proxy did not send: every request the recording
  upstream parsed was answered to the client that sent it, and the strict parser refused
  nothing; Node, gunicorn and uvicorn report no parse error;
- no owned header written by the client, and no ``session.N`` cookie, reaches any backend;
- the second client's response is its own.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.adversarial.recording_upstream import OWNED_FOLDED, RecordingUpstream, assert_clean, fold
from tests.adversarial.smuggling_cases import CASES, CLASS_COUNTS, MARKER, Case
from tests.adversarial.strict_http import Ambiguous, Message, parse_responses
from tests.integration.backends import BackendKind, start_backend
from tests.integration.log_watch import WATCH
from tests.integration.sidecar import RunningProxy, base_config

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FOLLOW = b"GET /c?id=follow HTTP/1.1\r\nHost: app\r\n\r\n"
#: Quiet time after the last byte before a connection counts as done, and a hard bound.
IDLE_SECONDS = 0.3
MAX_SECONDS = 6.0


@dataclass
class Exchange:
    raw: bytes
    reset: bool
    responses: list[Message]


def exchange(port: int, data: bytes) -> Exchange:
    """Send ``data`` and the follow-up; read until the proxy closes or stays quiet."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=2)
    received = bytearray()
    reset = False
    try:
        try:
            sock.sendall(data + FOLLOW)
        except OSError:
            reset = True
        deadline = time.monotonic() + MAX_SECONDS
        sock.settimeout(IDLE_SECONDS * 3)
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                reset = True
                break
            if not chunk:
                break
            received += chunk
            sock.settimeout(IDLE_SECONDS)
    finally:
        sock.close()
    method = b"HEAD" if data.startswith(b"HEAD") else b"GET"
    try:
        responses = _responses(bytes(received), method)
    except Ambiguous as exc:
        pytest.fail(
            f"the proxy's answer is not well-formed HTTP/1.1: {exc}\n{bytes(received)[:400]!r}"
        )
    return Exchange(bytes(received), reset, responses)


def _responses(data: bytes, first_method: bytes) -> list[Message]:
    if first_method != b"HEAD" or not data:
        return parse_responses(data)
    # The answer to HEAD has no body whatever its Content-Length says (RFC 9110 section 9.3.2).
    head_end = data.index(b"\r\n\r\n") + 4
    first = parse_responses(data[:head_end], method=b"HEAD")
    return first + parse_responses(data[head_end:])


def echoed(responses: list[Message]) -> list[dict[str, Any]]:
    out = []
    for response in responses:
        if response.status == 200 and response.body.startswith(b"{"):
            out.append(json.loads(response.body))
    return out


def fresh_client_gets_its_own(port: int, tag: str, path: str = "/c") -> None:
    """A second client's answer is its own: its id (in the query and in X-Request-Id, which
    every backend here echoes one way or the other) is in the body it gets back."""
    request = (
        f"GET {path}?id=fresh-{tag} HTTP/1.1\r\nHost: app\r\nX-Request-Id: fresh-{tag}\r\n"
        "Connection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request.encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    (response,) = parse_responses(data)
    assert response.status == 200, data[:300]
    assert f"fresh-{tag}".encode() in response.body
    assert response.header(b"X-Request-Id") == f"fresh-{tag}".encode()


# --- in front of the raw recording upstream -----------------------------------------------------


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    with RecordingUpstream(read_timeout=5) as running:
        yield running


@pytest.fixture(scope="module")
def proxy(upstream: RecordingUpstream) -> Iterator[RunningProxy]:
    with WATCH.start_proxy(base_config(upstream.url)) as running:
        yield running


def test_the_corpus_is_large_and_covers_every_class() -> None:
    assert len(CASES) >= 150
    print("\nsmuggling corpus:", len(CASES), "cases:", dict(CLASS_COUNTS))
    assert min(CLASS_COUNTS.values()) >= 5


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_no_request_is_smuggled_past_the_proxy(
    proxy: RunningProxy, upstream: RecordingUpstream, case: Case
) -> None:
    upstream.reset()
    result = exchange(proxy.port, case.data)
    fresh_client_gets_its_own(proxy.port, case.id)
    upstream.wait_idle(2)
    assert_clean(upstream, MARKER)
    parsed = [t for t in upstream.targets() if not t.startswith("/c?id=fresh-")]
    answered = [e["target"] for e in echoed(result.responses)]
    if case.data.startswith(b"HEAD") and result.responses and result.responses[0].status == 200:
        answered.append("/c?id=first")  # a HEAD answer has no body to echo in
    if result.reset:
        # A reset may discard answers in flight; every request still had to be the client's own.
        assert set(parsed) <= set(answered) | {
            "/c?id=first",
            "/c?id=second",
            "/c?id=follow",
            "/smuggled?id=smuggled",
        } | {f"/c?id=p{i}" for i in range(3)} | {f"/c?id=m{i}" for i in range(20)}
    else:
        assert Counter(parsed) == Counter(answered), (parsed, answered)


# --- in front of real servers ------------------------------------------------------------------

#: The most dangerous classes, in full, in front of every real server.
REAL_CLASSES = (
    "CL.TE",
    "TE.CL",
    "TE.TE",
    "CL",
    "chunk",
    "line-end",
    "pipeline",
    "upgrade",
    "trailer",
    "cookie",
)
REAL_CASES = [c for c in CASES if c.cls in REAL_CLASSES]


@dataclass
class RealServer:
    name: str
    url: str
    port: int
    records: bool


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def _python_server(kind: str) -> Generator[RealServer, None, None]:
    port = _free_port()
    bin_dir = Path(sys.executable).parent
    if kind == "gunicorn":
        command = [
            str(bin_dir / "gunicorn"),
            "-w",
            "1",
            "-b",
            f"127.0.0.1:{port}",
            "tests.adversarial.echo_app:wsgi_app",
        ]
    else:
        command = [
            str(bin_dir / "uvicorn"),
            "--http",
            "h11",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "tests.adversarial.echo_app:asgi_app",
        ]
    if not Path(command[0]).exists():
        pytest.fail(f"{command[0]} is missing: install the test extras (pip install -e '.[test]')")
    process = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        _wait_port(port, process)
        yield RealServer(kind, f"http://127.0.0.1:{port}", port, True)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module", params=["node", "gunicorn", "uvicorn", "go"])
def real(request: pytest.FixtureRequest) -> Iterator[tuple[RealServer, RunningProxy]]:
    kind = request.param
    if kind in ("gunicorn", "uvicorn"):
        servers = _python_server(kind)
        server = next(servers)
        try:
            with WATCH.start_proxy(base_config(server.url)) as running:
                yield server, running
        finally:
            servers.close()
        return
    backend_kind: BackendKind = "hostile-node" if kind == "node" else "go"
    with (
        start_backend(backend_kind) as backend,
        WATCH.start_proxy(base_config(backend.url)) as running,
    ):
        port = int(backend.url.rsplit(":", 1)[1])
        yield RealServer(kind, backend.url, port, kind == "node"), running


def parsed_by(server: RealServer) -> list[dict[str, Any]]:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /__requests HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    (response,) = parse_responses(data)
    seen: list[dict[str, Any]] = json.loads(response.body)
    return seen


def _header_pairs(record: dict[str, Any]) -> list[tuple[str, str]]:
    headers = record["headers"]
    if headers and isinstance(headers[0], str):  # Node's rawHeaders: [name, value, name, ...]
        return list(zip(headers[::2], headers[1::2], strict=True))
    return [(str(n), str(v)) for n, v in headers]


@pytest.mark.parametrize("case", REAL_CASES, ids=[c.id for c in REAL_CASES])
def test_no_real_server_parses_a_request_the_proxy_did_not_send(
    real: tuple[RealServer, RunningProxy], case: Case
) -> None:
    server, proxy = real
    if server.records:
        parsed_by(server)  # forget what came before
    result = exchange(proxy.port, case.data)
    fresh_client_gets_its_own(proxy.port, case.id, "/whoami")
    for response in echoed(result.responses):
        assert MARKER not in json.dumps(response)
    if not server.records:
        return
    time.sleep(0.05)
    for record in parsed_by(server):
        assert record["method"] != "PARSE_ERROR", (
            f"{server.name} could not parse what the proxy sent: {record}"
        )
        for name, value in _header_pairs(record):
            assert MARKER not in value, f"{server.name} got the client's forged {name}"
            if fold(name.replace("HTTP_", "", 1)) in OWNED_FOLDED:
                assert fold(name) in ("xsession", "xsessionstatus"), name
            if name.lower() == "cookie" or name == "COOKIE":
                assert "session." not in value.lower()


def test_tools_for_the_real_servers_are_installed() -> None:
    missing = [tool for tool in ("node", "go") if shutil.which(tool) is None]
    assert not missing, f"!!! missing {missing}: run `make deps` as root"
