"""The smuggling and desync corpus (tests/adversarial/smuggling_cases.py), on the real wire.

Each case's bytes go to the proxy on one connection, followed by a benign request; then a second
client asks on a fresh connection. In front of the raw recording upstream (every byte of every
connection, a strict parser) and in front of real Node.js, gunicorn, uvicorn and Go servers:

- whatever the proxy answers parses strictly as HTTP/1.1 responses (or it closes);
- no backend ever parses a request the proxy did not send: every request the recording
  upstream or a real server (tests/adversarial/real_backends.py) parsed was answered to the
  client that sent it, and neither the strict parser nor a real server's refused anything;
- no owned header written by the client, and no ``session.N`` cookie, reaches any backend;
- the second client's response is its own.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.adversarial.real_backends import REAL_KINDS, RealBackend, RealKind, start_real_backend
from tests.adversarial.recording_upstream import RecordingUpstream, assert_clean, fold
from tests.adversarial.smuggling_cases import CASES, CLASS_COUNTS, MARKER, Case
from tests.adversarial.strict_http import Ambiguous, Message, parse_responses
from tests.integration.log_watch import WATCH
from tests.integration.sidecar import RunningProxy, base_config

pytestmark = [pytest.mark.integration, pytest.mark.system]

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


def answered_targets(case: Case, result: Exchange) -> list[str]:
    """The targets the backend echoed back to this client, in order."""
    answered = [e["target"] for e in echoed(result.responses)]
    if case.data.startswith(b"HEAD") and result.responses and result.responses[0].status == 200:
        answered.append("/c?id=first")  # a HEAD answer has no body to echo in
    return answered


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
    answered = answered_targets(case, result)
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


@pytest.fixture(scope="module", params=REAL_KINDS)
def real(request: pytest.FixtureRequest) -> Iterator[tuple[RealBackend, RunningProxy]]:
    kind: RealKind = request.param
    with (
        start_real_backend(kind) as backend,
        WATCH.start_proxy(base_config(backend.url)) as running,
    ):
        yield backend, running


@pytest.mark.parametrize("case", REAL_CASES, ids=[c.id for c in REAL_CASES])
def test_no_real_server_parses_a_request_the_proxy_did_not_send(
    real: tuple[RealBackend, RunningProxy], case: Case
) -> None:
    backend, proxy = real
    seen_before, rejected_before = len(backend.seen()), len(backend.rejected())
    result = exchange(proxy.port, case.data)
    echoes = echoed(result.responses)
    for echo in echoes:
        assert MARKER not in json.dumps(echo), f"{backend.kind} got the client's forged value"
        assert sorted(map(fold, echo["owned"])) == ["xsession", "xsessionstatus"], echo
    fresh_client_gets_its_own(proxy.port, case.id)
    time.sleep(0.05)  # the backends print what they parsed as they parse it
    assert backend.rejected()[rejected_before:] == [], f"{backend.kind} refused what the proxy sent"
    parsed = [t for t in backend.seen()[seen_before:] if "fresh-" not in t]
    if not result.reset:
        assert Counter(parsed) == Counter(answered_targets(case, result)), (parsed, echoes)


def test_tools_for_the_real_servers_are_installed() -> None:
    missing = [tool for tool in ("node", "go") if shutil.which(tool) is None]
    assert not missing, f"!!! missing {missing}: run `make deps` as root"
