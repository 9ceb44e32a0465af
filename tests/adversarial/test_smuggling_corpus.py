"""Every case of the smuggling corpus, sent raw to the proxy in front of a recording upstream.

For each case: the client gets only well-formed responses (strict parser) or a close; the
upstream's strict parser never refused what the proxy sent and no forged owned header or chunk
cookie reached it (:func:`assert_clean`); every request the upstream parsed is one whose answer
the proxy relayed (nothing hidden in a body became a request of its own); and a second client
on a fresh connection right after gets its own answer. Issue 7, the smuggling corpus.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from typing import Any, Final

import pytest

from tests.adversarial.real_backends import REAL_KINDS, RealBackend, RealKind, start_real_backend
from tests.adversarial.recording_upstream import RecordingUpstream, assert_clean
from tests.adversarial.smuggling_corpus import CLASS_COUNTS, CORPUS, Case, case_ids
from tests.adversarial.strict_http import Ambiguous, Message, parse_responses
from tests.integration.log_watch import WATCH
from tests.integration.proxy_client import RawConnection
from tests.integration.sidecar import RunningProxy, base_config

pytestmark = [pytest.mark.integration, pytest.mark.system]

MARKER: Final = "smuggle-9c1e-marker"
#: How long a connection may stay silent before the proxy is taken to be waiting for more.
IDLE: Final = 2.0


def send_and_read(port: int, data: bytes, idle: float = IDLE) -> tuple[bytes, bool]:
    """Write ``data`` in one go; return every byte read and whether the proxy closed."""
    received = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        with contextlib.suppress(OSError):  # the proxy may refuse and close before reading all
            sock.sendall(data)
        deadline = time.monotonic() + 10
        sock.settimeout(idle)
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return bytes(received), False
            except ConnectionResetError:
                return bytes(received), True
            if not chunk:
                return bytes(received), True
            received += chunk
    return bytes(received), False


def upstream_answers(responses: list[Message]) -> list[str]:
    """Targets named by the upstream's own JSON answers among ``responses``."""
    targets = []
    for response in responses:
        try:
            payload = json.loads(response.body)
        except ValueError:
            continue
        if isinstance(payload, dict) and "conn" in payload and "target" in payload:
            targets.append(str(payload["target"]))
    return targets


def check_case(proxy: RunningProxy, upstream: RecordingUpstream, case: Case, tag: str) -> None:
    upstream.reset()
    data = case.render(f"{tag}-a", f"{tag}-b", f"{tag}-s", MARKER)
    raw, closed = send_and_read(proxy.port, data)
    try:
        responses = parse_responses(raw, eof=closed)
    except Ambiguous as error:
        pytest.fail(f"malformed response from the proxy ({error}): {raw[:400]!r}")
    statuses = [r.status for r in responses]
    assert 500 not in statuses, raw[:400]
    assert 101 not in statuses, f"the proxy opened a tunnel: {raw[:400]!r}"
    upstream.wait_idle(2)
    answered = upstream_answers(responses)
    parsed = upstream.targets()
    unanswered = [t for t in parsed if t not in answered and "respond=" not in t]
    assert not unanswered, f"the upstream parsed requests the client never got: {unanswered}"
    for target in answered:
        assert tag in target or target == "*", f"an answer to someone else's request: {target}"
    assert_clean(upstream, MARKER)
    with RawConnection(proxy.port, timeout=5) as fresh:
        fresh.send(f"GET /fresh?id={tag}-c HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
        assert fresh.read_response().json()["id"] == f"{tag}-c"


def test_the_corpus_holds_at_least_150_cases_in_every_class() -> None:
    assert len(CORPUS) >= 150
    assert all(count > 0 for count in CLASS_COUNTS.values())


@pytest.mark.parametrize(
    ("case", "tag"), list(zip(CORPUS, case_ids(), strict=True)), ids=case_ids()
)
def test_a_corpus_case_smuggles_nothing_past_the_proxy(
    proxy: RunningProxy, upstream: RecordingUpstream, case: Case, tag: str
) -> None:
    check_case(proxy, upstream, case, tag)


def test_request_trailers_never_reach_the_next_request(
    proxy: RunningProxy, upstream: RecordingUpstream
) -> None:
    upstream.reset()
    send_and_read(
        proxy.port,
        b"POST /c?id=t1 HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\nX-Trailer-Leak: 1\r\n\r\n"
        b"GET /next?id=t2 HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
    )
    upstream.wait_idle(2)
    # aiohttp's C parser carries trailer fields into the next request's headers; the proxy
    # ends the connection after a chunked request, so the next one is never forwarded at all.
    nexts = [r for r in upstream.requests() if r.target == "/next?id=t2"]
    assert all(r.header(b"X-Trailer-Leak") is None for r in nexts)


# --- the same cases in front of real servers ----------------------------------------------------

#: The classes where a front end and a back end most often disagree; every case of each.
DANGEROUS: Final = {
    "CL.TE",
    "TE.CL",
    "Content-Length",
    "chunk-size",
    "bare-LF",
    "bare-CR",
    "obs-fold",
    "owned-head",
    "trailers",
    "pipelining",
}
REAL_CASES: Final = [
    pytest.param(c, t, id=t) for c, t in zip(CORPUS, case_ids(), strict=True) if c.cls in DANGEROUS
]


OWN_PAIR: Final = ["x-session", "x-session-status"]


def _json_or_none(response: Message) -> dict[str, Any] | None:
    try:
        payload = json.loads(response.body)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


@pytest.fixture(scope="module", params=REAL_KINDS)
def real(request: pytest.FixtureRequest) -> Iterator[tuple[RealBackend, RunningProxy]]:
    kind: RealKind = request.param
    with (
        start_real_backend(kind) as backend,
        WATCH.start_proxy(base_config(backend.url)) as running,
    ):
        yield backend, running


def test_the_real_pass_covers_the_most_dangerous_classes() -> None:
    assert len(REAL_CASES) >= 40


@pytest.mark.parametrize(("case", "tag"), REAL_CASES)
def test_no_real_backend_parses_a_request_the_proxy_did_not_send(
    real: tuple[RealBackend, RunningProxy], case: Case, tag: str
) -> None:
    backend, proxy = real
    before = len(backend.seen())
    rejected_before = len(backend.rejected())
    raw, closed = send_and_read(proxy.port, case.render(f"{tag}-a", f"{tag}-b", f"{tag}-s", MARKER))
    try:
        responses = parse_responses(raw, eof=closed)
    except Ambiguous as error:
        pytest.fail(f"malformed response from the proxy ({error}): {raw[:400]!r}")
    assert all(r.status not in (101, 500) for r in responses), raw[:400]
    echoes = [e for e in map(_json_or_none, responses) if e is not None and "owned" in e]
    time.sleep(0.05)
    seen = backend.seen()[before:]
    answered = [str(e["target"]) for e in echoes]
    assert [t for t in seen if t not in answered] == [], (
        f"{backend.kind} parsed unanswered requests"
    )
    assert backend.rejected()[rejected_before:] == [], f"{backend.kind} refused what the proxy sent"
    for echo in echoes:
        assert tag in echo["target"]
        assert echo["status"] == ["absent"], echo
        assert echo["session"] == ["{}"], echo
        assert sorted(str(n).lower() for n in echo["owned"]) == OWN_PAIR, echo
        assert MARKER not in json.dumps(echo), echo
    with RawConnection(proxy.port, timeout=5) as fresh:
        fresh.send(f"GET /fresh?id={tag}-c HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
        assert fresh.read_response().json()["id"] == f"{tag}-c"
